//! The durable job queue between the webhook receiver and the workers.
//!
//! This crate owns a job's life after the webhook was accepted: it commits
//! [`JobSpec`]s durably (the receiver answers 200 only after [`JobQueue::enqueue`]
//! returns), hands ready jobs out earliest-deadline-first under a time-limited
//! [`Lease`], and decides on every failure, from the [`ErrorClass`] alone,
//! whether the job runs again later (exponential backoff with jitter, at
//! least `Retry-After`, never past the job's deadline) or is dead-lettered
//! with a reason. It knows nothing about providers, HTTP or storage: a job's
//! `payload` is opaque JSON that only the provider adapter reads, and the
//! worker loop, not this crate, decides what an attempt does.
//!
//! Main types:
//! - [`JobQueue`]: the backend trait (SQLite, fjall and PostgreSQL, same
//!   semantics, one conformance suite behind the `conformance` feature).
//!   Each backend is a cargo feature (`sqlite`, `fjall`, `postgres`, all
//!   default):
//!   a crate that only takes or hands out jobs (the webhook receiver)
//!   depends on this crate without them and compiles no database driver.
//! - [`SqliteQueue`]: the embedded backend, one file, one process.
//! - [`PgQueue`] (with [`PgOptions`]): the shared backend, one PostgreSQL
//!   database that several daemon replicas lease from at once.
//! - [`JobRecord`], [`Lease`], [`Leased`], [`Enqueued`], [`Disposition`],
//!   [`JobFilter`], [`QueueStats`]: what the trait takes and returns.
//! - [`RetryPolicy`]: backoff bounds (`[retry]`); [`QueueError`]: the one
//!   error enum.
//! - [`Outbox`] (from [`JobQueue::outbox`]), [`Delivery`], [`Route`]: the
//!   events to the user's app that a job's `done`/`dead` transition
//!   commits with it (its tables and trigger: `src/outbox.rs`).
//! - [`Erasures`] (from [`JobQueue::erasures`]), [`BlobRef`],
//!   [`ErasureFilter`], [`ErasurePlan`]: the blob reference index an
//!   erasure reads, and the jobs it ends (`src/erasure.rs`).
//! - [`FjallQueue`] (with [`FjallOptions`]): the embedded LSM backend, one
//!   directory, one process (its keyspaces are documented in `src/fjall`).
//! - [`migrate`]: `queue migrate`, every job and the blob index copied
//!   between any two backends, idempotent and resumable.
//! - [`QueueConfig`]: the `[queue]` section (which backend, its settings),
//!   checked by [`QueueConfig::validate`] into [`QueueSettings`].
//!
//! # Life cycle (PRODUCT.md section 6)
//!
//! `pending` -> `leased` -> `done`; a failed attempt goes back to `pending`
//! with a later `next_attempt_at`, or to `dead` with a reason; `waiting` is a
//! parked job (On-Prem store requested) that [`JobQueue::wake`] or its timeout
//! returns to the ready set. A job is *ready* when it is pending and due, leased
//! with an expired lease (its worker crashed), or waiting past its timeout. A
//! ready job whose deadline has passed is dead-lettered by the next
//! [`JobQueue::lease`] instead of being handed out, and that call reports it
//! ([`Leased::expired`]) so the worker counts it as it counts every other
//! dead job. A lease carries a fencing `token`: every call made with a lease
//! fails with [`QueueError::LeaseLost`] once the job was leased again or
//! finished, so a slow worker can never overwrite the outcome of the worker
//! that replaced it.
//!
//! For a dead job, `last_error` holds the dead-letter reason (the permanent
//! error itself, or `expired: ...` naming the last error).
//!
//! # SQLite schema (version 5, kept in `PRAGMA user_version`)
//!
//! Every time is Unix milliseconds (INTEGER); the payload is JSON text. The
//! database runs with `journal_mode=WAL` and `synchronous=NORMAL`, and no
//! call returns before a separate thread has fsynced the WAL past its commit
//! (see "Runtime shape" below), so a returned enqueue has been fsynced.
//!
//! ```sql
//! CREATE TABLE jobs (
//!     id                  TEXT PRIMARY KEY NOT NULL, -- "{account}:{media or message id}"
//!     account             TEXT NOT NULL,
//!     provider            TEXT NOT NULL,              -- ProviderKind, lowercase
//!     state               TEXT NOT NULL,              -- pending|leased|waiting|done|dead|erased (v6)
//!     attempts            INTEGER NOT NULL DEFAULT 0, -- leases taken, minus releases
//!     deadline            INTEGER NOT NULL,           -- the provider forgets the file then
//!     next_attempt_at     INTEGER NOT NULL,           -- due time (pending) or park timeout (waiting)
//!     backoff_interval_ms INTEGER,                    -- interval for the next failure; NULL = policy.initial
//!     lease_token         INTEGER NOT NULL DEFAULT 0, -- fencing token of the latest lease; only grows
//!     lease_expires_at    INTEGER,                    -- set while leased
//!     last_error          TEXT,                       -- latest error, or the dead-letter reason
//!     created_at          INTEGER NOT NULL,
//!     updated_at          INTEGER NOT NULL,
//!     message_id          TEXT NOT NULL,
//!     media_id            TEXT,
//!     message_at          INTEGER NOT NULL,
//!     payload             TEXT NOT NULL,              -- the adapter's reference, verbatim JSON
//!     woken               INTEGER NOT NULL DEFAULT 0, -- a wake came while leased
//!     chat_id             TEXT,                       -- the message's chat (v6)
//!     due_at              INTEGER GENERATED ALWAYS AS (CASE state
//!                             WHEN 'pending' THEN next_attempt_at
//!                             WHEN 'waiting' THEN next_attempt_at
//!                             WHEN 'leased'  THEN lease_expires_at END) VIRTUAL
//! ) STRICT;
//! -- Only live jobs (pending, leased, waiting) are in this index, in the
//! -- order lease() hands them out, so leasing never reads done/dead history.
//! -- (A lease call skips, inside the index, live jobs that are not due yet
//! -- and have earlier deadlines; that cost follows the live set only.)
//! CREATE INDEX jobs_ready       ON jobs (deadline, next_attempt_at, due_at) WHERE due_at IS NOT NULL;
//! CREATE INDEX jobs_pending_age ON jobs (created_at) WHERE state = 'pending'; -- oldest pending
//! CREATE INDEX jobs_state       ON jobs (state, updated_at);   -- list by state, retry_all
//! CREATE INDEX jobs_account     ON jobs (account, updated_at); -- list by account
//! CREATE INDEX jobs_updated     ON jobs (updated_at);          -- unfiltered list
//! -- Media lookup by message id (v2), holding only the jobs not keyed by
//! -- their message id (v4); list() finds the others by primary key as
//! -- "{account}:{message_id}", since message ids are random and every
//! -- entry here cost each enqueue a WAL page.
//! CREATE INDEX jobs_message     ON jobs (message_id, account, updated_at)
//!     WHERE id <> account || ':' || message_id;
//!
//! -- Jobs per (account, state), kept by triggers on jobs (state change,
//! -- delete) and, for inserts, by the enqueue transaction (one upsert per
//! -- account and group, schema v3), so stats() costs the number of
//! -- accounts, not rows.
//! CREATE TABLE job_counts (
//!     account TEXT NOT NULL,
//!     state   TEXT NOT NULL,
//!     n       INTEGER NOT NULL,
//!     PRIMARY KEY (account, state)
//! ) STRICT, WITHOUT ROWID;
//! ```
//!
//! Version 6 adds erasure (`erased` jobs, `chat_id`, `blob_refs`,
//! `blob_erasures`, `blob_index_complete`; `src/erasure.rs`). Version 5
//! adds the outbox (`notify_routes`, `deliveries`, and the
//! trigger that fills `deliveries` when a job becomes done or dead); its
//! tables are documented with it, in `src/outbox.rs`.
//!
//! # PostgreSQL schema (migrations in `migrations/`, applied at connect)
//!
//! The same `jobs` table in PostgreSQL types (`BIGINT` milliseconds,
//! `BOOLEAN woken`, `due_at` a `STORED` generated column) with the same
//! indexes; applied migrations are recorded in `_sqlx_migrations` of the
//! queue's schema (sqlx's migrator, under an advisory lock so that replicas starting
//! together migrate once). No counter table: `stats()` counts with
//! `GROUP BY` (a per-state counter row would serialise every replica's
//! transitions on its lock), so it costs a scan of the table; it serves the
//! admin API, not a hot path. The tables live in `PgOptions::schema` when
//! set (created if missing), else in the server's `search_path`. See
//! [`PgQueue`] for leasing (`FOR UPDATE SKIP LOCKED`) and group commit.
//!
//! # Runtime shape of the SQLite backend
//!
//! One dedicated OS thread owns the connection; async callers send it commands
//! over a bounded channel and await a oneshot reply. Enqueues waiting in the
//! channel are committed together in one transaction (group commit). The
//! replies go out through a second thread that fsyncs the WAL once for all
//! commits made since its previous fsync, so the next group is inserted
//! while the previous one is synced, and concurrent webhooks, leases and
//! acks share fsyncs. A third thread checkpoints the WAL back into the
//! database file on a connection of its own, so that copying does not
//! stall the writer either.

// What only the backends need is compiled with one of them: a crate that
// depends on the trait alone (`default-features = false`) builds no driver.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "fjall"))]
mod backend;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "fjall"))]
mod backoff;
// `[queue]` names every backend, so reading it needs all compiled in.
#[cfg(all(feature = "sqlite", feature = "postgres", feature = "fjall"))]
mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
mod erasure;
mod error;
#[cfg(feature = "fjall")]
mod fjall;
mod migrate;
mod outbox;
mod policy;
#[cfg(feature = "postgres")]
mod postgres;
mod queue;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "fjall"))]
mod retry;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "fjall")]
pub use self::fjall::{FjallOptions, FjallQueue};
pub use archiver_core::{ErrorClass, JobSpec, JobState, ProviderKind, UnixMillis};
#[cfg(all(feature = "sqlite", feature = "postgres", feature = "fjall"))]
pub use config::{QueueConfig, QueueSettings};
pub use erasure::{
    BlobRef, CommittedErasure, ErasedMessage, ErasureFilter, ErasurePlan, ErasureRefused, Erasures,
    STALE_ERASURE,
};
pub use error::QueueError;
pub use migrate::{Migrated, migrate};
pub use outbox::{
    Claimed, DELIVERY_EXPIRED, Delivery, DeliveryFilter, DeliveryState, MAX_CLAIM_BATCH,
    NotifyEvent, Outbox, Retried, Route,
};
pub use policy::RetryPolicy;
#[cfg(feature = "postgres")]
pub use postgres::{PgConfig, PgOptions, PgQueue};
pub use queue::{
    Disposition, Enqueued, JobFilter, JobQueue, JobRecord, Lease, Leased, MigratedJob, QueueStats,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteQueue;
