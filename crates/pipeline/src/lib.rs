//! The worker: the only place that knows the order of the stages.
//!
//! ```text
//! queue.lease -> provider.resolve -> fetch.download (stream, sha256, spool)
//!   -> verify against the provider's hash -> store.put_blob -> store.put_manifest
//!   -> queue.complete        (any failure: classify -> queue.fail)
//! ```
//!
//! [`Worker::run`] leases up to `concurrency` jobs at a time, runs each in its
//! own task under a semaphore permit, renews each lease while its job is
//! alive, and on shutdown stops leasing, lets in-flight jobs finish within
//! `shutdown_grace`, then cancels the rest and gives their leases back. A job
//! is never cancelled between writing its blob and writing its manifest
//! except by that grace deadline, and even then the next attempt rewrites
//! both idempotently (the blob key is its hash).
//!
//! Every job transition is reported in one place (the `telemetry` module),
//! which logs it with the job id, account, provider, attempt, outcome, bytes
//! and elapsed time.
//!
//! # Time
//!
//! Every wall-clock time the worker writes or compares with a stored time (a
//! parked job's timeout, a manifest's `archived_at`, the webhook-to-archive
//! latency) is read from the injected [`Clock`](archiver_core::Clock) in
//! [`Stages`], the same one the queue and the adapters read, so a process
//! has one "now" and tests set it by hand. Waiting and measuring (idle
//! polls, lease renewals, the shutdown grace, stage durations) use Tokio's
//! monotonic clock instead: a duration needs no calendar, must not jump when
//! the wall clock is stepped, and Tokio's clock is the one tests pause and
//! advance (`tokio::time::pause`).

mod config;
mod job;
mod telemetry;
mod worker;

pub use config::WorkerConfig;
pub use job::{JobError, Processed};
pub use worker::{Stages, Worker};
