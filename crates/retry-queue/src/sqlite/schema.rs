//! The file's schema (documented in the crate docs), its migrations, and
//! opening a connection with the pragmas the queue relies on.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::thread::StoreResult;
use crate::QueueError;

/// Schema version kept in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i64 = 6;

/// The trigger that commits a job's deliveries (`crate::outbox`) with its
/// `done` or `dead` transition (versions 5 and 6).
macro_rules! notify_trigger {
    () => {
        "
CREATE TRIGGER jobs_notify AFTER UPDATE OF state ON jobs
WHEN NEW.state IN ('done', 'dead') AND OLD.state <> NEW.state BEGIN
    INSERT INTO deliveries (id, target, job_id, event, state, next_attempt_at, deadline,
                            max_age_ms, job_error, created_at, updated_at)
    SELECT r.target || ':' || NEW.id || ':' || r.event, r.target, NEW.id, r.event, 'pending',
           NEW.updated_at, NEW.updated_at + r.max_age_ms, r.max_age_ms, NEW.last_error,
           NEW.updated_at, NEW.updated_at
    FROM notify_routes r
    WHERE r.event = CASE NEW.state WHEN 'done' THEN 'media.archived' ELSE 'media.dead' END
      AND r.account IN ('*', NEW.account)
    ON CONFLICT (id) DO UPDATE SET
        state = 'pending', attempts = attempts + 1, next_attempt_at = excluded.next_attempt_at,
        backoff_interval_ms = NULL, deadline = excluded.deadline, max_age_ms = excluded.max_age_ms,
        last_error = NULL, job_error = excluded.job_error, created_at = excluded.created_at,
        updated_at = excluded.updated_at;
END;
"
    };
}

/// The triggers that keep `job_counts` (versions 1 and 6).
macro_rules! count_triggers {
    () => {
        "
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs
WHEN OLD.state <> NEW.state BEGIN
    UPDATE job_counts SET n = n - 1 WHERE account = OLD.account AND state = OLD.state;
    INSERT INTO job_counts (account, state, n) VALUES (NEW.account, NEW.state, 1)
        ON CONFLICT (account, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE account = OLD.account AND state = OLD.state;
END;
"
    };
}

/// Version 2: jobs by message id (the admin API's media lookup), whether
/// the job id is keyed by message id or by media id.
pub(super) const SCHEMA_V2: &str =
    "CREATE INDEX jobs_message ON jobs (message_id, account, updated_at);";

/// Version 3: inserts are counted once per group commit by
/// [`insert_group`] (one upsert per account) instead of by a per-row
/// trigger, which cost about a fifth of every durable enqueue.
pub(super) const SCHEMA_V3: &str = "DROP TRIGGER jobs_count_insert;";

/// Version 4: the message-id index holds only the jobs whose id is not
/// `{account}:{message_id}` (jobs keyed by media id); the others are found
/// through the primary key (see [`list_sql`]). Message ids are random, so
/// every entry of this index cost each enqueue a page of WAL of its own:
/// Green API and Baileys jobs no longer pay it.
pub(super) const SCHEMA_V4: &str = "DROP INDEX jobs_message;
CREATE INDEX jobs_message ON jobs (message_id, account, updated_at)
    WHERE id <> account || ':' || message_id;";

/// Version 5: the outbox of events to the user's app (`crate::outbox`):
/// its routes, its deliveries, and the trigger that commits a job's
/// deliveries in the transaction of its `done` or `dead` transition.
pub(super) const SCHEMA_V5: &str = concat!(
    "
CREATE TABLE notify_routes (
    target     TEXT NOT NULL,
    event      TEXT NOT NULL,
    account    TEXT NOT NULL,
    max_age_ms INTEGER NOT NULL,
    PRIMARY KEY (target, event, account)
) STRICT, WITHOUT ROWID;
CREATE TABLE deliveries (
    id                  TEXT PRIMARY KEY NOT NULL,
    target              TEXT NOT NULL,
    job_id              TEXT NOT NULL,
    event               TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    backoff_interval_ms INTEGER,
    deadline            INTEGER NOT NULL,
    max_age_ms          INTEGER NOT NULL,
    last_error          TEXT,
    job_error           TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
) STRICT;
CREATE INDEX deliveries_due     ON deliveries (target, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_updated ON deliveries (updated_at);
CREATE INDEX deliveries_job     ON deliveries (job_id);
",
    notify_trigger!()
);

/// Version 6: erasure (`crate::erasure`). Jobs gain the `erased` state
/// (SQLite cannot change a CHECK in place, so the table is rebuilt, its
/// indexes and triggers with it) and the message's `chat_id`; the blob
/// reference index (`blob_refs`) and the blobs an erasure is deleting
/// (`blob_erasures`) are new.
pub(super) const SCHEMA_V6: &str = concat!(
    "
CREATE TABLE jobs_v6 (
    id                  TEXT PRIMARY KEY NOT NULL,
    account             TEXT NOT NULL,
    provider            TEXT NOT NULL,
    state               TEXT NOT NULL
                        CHECK (state IN ('pending', 'leased', 'waiting', 'done', 'dead', 'erased')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    deadline            INTEGER NOT NULL,
    next_attempt_at     INTEGER NOT NULL,
    backoff_interval_ms INTEGER,
    lease_token         INTEGER NOT NULL DEFAULT 0,
    lease_expires_at    INTEGER,
    last_error          TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    message_id          TEXT NOT NULL,
    media_id            TEXT,
    message_at          INTEGER NOT NULL,
    payload             TEXT NOT NULL,
    woken               INTEGER NOT NULL DEFAULT 0,
    chat_id             TEXT,
    due_at              INTEGER GENERATED ALWAYS AS (CASE state
                            WHEN 'pending' THEN next_attempt_at
                            WHEN 'waiting' THEN next_attempt_at
                            WHEN 'leased'  THEN lease_expires_at END) VIRTUAL
) STRICT;
INSERT INTO jobs_v6 (id, account, provider, state, attempts, deadline, next_attempt_at,
                     backoff_interval_ms, lease_token, lease_expires_at, last_error, created_at,
                     updated_at, message_id, media_id, message_at, payload, woken)
    SELECT id, account, provider, state, attempts, deadline, next_attempt_at,
           backoff_interval_ms, lease_token, lease_expires_at, last_error, created_at,
           updated_at, message_id, media_id, message_at, payload, woken
    FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v6 RENAME TO jobs;
CREATE INDEX jobs_ready       ON jobs (deadline, next_attempt_at, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX jobs_pending_age ON jobs (created_at) WHERE state = 'pending';
CREATE INDEX jobs_state       ON jobs (state, updated_at);
CREATE INDEX jobs_account     ON jobs (account, updated_at);
CREATE INDEX jobs_updated     ON jobs (updated_at);
CREATE INDEX jobs_message     ON jobs (message_id, account, updated_at)
    WHERE id <> account || ':' || message_id;

CREATE TABLE blob_refs (
    store      TEXT NOT NULL,
    blob_key   TEXT NOT NULL,
    account    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    chat_id    TEXT,
    message_at INTEGER NOT NULL,
    PRIMARY KEY (store, account, message_id, blob_key)
) STRICT, WITHOUT ROWID;
CREATE INDEX blob_refs_blob ON blob_refs (store, blob_key);
CREATE TABLE blob_erasures (
    store    TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    since    INTEGER NOT NULL,
    PRIMARY KEY (store, blob_key)
) STRICT, WITHOUT ROWID;
CREATE TABLE blob_index_complete (store TEXT PRIMARY KEY NOT NULL) STRICT, WITHOUT ROWID;
",
    count_triggers!(),
    notify_trigger!()
);

/// The schema documented in the crate docs; keep both in step.
pub(super) const SCHEMA_V1: &str = concat!(
    "
CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY NOT NULL,
    account             TEXT NOT NULL,
    provider            TEXT NOT NULL,
    state               TEXT NOT NULL
                        CHECK (state IN ('pending', 'leased', 'waiting', 'done', 'dead')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    deadline            INTEGER NOT NULL,
    next_attempt_at     INTEGER NOT NULL,
    backoff_interval_ms INTEGER,
    lease_token         INTEGER NOT NULL DEFAULT 0,
    lease_expires_at    INTEGER,
    last_error          TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    message_id          TEXT NOT NULL,
    media_id            TEXT,
    message_at          INTEGER NOT NULL,
    payload             TEXT NOT NULL,
    woken               INTEGER NOT NULL DEFAULT 0,
    due_at              INTEGER GENERATED ALWAYS AS (CASE state
                            WHEN 'pending' THEN next_attempt_at
                            WHEN 'waiting' THEN next_attempt_at
                            WHEN 'leased'  THEN lease_expires_at END) VIRTUAL
) STRICT;
CREATE INDEX jobs_ready       ON jobs (deadline, next_attempt_at, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX jobs_pending_age ON jobs (created_at) WHERE state = 'pending';
CREATE INDEX jobs_state       ON jobs (state, updated_at);
CREATE INDEX jobs_account     ON jobs (account, updated_at);
CREATE INDEX jobs_updated     ON jobs (updated_at);

CREATE TABLE job_counts (
    account TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (account, state)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (account, state, n) VALUES (NEW.account, NEW.state, 1)
        ON CONFLICT (account, state) DO UPDATE SET n = n + 1;
END;
",
    count_triggers!()
);

/// WAL pages (4 KiB) after which the database thread checkpoints inside a
/// commit. Checkpoints normally run on the [`checkpointer`]'s thread, a
/// few milliseconds apart, so the WAL rarely gets here; this bounds it
/// (4 MiB) should that thread fall behind. An inline checkpoint is a stall
/// every command behind its commit waits out, so it is kept this small.
pub(super) const WAL_AUTOCHECKPOINT_PAGES: i64 = 1024;

pub(super) fn open_database(path: &Path) -> StoreResult<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueueError::Unavailable(format!(
            "SQLite refused WAL journal mode (it kept {mode:?})"
        ))
        .into());
    }
    // The bound on the WAL (see WAL_AUTOCHECKPOINT_PAGES); checkpoints
    // normally run on the checkpointer's thread.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    // Migrations commit durably on their own (FULL fsyncs the WAL at commit)...
    conn.pragma_update(None, "synchronous", "FULL")?;
    migrate(&mut conn)?;
    // ...and from here on commits are not fsynced by SQLite: the WAL sync
    // stage fsyncs the WAL before any caller hears of a commit, once for
    // every commit made since its previous fsync (see `wal_sync`).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    match version {
        0..SCHEMA_VERSION => {
            let steps = [
                SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6,
            ];
            let from = usize::try_from(version).unwrap_or_default();
            for step in &steps[from..] {
                tx.execute_batch(step)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        SCHEMA_VERSION => {}
        other => {
            return Err(QueueError::Corrupt(format!(
                "queue database has schema version {other}; this build knows version {SCHEMA_VERSION}"
            ))
            .into());
        }
    }
    tx.commit()?;
    Ok(())
}
