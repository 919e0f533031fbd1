//! The shared backend: one PostgreSQL database that several daemon replicas
//! lease from at once (schema in `migrations/`, summarised in the crate docs).
//!
//! Same semantics as [`crate::SqliteQueue`], statement for statement; what
//! differs is how concurrency is handled:
//!
//! - **Leasing** selects ready rows `FOR UPDATE SKIP LOCKED` in
//!   earliest-deadline-first order and updates them in the same statement, so
//!   two replicas leasing at the same moment take disjoint jobs and never wait
//!   on each other.
//! - **Lease-held updates** (`renew`, `complete`, `park`, `release`) are one
//!   `UPDATE ... WHERE id = $1 AND state = 'leased' AND lease_token = $2`; the
//!   row lock makes the fencing token check atomic.
//! - **Group commit**: `enqueue` hands its jobs to a batching task over a
//!   bounded channel. The task takes every request waiting in the channel and
//!   commits them in one transaction with one multi-row
//!   `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT DO NOTHING`, so a burst of
//!   webhooks costs one round trip and one WAL flush, not one each. Two such
//!   tasks alternate (one gathers while the other commits). Ids are inserted
//!   in sorted order so that two replicas inserting overlapping batches lock
//!   rows in the same order and cannot deadlock.
//! - **Time** always comes from the injected [`Clock`] as a bound parameter,
//!   never `now()` in SQL, so tests drive leases and deadlines by hand and
//!   replicas agree on nothing but the data.
//!
//! Why sqlx (0.8.6, `postgres` + `runtime-tokio` + `migrate`, no macros): it is
//! the most used maintained async PostgreSQL driver for Rust, has a pool and
//! a migration runner (with an advisory lock, so replicas starting together
//! migrate once) built in, and without its compile-time macros it needs no
//! database at build time. tokio-postgres + deadpool would do the same job
//! with a separately maintained pool and a hand-written migration runner.
//! Not 0.9.0: it stopped setting `TCP_NODELAY`, and Nagle's algorithm then
//! held each group insert for the server's delayed ACK (about 40 ms a
//! commit, measured in BENCHMARKS.md). 0.8.6 also decides rusqlite's
//! version (0.32): both link `libsqlite3-sys`, and cargo allows one.
//!
//! The connection URL may hold a password: it is kept in a [`Secret`] and
//! never logged, printed by `Debug`, or put in an error message.
//!
//! The module is cut by concern: [`options`] (what to connect to, as written
//! in the config and then resolved and checked before connecting), [`schema`] (migrations), [`enqueue`] (group commit),
//! [`lease`] (a job's life under a lease), [`admin`] (reads and admin
//! requeues), [`outbox`] (events to the user's app), [`erasure`] (the
//! blob reference index), [`row`] (decoding rows, mapping driver errors).

mod admin;
mod enqueue;
mod erasure;
mod lease;
mod options;
mod outbox;
mod row;
mod schema;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use archiver_core::{Clock, ErrorClass, JobSpec, JobState, UnixMillis};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{Mutex, mpsc, oneshot};

use self::enqueue::{EnqueueRequest, batcher};
pub use self::options::{PgConfig, PgOptions};
use self::schema::{create_schema, migrate};
use crate::backend::CHANNEL_CAPACITY;
use crate::{
    Disposition, Enqueued, JobFilter, JobQueue, JobRecord, Lease, Leased, MigratedJob, QueueError,
    QueueStats, RetryPolicy,
};

/// Batching tasks: while one commits, the next gathers the following group.
const BATCHERS: usize = 2;

/// The PostgreSQL [`JobQueue`]: several processes may share one database.
///
/// Dropping it stops its batching tasks once the enqueues already sent are
/// committed; the pool closes with the last of them.
pub struct PgQueue {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    /// For `Debug` only.
    schema: Option<String>,
    enqueues: mpsc::Sender<EnqueueRequest>,
    /// Enqueue transactions committed so far (group commit is observable).
    enqueue_commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for PgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgQueue")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PgQueue {
    /// Connects to `url` with default options, applies the schema
    /// migrations, and starts the batching tasks (on the current Tokio
    /// runtime).
    pub async fn connect(
        url: &str,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        Self::connect_with(PgOptions::new(url), policy, clock).await
    }

    /// [`PgQueue::connect`] with a pool size and a schema.
    pub async fn connect_with(
        options: PgOptions,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        policy.validate().map_err(QueueError::InvalidPolicy)?;
        options.validate().map_err(QueueError::Config)?;
        let mut connect = PgConnectOptions::from_str(options.url.expose())
            .map_err(|e| QueueError::Config(format!("url: {e}")))?
            .application_name("media-archiver");
        if let Some(schema) = &options.schema {
            create_schema(&connect, schema).await?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await
            .map_err(|e| QueueError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        migrate(&pool).await?;

        let (enqueues, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        let enqueue_commits = Arc::new(AtomicU64::new(0));
        for _ in 0..BATCHERS {
            tokio::spawn(batcher(
                pool.clone(),
                clock.clone(),
                receiver.clone(),
                enqueue_commits.clone(),
            ));
        }
        Ok(Self {
            pool,
            clock,
            policy,
            schema: options.schema,
            enqueues,
            enqueue_commits,
        })
    }

    /// Enqueue transactions committed by this handle so far.
    pub fn enqueue_commits(&self) -> u64 {
        self.enqueue_commits.load(Ordering::Relaxed)
    }

    fn now(&self) -> UnixMillis {
        self.clock.now_ms()
    }
}

#[async_trait::async_trait]
impl JobQueue for PgQueue {
    async fn enqueue(&self, jobs: Vec<JobSpec>) -> Result<Vec<Enqueued>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.enqueues
            .send(EnqueueRequest { jobs, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn lease(&self, max: usize, lease_for: Duration) -> Result<Leased, QueueError> {
        lease::lease(self, max, lease_for).await
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<UnixMillis, QueueError> {
        lease::renew(self, lease, lease_for).await
    }

    async fn complete(&self, lease: &Lease) -> Result<(), QueueError> {
        lease::complete(self, lease).await
    }

    async fn fail(
        &self,
        lease: &Lease,
        class: ErrorClass,
        error: &str,
    ) -> Result<Disposition, QueueError> {
        lease::fail(self, lease, class, error).await
    }

    async fn park(&self, lease: &Lease, until: UnixMillis) -> Result<(), QueueError> {
        lease::park(self, lease, until).await
    }

    async fn wake(&self, job_id: &str, note: Option<&str>) -> Result<bool, QueueError> {
        lease::wake(self, job_id, note).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        lease::release(self, lease).await
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, QueueError> {
        admin::get(self, job_id).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        admin::list(self, filter).await
    }

    async fn retry_now(&self, job_id: &str) -> Result<bool, QueueError> {
        admin::retry_now(self, job_id).await
    }

    async fn retry_all(&self, state: JobState) -> Result<u64, QueueError> {
        admin::retry_all(self, state).await
    }

    async fn stats(&self, at_risk_within: Duration) -> Result<QueueStats, QueueError> {
        admin::stats(self, at_risk_within).await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        admin::ping(self).await
    }

    async fn export_jobs(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MigratedJob>, QueueError> {
        admin::export_jobs(self, after, limit).await
    }

    async fn import_jobs(&self, jobs: Vec<MigratedJob>) -> Result<u64, QueueError> {
        admin::import_jobs(self, &jobs).await
    }

    fn outbox(&self) -> Option<&dyn crate::Outbox> {
        Some(self)
    }

    fn erasures(&self) -> Option<&dyn crate::Erasures> {
        Some(self)
    }
}

fn stopped() -> QueueError {
    QueueError::Unavailable("the queue's enqueue tasks have stopped".to_owned())
}
