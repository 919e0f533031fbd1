//! The embedded backend: one SQLite file, one OS thread that owns the
//! connection, commands over a bounded channel (schema in the crate docs).
//!
//! Why a thread and not a connection pool: SQLite allows one writer at a
//! time anyway, and nearly every queue operation writes. A single owner
//! thread serialises them without `SQLITE_BUSY` retries, keeps prepared
//! statements cached, and is the natural place for group commit: enqueues
//! that arrived while the previous transaction was being written are
//! committed together, so a burst of webhooks costs one transaction, not
//! one each. Its answers go out through [`wal_sync`], a second thread
//! that fsyncs the WAL once for every commit made since its last fsync, so
//! the next group is inserted while the previous one is being synced; a
//! third, the [`checkpointer`], copies the WAL back into the database.

mod checkpointer;
mod wal_sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use archiver_core::{Clock, ErrorClass, JobSpec, JobState, UnixMillis};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use tokio::sync::{mpsc, oneshot};

use self::checkpointer::Checkpointer;
use self::wal_sync::{Answer, Fault, SyncHook, WalSync};
use crate::backend::{
    CHANNEL_CAPACITY, COLUMNS, EXPIRED_IN_QUEUE, MAX_GROUP, MAX_LEASE_BATCH, issued_token,
    log_lapsed_lease, log_revived, millis,
};
use crate::retry::{self, Stored};
use crate::{
    Disposition, Enqueued, JobFilter, JobQueue, JobRecord, Lease, Leased, QueueError, QueueStats,
    RetryPolicy,
};

/// Schema version kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 4;

/// Version 2: jobs by message id (the admin API's media lookup), whether
/// the job id is keyed by message id or by media id.
const SCHEMA_V2: &str = "CREATE INDEX jobs_message ON jobs (message_id, account, updated_at);";

/// Version 3: inserts are counted once per group commit by
/// [`insert_group`] (one upsert per account) instead of by a per-row
/// trigger, which cost about a fifth of every durable enqueue.
const SCHEMA_V3: &str = "DROP TRIGGER jobs_count_insert;";

/// Version 4: the message-id index holds only the jobs whose id is not
/// `{account}:{message_id}` (jobs keyed by media id); the others are found
/// through the primary key (see [`list_sql`]). Message ids are random, so
/// every entry of this index cost each enqueue a page of WAL of its own:
/// Green API and Baileys jobs no longer pay it.
const SCHEMA_V4: &str = "DROP INDEX jobs_message;
CREATE INDEX jobs_message ON jobs (message_id, account, updated_at)
    WHERE id <> account || ':' || message_id;";

/// The schema documented in the crate docs; keep both in step.
const SCHEMA_V1: &str = "
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
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs
WHEN OLD.state <> NEW.state BEGIN
    UPDATE job_counts SET n = n - 1 WHERE account = OLD.account AND state = OLD.state;
    INSERT INTO job_counts (account, state, n) VALUES (NEW.account, NEW.state, 1)
        ON CONFLICT (account, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE account = OLD.account AND state = OLD.state;
END;
";

/// WAL pages (4 KiB) after which the database thread checkpoints inside a
/// commit. Checkpoints normally run on the [`checkpointer`]'s thread, a
/// few milliseconds apart, so the WAL rarely gets here; this bounds it
/// (4 MiB) should that thread fall behind. An inline checkpoint is a stall
/// every command behind its commit waits out, so it is kept this small.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 1024;

/// The SQLite [`JobQueue`]: embedded, one process, one file (plus its WAL).
///
/// Dropping it stops its thread after the commands already sent, and waits
/// for that, so the file can be reopened at once.
pub struct SqliteQueue {
    /// For `Debug` and error messages.
    path: PathBuf,
    /// `None` only while dropping: closing the channel stops the thread.
    commands: Option<mpsc::Sender<Command>>,
    /// Joined on drop.
    worker: Option<JoinHandle<()>>,
    /// Why the queue stopped, once a WAL fsync failed.
    fault: Fault,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteQueue {
    /// Opens (or creates, with its parent directory and schema) the queue
    /// database at `path` and starts its thread. Needs no async runtime.
    pub fn open(
        path: &Path,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        Self::open_with_sync_hook(path, policy, clock, None)
    }

    /// [`Self::open`], with `hook` run before every fsync of the WAL (tests
    /// hold a sync back, or fail it, with it).
    fn open_with_sync_hook(
        path: &Path,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
        hook: Option<SyncHook>,
    ) -> Result<Self, QueueError> {
        policy.validate().map_err(QueueError::InvalidPolicy)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                QueueError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = open_database(path).map_err(|e| match QueueError::from(e) {
            QueueError::Unavailable(msg) => {
                QueueError::Unavailable(format!("{}: {msg}", path.display()))
            }
            other => other,
        })?;
        let cannot_start = |e: std::io::Error| {
            QueueError::Unavailable(format!("cannot start the queue thread: {e}"))
        };
        let fault = Fault::default();
        let store = Store {
            sync: WalSync::start(path, CHANNEL_CAPACITY, hook, fault.clone())
                .map_err(cannot_start)?,
            checkpointer: Checkpointer::start(path)?,
            conn,
            clock,
            policy,
            enqueue_commits: 0,
        };
        let (commands, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        // Thread names fit Linux's 15 bytes, so `top -H`, `perf` and the
        // queue bench can tell this thread, `sqlite-wal-sync` and
        // `sqlite-checkpt` apart.
        let worker = std::thread::Builder::new()
            .name("sqlite-queue".to_owned())
            .spawn(move || run(store, receiver))
            .map_err(cannot_start)?;
        Ok(Self {
            path: path.to_owned(),
            commands: Some(commands),
            worker: Some(worker),
            fault,
        })
    }

    fn sender(&self) -> Result<&mpsc::Sender<Command>, QueueError> {
        self.commands.as_ref().ok_or_else(|| self.stopped())
    }

    /// The error of a call the database thread will never answer.
    fn stopped(&self) -> QueueError {
        match self.fault.get() {
            Some(fault) => QueueError::Unavailable(fault.clone()),
            None => QueueError::Unavailable("the queue's database thread has stopped".to_owned()),
        }
    }

    /// Runs `f` on the database thread and waits for its answer.
    ///
    /// If the caller stops waiting, `f` still runs (a lease taken that way
    /// simply expires).
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> StoreResult<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Call(Box::new(move |store: &mut Store| -> Answer {
            let result = f(store).map_err(QueueError::from);
            Box::new(move |synced: Result<(), &str>| {
                let _ = reply.send(synced.map_err(not_durable).and(result));
            })
        }));
        self.sender()?
            .send(command)
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }
}

impl Drop for SqliteQueue {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The answer to a command whose commit could not be made durable.
fn not_durable(fault: &str) -> QueueError {
    QueueError::Unavailable(fault.to_owned())
}

#[async_trait::async_trait]
impl JobQueue for SqliteQueue {
    async fn enqueue(&self, jobs: Vec<JobSpec>) -> Result<Vec<Enqueued>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Command::Enqueue(EnqueueRequest::new(jobs, reply)))
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    async fn lease(&self, max: usize, lease_for: Duration) -> Result<Leased, QueueError> {
        if max == 0 {
            return Ok(Leased::default());
        }
        self.call(move |store| store.lease(max, lease_for)).await
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<UnixMillis, QueueError> {
        let held = Held::of(lease);
        self.call(move |store| store.renew(&held, lease_for)).await
    }

    async fn complete(&self, lease: &Lease) -> Result<(), QueueError> {
        let held = Held::of(lease);
        self.call(move |store| store.complete(&held)).await
    }

    async fn fail(
        &self,
        lease: &Lease,
        class: ErrorClass,
        error: &str,
    ) -> Result<Disposition, QueueError> {
        let held = Held::of(lease);
        let error = error.to_owned();
        self.call(move |store| store.fail(&held, class, &error))
            .await
    }

    async fn park(&self, lease: &Lease, until: UnixMillis) -> Result<(), QueueError> {
        let held = Held::of(lease);
        self.call(move |store| store.park(&held, until)).await
    }

    async fn wake(&self, job_id: &str, note: Option<&str>) -> Result<bool, QueueError> {
        let id = job_id.to_owned();
        let note = note.map(str::to_owned);
        self.call(move |store| store.wake(&id, note.as_deref()))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        let held = Held::of(lease);
        self.call(move |store| store.release(&held)).await
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, QueueError> {
        let id = job_id.to_owned();
        self.call(move |store| store.get(&id)).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let filter = filter.clone();
        self.call(move |store| store.list(&filter)).await
    }

    async fn retry_now(&self, job_id: &str) -> Result<bool, QueueError> {
        let id = job_id.to_owned();
        self.call(move |store| store.retry_now(&id)).await
    }

    async fn retry_all(&self, state: JobState) -> Result<u64, QueueError> {
        self.call(move |store| store.retry_all(state)).await
    }

    async fn stats(&self, at_risk_within: Duration) -> Result<QueueStats, QueueError> {
        self.call(move |store| store.stats(at_risk_within)).await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.call(|store| store.ping()).await
    }
}

// ---------------------------------------------------------------------------
// The database thread.

type Reply<T> = oneshot::Sender<Result<T, QueueError>>;

struct EnqueueRequest {
    jobs: Vec<JobSpec>,
    /// Each job's payload as stored, serialised by the caller so that the
    /// one database thread does not spend its time on it.
    payloads: Vec<String>,
    reply: Reply<Vec<Enqueued>>,
}

impl EnqueueRequest {
    fn new(jobs: Vec<JobSpec>, reply: Reply<Vec<Enqueued>>) -> Self {
        let payloads = jobs.iter().map(|job| job.payload.to_string()).collect();
        Self {
            jobs,
            payloads,
            reply,
        }
    }
}

enum Command {
    /// Kept apart from `Call` so that waiting enqueues can share a commit.
    Enqueue(EnqueueRequest),
    /// Anything else; the closure returns how to send its reply.
    Call(Box<dyn FnOnce(&mut Store) -> Answer + Send>),
}

/// The thread's loop: one command at a time, in arrival order, except that
/// an enqueue takes every enqueue queued right behind it into its
/// transaction. Each command's answer goes to the WAL sync stage, which
/// sends it once the command's commit is durable.
fn run(mut store: Store, mut commands: mpsc::Receiver<Command>) {
    let mut next = None;
    loop {
        if store.sync.fault().is_some() {
            // An fsync failed: stop; every waiting and later call hears why.
            return;
        }
        let command = match next.take() {
            Some(command) => command,
            None => match commands.blocking_recv() {
                Some(command) => command,
                None => return, // every sender dropped: the queue was dropped
            },
        };
        let changes_before = store.conn.total_changes();
        let answer = match command {
            Command::Call(f) => f(&mut store),
            Command::Enqueue(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match commands.try_recv() {
                        Ok(Command::Enqueue(request)) => group.push(request),
                        Ok(other) => {
                            // Keep the order: it runs right after this group.
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                store.enqueue_group(group)
            }
        };
        let wrote = store.conn.total_changes() != changes_before;
        store.sync.settle(wrote, answer);
        if wrote {
            store.checkpointer.poke();
        }
    }
}

/// What a lease call needs to prove it still holds the job.
struct Held {
    job_id: String,
    token: u64,
}

impl Held {
    fn of(lease: &Lease) -> Self {
        Self {
            job_id: lease.job.id.clone(),
            token: lease.token,
        }
    }

    /// The token as stored; a token that does not fit was never issued.
    fn token(&self) -> StoreResult<i64> {
        i64::try_from(self.token).map_err(|_| self.lost())
    }

    fn lost(&self) -> StoreError {
        QueueError::LeaseLost {
            job_id: self.job_id.clone(),
        }
        .into()
    }
}

/// The connection and everything the operations need; lives on the thread.
struct Store {
    /// Declared before `conn`, so it is dropped first: its last fsync
    /// happens before the connection closes.
    sync: WalSync,
    /// Also dropped before `conn`.
    checkpointer: Checkpointer,
    conn: Connection,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    /// Enqueue transactions committed so far (group commit is observable in
    /// traces and tests).
    enqueue_commits: u64,
}

impl Store {
    fn now(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    /// Commits a group; the answer tells each request its outcomes.
    fn enqueue_group(&mut self, group: Vec<EnqueueRequest>) -> Answer {
        let now = self.now();
        match insert_group(&mut self.conn, &group, now) {
            Ok(outcomes) => {
                self.enqueue_commits += 1;
                tracing::trace!(
                    requests = group.len(),
                    commits = self.enqueue_commits,
                    "enqueue group committed"
                );
                Box::new(move |synced| {
                    for (request, outcome) in group.into_iter().zip(outcomes) {
                        let _ = request
                            .reply
                            .send(synced.map(|()| outcome).map_err(not_durable));
                    }
                })
            }
            Err(e) => {
                // Nothing of the group was committed; every caller hears so.
                let message = e.to_string();
                tracing::warn!(error = %message, requests = group.len(), "enqueue failed");
                Box::new(move |_| {
                    for request in group {
                        let _ = request
                            .reply
                            .send(Err(QueueError::Unavailable(message.clone())));
                    }
                })
            }
        }
    }

    fn lease(&mut self, max: usize, lease_for: Duration) -> StoreResult<Leased> {
        let now = self.now();
        let expires_at = now.saturating_add(millis(lease_for));
        let limit = i64::try_from(max.min(MAX_LEASE_BATCH)).unwrap_or(1);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Ready but past the deadline: the provider has forgotten the file,
        // so dead-letter instead of handing it out, and report it.
        let expired = tx
            .prepare_cached(&format!(
                "UPDATE jobs SET state = 'dead',
                    last_error = ?2 || COALESCE('; last error: ' || last_error, ''),
                    lease_expires_at = NULL, updated_at = ?1
                 WHERE due_at IS NOT NULL AND due_at <= ?1 AND deadline < ?1
                 RETURNING {COLUMNS}"
            ))?
            .query_map(params![now, EXPIRED_IN_QUEUE], read_job)?
            .map(|row| row.map(|stored| stored.job))
            .collect::<Result<Vec<_>, _>>()?;
        let ready = {
            let mut select = tx.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM jobs
                 WHERE due_at IS NOT NULL AND due_at <= ?1
                 ORDER BY deadline, next_attempt_at LIMIT ?2"
            ))?;
            select
                .query_map(params![now, limit], read_job)?
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut leases = Vec::with_capacity(ready.len());
        {
            let mut take = tx.prepare_cached(
                "UPDATE jobs SET state = 'leased', attempts = attempts + 1, woken = 0,
                    lease_token = lease_token + 1, lease_expires_at = ?2, updated_at = ?3
                 WHERE id = ?1",
            )?;
            for StoredJob {
                mut job,
                lease_token,
            } in ready
            {
                take.execute(params![job.id, expires_at, now])?;
                if job.state == JobState::Leased {
                    log_lapsed_lease(&job);
                }
                job.state = JobState::Leased;
                job.attempts = job.attempts.saturating_add(1);
                job.updated_at = now;
                leases.push(Lease {
                    job,
                    token: issued_token(lease_token + 1),
                    expires_at,
                });
            }
        }
        tx.commit()?;
        Ok(Leased { leases, expired })
    }

    /// Runs a one-statement update that only matches while `held` still
    /// holds the job; `LeaseLost` if it changed nothing.
    fn update_held(
        &mut self,
        held: &Held,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> StoreResult<()> {
        let changed = self.conn.prepare_cached(sql)?.execute(args)?;
        if changed == 0 {
            return Err(held.lost());
        }
        Ok(())
    }

    fn renew(&mut self, held: &Held, lease_for: Duration) -> StoreResult<UnixMillis> {
        let now = self.now();
        let expires_at = now.saturating_add(millis(lease_for));
        self.update_held(
            held,
            "UPDATE jobs SET lease_expires_at = ?3, updated_at = ?4
             WHERE id = ?1 AND state = 'leased' AND lease_token = ?2",
            params![held.job_id, held.token()?, expires_at, now],
        )?;
        Ok(expires_at)
    }

    fn complete(&mut self, held: &Held) -> StoreResult<()> {
        let now = self.now();
        self.update_held(
            held,
            "UPDATE jobs SET state = 'done', lease_expires_at = NULL, updated_at = ?3
             WHERE id = ?1 AND state = 'leased' AND lease_token = ?2",
            params![held.job_id, held.token()?, now],
        )
    }

    fn park(&mut self, held: &Held, until: UnixMillis) -> StoreResult<()> {
        let now = self.now();
        self.update_held(
            held,
            "UPDATE jobs SET
                state = CASE woken WHEN 1 THEN 'pending' ELSE 'waiting' END,
                next_attempt_at = CASE woken WHEN 1 THEN ?4 ELSE ?3 END,
                woken = 0, lease_expires_at = NULL, updated_at = ?4
             WHERE id = ?1 AND state = 'leased' AND lease_token = ?2",
            params![held.job_id, held.token()?, until, now],
        )
    }

    fn release(&mut self, held: &Held) -> StoreResult<()> {
        let now = self.now();
        self.update_held(
            held,
            "UPDATE jobs SET state = 'pending', next_attempt_at = ?3,
                attempts = MAX(attempts - 1, 0), lease_expires_at = NULL, updated_at = ?3
             WHERE id = ?1 AND state = 'leased' AND lease_token = ?2",
            params![held.job_id, held.token()?, now],
        )
    }

    fn fail(&mut self, held: &Held, class: ErrorClass, error: &str) -> StoreResult<Disposition> {
        let now = self.now();
        let token = held.token()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = tx
            .prepare_cached(
                "SELECT deadline, backoff_interval_ms FROM jobs
                 WHERE id = ?1 AND state = 'leased' AND lease_token = ?2",
            )?
            .query_row(params![held.job_id, token], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?))
            })
            .optional()?;
        let Some((deadline, stored_interval)) = found else {
            return Err(held.lost());
        };

        let decision = retry::decide(
            &self.policy,
            class,
            error,
            now,
            Stored {
                deadline,
                backoff_interval_ms: stored_interval,
            },
        );
        let interval = decision.backoff_interval_ms;
        match &decision.disposition {
            Disposition::RetryAt(at) => {
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'pending', next_attempt_at = ?2,
                        backoff_interval_ms = ?3, last_error = ?4,
                        lease_expires_at = NULL, updated_at = ?5
                     WHERE id = ?1",
                )?
                .execute(params![held.job_id, at, interval, error, now])?;
            }
            Disposition::Dead { reason } => {
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'dead', backoff_interval_ms = ?2, last_error = ?3,
                        lease_expires_at = NULL, updated_at = ?4
                     WHERE id = ?1",
                )?
                .execute(params![held.job_id, interval, reason, now])?;
            }
        }
        tx.commit()?;
        Ok(decision.disposition)
    }

    fn wake(&mut self, job_id: &str, note: Option<&str>) -> StoreResult<bool> {
        let now = self.now();
        // A waiting job becomes ready now; a leased one (its worker has not
        // parked it yet) is marked so that its park makes it ready at once.
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET
                    state = CASE state WHEN 'waiting' THEN 'pending' ELSE state END,
                    next_attempt_at = CASE state WHEN 'waiting' THEN ?2 ELSE next_attempt_at END,
                    woken = CASE state WHEN 'leased' THEN 1 ELSE woken END,
                    last_error = COALESCE(?3, last_error), updated_at = ?2
                 WHERE id = ?1 AND state IN ('waiting', 'leased')",
            )?
            .execute(params![job_id, now, note])?;
        Ok(changed > 0)
    }

    fn get(&mut self, job_id: &str) -> StoreResult<Option<JobRecord>> {
        let found = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?
            .query_row(params![job_id], read_job)
            .optional()?;
        Ok(found.map(|stored| stored.job))
    }

    fn list(&mut self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>> {
        let (sql, args) = list_sql(filter);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let jobs = stmt
            .query_map(params_from_iter(args), read_job)?
            .map(|row| row.map(|stored| stored.job))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(jobs)
    }

    fn retry_now(&mut self, job_id: &str) -> StoreResult<bool> {
        let now = self.now();
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET state = 'pending', next_attempt_at = ?2,
                    backoff_interval_ms = NULL, lease_expires_at = NULL, updated_at = ?2
                 WHERE id = ?1 AND state IN ('dead', 'pending', 'waiting')",
            )?
            .execute(params![job_id, now])?;
        Ok(changed > 0)
    }

    fn retry_all(&mut self, state: JobState) -> StoreResult<u64> {
        if !matches!(
            state,
            JobState::Dead | JobState::Pending | JobState::Waiting
        ) {
            return Ok(0);
        }
        let now = self.now();
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET state = 'pending', next_attempt_at = ?2,
                    backoff_interval_ms = NULL, lease_expires_at = NULL, updated_at = ?2
                 WHERE state = ?1",
            )?
            .execute(params![state.as_str(), now])?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    fn stats(&mut self, at_risk_within: Duration) -> StoreResult<QueueStats> {
        let now = self.now();
        let tx = self.conn.transaction()?; // one consistent snapshot
        let mut stats = QueueStats::empty();
        {
            // Maintained by triggers: cost follows accounts, not history.
            let mut counts =
                tx.prepare_cached("SELECT account, state, n FROM job_counts WHERE n > 0")?;
            let rows = counts.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (account, state, n) = row?;
                stats.add(account, state, n);
            }
        }
        stats.oldest_pending = tx
            .prepare_cached("SELECT MIN(created_at) FROM jobs INDEXED BY jobs_pending_age WHERE state = 'pending'")?
            .query_row([], |row| row.get::<_, Option<i64>>(0))?;
        // `due_at IS NOT NULL` is exactly "pending, leased or waiting".
        let horizon = now.saturating_add(millis(at_risk_within));
        let at_risk = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM jobs WHERE due_at IS NOT NULL AND deadline <= ?1",
            )?
            .query_row(params![horizon], |row| row.get::<_, i64>(0))?;
        stats.at_risk = at_risk.max(0).unsigned_abs();
        tx.commit()?;
        Ok(stats)
    }

    fn ping(&mut self) -> StoreResult<()> {
        self.conn
            .prepare_cached("SELECT 1")?
            .query_row([], |row| row.get::<_, i64>(0))?;
        Ok(())
    }
}

/// The query behind [`JobQueue::list`] and its arguments.
///
/// By message id, the candidates are the jobs in the (partial) message
/// index plus, for each account, the job whose id is `{account}:{message
/// id}` (found by primary key; every account with jobs has `job_counts`
/// rows), and only those few are sorted.
fn list_sql(filter: &JobFilter) -> (String, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut args = Vec::new();
    let from = match &filter.message_id {
        Some(message_id) => {
            args.push(Value::Text(message_id.clone()));
            let m = args.len();
            format!(
                "(SELECT rowid AS job FROM jobs
                      WHERE message_id = ?{m} AND id <> account || ':' || message_id
                  UNION ALL
                  SELECT rowid FROM jobs
                      WHERE id IN (SELECT account || ':' || ?{m} FROM job_counts GROUP BY account)
                        AND message_id = ?{m}
                 ) AS found CROSS JOIN jobs ON jobs.rowid = found.job"
            )
        }
        None => "jobs".to_owned(),
    };
    if let Some(state) = filter.state {
        args.push(Value::Text(state.as_str().to_owned()));
        conditions.push(format!("state = ?{}", args.len()));
    }
    if let Some(account) = &filter.account {
        args.push(Value::Text(account.clone()));
        conditions.push(format!("account = ?{}", args.len()));
    }
    let limit = i64::try_from(filter.effective_limit()).unwrap_or(1);
    args.push(Value::Integer(limit));
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM {from} {where_clause} ORDER BY updated_at DESC LIMIT ?{}",
        args.len()
    );
    (sql, args)
}

/// Inserts or revives every job of a group in one transaction.
fn insert_group(
    conn: &mut Connection,
    group: &[EnqueueRequest],
    now: UnixMillis,
) -> rusqlite::Result<Vec<Vec<Enqueued>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(group.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO jobs (id, account, provider, state, attempts, deadline, next_attempt_at,
                created_at, updated_at, message_id, media_id, message_at, payload)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?5, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO NOTHING",
        )?;
        // A dedup entry never blocks the retry of a failed job.
        let mut revive = tx.prepare_cached(
            "UPDATE jobs SET state = 'pending', attempts = 0, backoff_interval_ms = NULL,
                next_attempt_at = ?2, lease_expires_at = NULL, updated_at = ?2
             WHERE id = ?1 AND state = 'dead'",
        )?;
        // New jobs per account, counted into job_counts once per group.
        let mut inserted_per_account: BTreeMap<&str, i64> = BTreeMap::new();
        for request in group {
            let mut outcome = Vec::with_capacity(request.jobs.len());
            for (job, payload) in request.jobs.iter().zip(&request.payloads) {
                let inserted = insert.execute(params![
                    job.id,
                    job.account,
                    job.provider.as_str(),
                    job.deadline,
                    now,
                    job.message_id,
                    job.media_id,
                    job.message_at,
                    payload,
                ])?;
                if inserted > 0 {
                    *inserted_per_account.entry(&job.account).or_default() += 1;
                    outcome.push(Enqueued::New);
                } else {
                    if revive.execute(params![job.id, now])? > 0 {
                        log_revived(&job.id, &job.account);
                    }
                    outcome.push(Enqueued::Duplicate);
                }
            }
            outcomes.push(outcome);
        }
        let mut count = tx.prepare_cached(
            "INSERT INTO job_counts (account, state, n) VALUES (?1, 'pending', ?2)
             ON CONFLICT (account, state) DO UPDATE SET n = n + excluded.n",
        )?;
        for (account, n) in inserted_per_account {
            count.execute(params![account, n])?;
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

fn open_database(path: &Path) -> StoreResult<Connection> {
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

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    match version {
        0..SCHEMA_VERSION => {
            let steps = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4];
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

/// A row of `COLUMNS`.
struct StoredJob {
    job: JobRecord,
    lease_token: i64,
}

fn read_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredJob> {
    fn parse<T>(idx: usize, text: &str, parsed: Result<T, String>) -> rusqlite::Result<T> {
        parsed.map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                idx,
                rusqlite::types::Type::Text,
                format!("{e} (stored {text:?})").into(),
            )
        })
    }
    let provider: String = row.get(2)?;
    let state: String = row.get(3)?;
    let payload: String = row.get(13)?;
    Ok(StoredJob {
        job: JobRecord {
            id: row.get(0)?,
            account: row.get(1)?,
            provider: parse(2, &provider, provider.parse())?,
            state: parse(3, &state, state.parse())?,
            attempts: row.get(4)?,
            deadline: row.get(5)?,
            next_attempt_at: row.get(6)?,
            last_error: row.get(7)?,
            created_at: row.get(8)?,
            updated_at: row.get(9)?,
            message_id: row.get(10)?,
            media_id: row.get(11)?,
            message_at: row.get(12)?,
            payload: parse(
                13,
                "<payload>",
                serde_json::from_str(&payload).map_err(|e| format!("payload is not JSON: {e}")),
            )?,
        },
        lease_token: row.get(14)?,
    })
}

// ---------------------------------------------------------------------------
// Errors inside the thread: database errors and queue errors, so that `?`
// works on both; turned into a `QueueError` before leaving the thread.

enum StoreError {
    Db(rusqlite::Error),
    Queue(QueueError),
}

type StoreResult<T> = Result<T, StoreError>;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<QueueError> for StoreError {
    fn from(e: QueueError) -> Self {
        StoreError::Queue(e)
    }
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Queue(e) => e,
            StoreError::Db(
                e @ (rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)),
            ) => QueueError::Corrupt(e.to_string()),
            StoreError::Db(e) => QueueError::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use archiver_core::{ManualClock, ProviderKind};

    use super::*;

    fn spec(id: &str) -> JobSpec {
        JobSpec {
            id: id.to_owned(),
            account: "acme".to_owned(),
            provider: ProviderKind::Cloudapi,
            message_id: format!("wamid.{id}"),
            media_id: Some(id.to_owned()),
            message_at: 0,
            deadline: i64::MAX / 2,
            payload: serde_json::json!({"media": id}),
        }
    }

    trait ToSpec {
        fn job_spec(&self) -> JobSpec;
    }

    impl ToSpec for Lease {
        fn job_spec(&self) -> JobSpec {
            JobSpec {
                id: self.job.id.clone(),
                account: self.job.account.clone(),
                provider: self.job.provider,
                message_id: self.job.message_id.clone(),
                media_id: self.job.media_id.clone(),
                message_at: self.job.message_at,
                deadline: self.job.deadline,
                payload: self.job.payload.clone(),
            }
        }
    }

    fn open(dir: &Path) -> SqliteQueue {
        SqliteQueue::open(
            &dir.join("q.db"),
            RetryPolicy::default(),
            Arc::new(ManualClock::new(1_000)),
        )
        .unwrap()
    }

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = stmt.parameter_count();
        let rows = stmt
            .query_map(params_from_iter(std::iter::repeat_n(0, n)), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join("\n")
    }

    #[test]
    fn hot_queries_use_their_indexes_and_never_scan_history() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_database(&dir.path().join("q.db")).unwrap_or_else(|_| panic!("open"));

        let lease = plan(
            &conn,
            &format!(
                "SELECT {COLUMNS} FROM jobs WHERE due_at IS NOT NULL AND due_at <= ?1
                 ORDER BY deadline, next_attempt_at LIMIT ?2"
            ),
        );
        assert!(lease.contains("INDEX jobs_ready"), "{lease}");
        assert!(!lease.contains("TEMP B-TREE"), "{lease}");

        let expire = plan(
            &conn,
            "UPDATE jobs SET state = 'dead'
             WHERE due_at IS NOT NULL AND due_at <= ?1 AND deadline < ?1",
        );
        assert!(expire.contains("INDEX jobs_ready"), "{expire}");

        let at_risk = plan(
            &conn,
            "SELECT COUNT(*) FROM jobs WHERE due_at IS NOT NULL AND deadline <= ?1",
        );
        assert!(at_risk.contains("INDEX jobs_ready"), "{at_risk}");

        let oldest = plan(
            &conn,
            "SELECT MIN(created_at) FROM jobs INDEXED BY jobs_pending_age WHERE state = 'pending'",
        );
        assert!(oldest.contains("INDEX jobs_pending_age"), "{oldest}");

        let list = plan(
            &conn,
            &format!("SELECT {COLUMNS} FROM jobs ORDER BY updated_at DESC LIMIT ?1"),
        );
        assert!(list.contains("INDEX jobs_updated"), "{list}");
        assert!(!list.contains("TEMP B-TREE"), "{list}");
        let by_state = plan(
            &conn,
            &format!(
                "SELECT {COLUMNS} FROM jobs WHERE state = ?1 ORDER BY updated_at DESC LIMIT ?2"
            ),
        );
        assert!(by_state.contains("INDEX jobs_state"), "{by_state}");
        assert!(!by_state.contains("TEMP B-TREE"), "{by_state}");
        for filter in [
            JobFilter {
                message_id: Some("m".into()),
                ..JobFilter::default()
            },
            JobFilter {
                message_id: Some("m".into()),
                account: Some("a".into()),
                state: Some(JobState::Done),
                ..JobFilter::default()
            },
        ] {
            let by_message = plan(&conn, &list_sql(&filter).0);
            assert!(by_message.contains("INDEX jobs_message"), "{by_message}");
            assert!(
                by_message.contains("sqlite_autoindex_jobs_1 (id=?)"),
                "{by_message}"
            );
            assert!(!by_message.contains("SCAN jobs"), "{by_message}");
            assert!(!by_message.contains("INDEX jobs_state"), "{by_message}");
        }
    }

    #[tokio::test]
    async fn kept_counts_match_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(dir.path());
        let mut specs: Vec<JobSpec> = (0..12).map(|i| spec(&format!("acme:{i}"))).collect();
        for i in 0..5 {
            let mut other = spec(&format!("globex:{i}"));
            other.account = "globex".to_owned();
            specs.push(other);
        }
        specs.push(spec("acme:0")); // duplicate: no count
        queue.enqueue(specs).await.unwrap();
        let leases = queue.lease(10, Duration::from_secs(60)).await.unwrap().leases;
        queue.complete(&leases[0]).await.unwrap();
        queue
            .fail(&leases[1], ErrorClass::Permanent, "gone")
            .await
            .unwrap();
        queue
            .fail(&leases[2], ErrorClass::Transient, "later")
            .await
            .unwrap();
        queue.park(&leases[3], i64::MAX / 4).await.unwrap();
        queue.release(&leases[4]).await.unwrap();
        queue
            .renew(&leases[5], Duration::from_secs(60))
            .await
            .unwrap();
        queue.enqueue(vec![leases[1].job_spec()]).await.unwrap(); // revive
        queue.retry_all(JobState::Waiting).await.unwrap();

        let (kept, counted) = queue
            .call(|store| {
                let read = |sql: &str| -> rusqlite::Result<Vec<(String, String, i64)>> {
                    store
                        .conn
                        .prepare(sql)?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                };
                Ok((
                    read("SELECT account, state, n FROM job_counts WHERE n > 0 ORDER BY 1, 2")?,
                    read("SELECT account, state, COUNT(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(kept, counted);
        let stats = queue.stats(Duration::ZERO).await.unwrap();
        assert_eq!(stats.by_state.values().sum::<u64>(), 17);
        assert_eq!(stats.by_state["leased"], 5);
    }

    #[test]
    fn open_creates_the_schema_once_and_refuses_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/q.db");
        let conn = open_database(&{
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            path.clone()
        })
        .unwrap_or_else(|_| panic!("open"));
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            sync, 1,
            "synchronous=NORMAL: the WAL sync stage fsyncs before answering"
        );
        drop(conn);
        assert!(open_database(&path).is_ok(), "reopening is idempotent");

        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        match open_database(&path).map_err(QueueError::from) {
            Err(QueueError::Corrupt(msg)) => assert!(msg.contains("99"), "{msg}"),
            other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_version_1_database_is_migrated_to_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        let conn = open_database(&path).unwrap_or_else(|_| panic!("open"));
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let insert_trigger: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_count_insert'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            insert_trigger, 0,
            "v3 counts inserts per group, not per row"
        );
        let checkpoint_pages: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(checkpoint_pages, WAL_AUTOCHECKPOINT_PAGES);
        let message_index: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'jobs_message'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            message_index.contains("WHERE id <> account || ':' || message_id"),
            "v4 indexes only jobs not keyed by their message id: {message_index}"
        );
    }

    #[test]
    fn open_rejects_an_invalid_policy_and_creates_parent_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let bad = RetryPolicy {
            multiplier: 0.0,
            ..RetryPolicy::default()
        };
        let err = SqliteQueue::open(&dir.path().join("q.db"), bad, Arc::new(ManualClock::new(0)))
            .unwrap_err();
        assert!(matches!(err, QueueError::InvalidPolicy(_)), "{err}");

        let path = dir.path().join("a/b/q.db");
        let queue = SqliteQueue::open(&path, RetryPolicy::default(), Arc::new(ManualClock::new(0)))
            .unwrap();
        drop(queue);
        assert!(path.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enqueues_waiting_in_the_channel_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(open(dir.path()));
        let commits = || {
            let queue = queue.clone();
            async move { queue.call(|store| Ok(store.enqueue_commits)).await.unwrap() }
        };
        assert_eq!(commits().await, 0);

        // Hold the database thread until 20 enqueues wait in the channel.
        let (started_tx, started_rx) = oneshot::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let queue = queue.clone();
            tokio::spawn(async move {
                queue
                    .call(move |_| {
                        let _ = started_tx.send(());
                        let _ = go_rx.recv();
                        Ok(())
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.enqueue(vec![spec(&format!("acme:{i}"))]).await })
            })
            .collect();
        let sender = queue.sender().unwrap();
        while sender.max_capacity() - sender.capacity() < 20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        go_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), vec![Enqueued::New]);
        }
        assert_eq!(commits().await, 1, "20 waiting enqueues, one transaction");
    }

    /// A sync hook that blocks every WAL fsync until the test releases it,
    /// and says when a sync is waiting.
    struct HeldSyncs {
        waiting: tokio::sync::mpsc::UnboundedReceiver<()>,
        release: std::sync::mpsc::Sender<()>,
        syncs: Arc<std::sync::atomic::AtomicUsize>,
    }

    fn held_syncs() -> (SyncHook, HeldSyncs) {
        let (waiting_tx, waiting) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = syncs.clone();
        let hook: SyncHook = Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = waiting_tx.send(());
            let released = release_rx
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .recv_timeout(Duration::from_secs(30));
            released.map_err(|_| std::io::Error::other("the test never released the sync"))
        });
        (
            hook,
            HeldSyncs {
                waiting,
                release,
                syncs,
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_answered_before_the_wal_fsync_that_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, mut held) = held_syncs();
        let queue = Arc::new(
            SqliteQueue::open_with_sync_hook(
                &dir.path().join("q.db"),
                RetryPolicy::default(),
                Arc::new(ManualClock::new(1_000)),
                Some(hook),
            )
            .unwrap(),
        );
        // Nothing committed yet: a read is answered without an fsync.
        assert!(queue.get("acme:1").await.unwrap().is_none());
        assert_eq!(held.syncs.load(Ordering::SeqCst), 0);

        let enqueue = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.enqueue(vec![spec("acme:1")]).await })
        };
        // The group is committed and its fsync is held back: no answer yet,
        // and a read of the job waits behind it (it must not show a job a
        // power cut could still take away).
        tokio::time::timeout(Duration::from_secs(30), held.waiting.recv())
            .await
            .expect("the enqueue's commit was never synced")
            .unwrap();
        let read = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.get("acme:1").await })
        };
        tokio::task::yield_now().await;
        assert!(!enqueue.is_finished(), "answered before its fsync");
        assert!(!read.is_finished(), "showed an unsynced commit");

        held.release.send(()).unwrap();
        assert_eq!(enqueue.await.unwrap().unwrap(), vec![Enqueued::New]);
        let job = read.await.unwrap().unwrap().expect("the job, once durable");
        assert_eq!(job.state, JobState::Pending);
        assert_eq!(
            held.syncs.load(Ordering::SeqCst),
            1,
            "one fsync answered both"
        );

        // Everything is durable again: reads need no fsync.
        queue.stats(Duration::from_secs(60)).await.unwrap();
        assert_eq!(held.syncs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_wal_fsync_fails_its_answers_and_stops_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let hook: SyncHook = Arc::new(|| Err(std::io::Error::other("injected I/O error")));
        let queue = SqliteQueue::open_with_sync_hook(
            &path,
            RetryPolicy::default(),
            Arc::new(ManualClock::new(1_000)),
            Some(hook),
        )
        .unwrap();
        let unavailable = |result: Result<(), QueueError>| match result {
            Err(QueueError::Unavailable(msg)) => {
                assert!(msg.contains("injected I/O error"), "{msg}");
                assert!(msg.contains("restart"), "{msg}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        };
        // The webhook hears 503, so its provider redelivers.
        unavailable(queue.enqueue(vec![spec("acme:1")]).await.map(|_| ()));
        // Nothing is trusted after a failed fsync: every call fails alike.
        unavailable(queue.ping().await);
        unavailable(queue.enqueue(vec![spec("acme:2")]).await.map(|_| ()));
        drop(queue);

        // A restart reads back what the disk has, and serves again.
        let queue = open(dir.path());
        queue.ping().await.unwrap();
        assert_eq!(
            queue.enqueue(vec![spec("acme:3")]).await.unwrap(),
            vec![Enqueued::New]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_pages_are_checkpointed_by_their_own_thread() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(dir.path());
        queue.ping().await.unwrap();
        let db_file = dir.path().join("q.db");
        let empty = std::fs::metadata(&db_file).unwrap().len();
        // Far below the writer's own checkpoint size (WAL_AUTOCHECKPOINT_PAGES).
        for group in 0..20 {
            let jobs = (0..10)
                .map(|i| spec(&format!("acme:{group}-{i}")))
                .collect();
            queue.enqueue(jobs).await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("q.db-wal"))
            .unwrap()
            .len();
        assert!(
            wal < 4096 * WAL_AUTOCHECKPOINT_PAGES.unsigned_abs() / 2,
            "{wal}"
        );
        // The jobs reach the database file without any further commit.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&db_file).unwrap().len() <= empty {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing was checkpointed into the database file"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            queue.stats(Duration::ZERO).await.unwrap().by_state["pending"],
            200
        );
    }

    #[tokio::test]
    async fn a_stopped_thread_makes_every_call_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(dir.path());
        let panicked = Arc::new(AtomicBool::new(false));
        let flag = panicked.clone();
        // A bug that panics on the thread takes the queue out of service
        // visibly (ping fails, /readyz says so) rather than silently.
        let result = queue
            .call(move |_| -> StoreResult<()> {
                flag.store(true, Ordering::SeqCst);
                panic!("simulated bug on the database thread")
            })
            .await;
        assert!(panicked.load(Ordering::SeqCst));
        assert!(matches!(result, Err(QueueError::Unavailable(_))));
        assert!(matches!(
            queue.ping().await,
            Err(QueueError::Unavailable(_))
        ));
        assert!(matches!(
            queue.enqueue(vec![spec("acme:1")]).await,
            Err(QueueError::Unavailable(_))
        ));
    }
}
