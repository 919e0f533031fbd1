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

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use archiver_core::{Clock, ErrorClass, JobSpec, JobState, Secret, UnixMillis};
use sqlx::Row;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::backend::{
    CHANNEL_CAPACITY, COLUMNS, EXPIRED_IN_QUEUE, MAX_GROUP, MAX_LEASE_BATCH, issued_token,
    log_lapsed_lease, log_revived, millis,
};
use crate::retry::{self, Stored};
use crate::{
    Disposition, Enqueued, JobFilter, JobQueue, JobRecord, Lease, Leased, QueueError, QueueStats,
    RetryPolicy,
};

/// The schema migrations, applied in order by [`PgQueue::connect`].
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "jobs", include_str!("../migrations/0001_jobs.sql")),
    (
        2,
        "jobs_message",
        include_str!("../migrations/0002_jobs_message.sql"),
    ),
    (
        3,
        "jobs_message_partial",
        include_str!("../migrations/0003_jobs_message_partial.sql"),
    ),
];

/// Batching tasks: while one commits, the next gathers the following group.
const BATCHERS: usize = 2;

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database?sslmode=...`; a secret,
    /// since it may hold a password.
    pub url: Secret,
    /// Pool size. Leasing, acks and the batching tasks share it.
    pub max_connections: u32,
    /// The schema holding the queue's tables, created when missing; `None`
    /// uses the server's `search_path` (normally `public`).
    pub schema: Option<String>,
}

impl PgOptions {
    /// The default pool size.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

    /// Options for `url` with the default pool and no schema of its own.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            schema: None,
        }
    }

    /// Checks what can be checked without connecting: the URL parses, the
    /// pool has a size, the schema is a plain identifier. Messages never
    /// quote the URL.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let url = self.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push("url must start with postgres:// or postgresql://".to_owned());
        } else if let Err(e) = PgConnectOptions::from_str(url) {
            problems.push(format!("url is not a PostgreSQL connection URL: {e}"));
        }
        if self.max_connections < 2 {
            problems.push(format!(
                "max_connections ({}) must be at least 2 (enqueues and leases need a connection each)",
                self.max_connections
            ));
        }
        if let Some(schema) = &self.schema
            && !valid_identifier(schema)
        {
            problems.push(format!(
                "schema {schema:?} must match [a-z_][a-z0-9_]{{0,62}}"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &"[redacted]")
            .field("max_connections", &self.max_connections)
            .field("schema", &self.schema)
            .finish()
    }
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && name.len() <= 63
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

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

    /// Runs a one-statement update that only matches while `lease` still
    /// holds the job; `LeaseLost` if it changed nothing.
    async fn update_held(
        &self,
        lease: &Lease,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<(), QueueError> {
        let done = query.execute(&self.pool).await.map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(lost(lease));
        }
        Ok(())
    }
}

fn lost(lease: &Lease) -> QueueError {
    QueueError::LeaseLost {
        job_id: lease.job.id.clone(),
    }
}

/// The lease token as stored; one that does not fit was never issued.
fn token(lease: &Lease) -> Result<i64, QueueError> {
    i64::try_from(lease.token).map_err(|_| lost(lease))
}

/// Creates `schema` unless it exists (checked first, so that a role without
/// `CREATE` on the database can use a schema made for it).
async fn create_schema(connect: &PgConnectOptions, schema: &str) -> Result<(), QueueError> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect_with(connect)
        .await
        .map_err(|e| QueueError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
    if !exists {
        // The name was validated as a plain identifier.
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        if let Err(e) = sqlx::query(&create).execute(&mut conn).await {
            // Another replica may have created it at the same moment.
            let raced = matches!(&e, sqlx::Error::Database(d)
                if matches!(d.code().as_deref(), Some("23505" | "42P06")));
            if !raced {
                return Err(db(e));
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// The embedded [`MIGRATIONS`] as a source for sqlx's migrator.
#[derive(Debug)]
struct EmbeddedMigrations;

impl<'s> MigrationSource<'s> for EmbeddedMigrations {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    (*name).into(),
                    MigrationType::Simple,
                    (*sql).into(),
                    false,
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// Applies the pending migrations under sqlx's advisory lock (replicas that
/// start together migrate once). sqlx records them in `_sqlx_migrations`
/// of the queue's schema.
async fn migrate(pool: &PgPool) -> Result<(), QueueError> {
    let migrator = Migrator::new(EmbeddedMigrations)
        .await
        .map_err(|e| QueueError::Corrupt(format!("embedded migrations: {e}")))?;
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => QueueError::Corrupt(format!(
            "queue schema has migration {v} applied, unknown to this build (a newer \
             media-archiver wrote it, or another application's sqlx migrations share this \
             schema: give the queue its own with queue.schema)"
        )),
        other => QueueError::Unavailable(format!("cannot migrate the queue schema: {other}")),
    })
}

/// Database errors: data that does not decode is corruption; anything else
/// (connection, server, constraint) means the queue is unavailable now.
fn db(e: sqlx::Error) -> QueueError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => QueueError::Corrupt(e.to_string()),
        other => QueueError::Unavailable(other.to_string()),
    }
}

/// A row of `COLUMNS`, as a job and its lease token.
fn read_job(row: &PgRow) -> Result<(JobRecord, i64), QueueError> {
    let corrupt = |what: &str, e: String| QueueError::Corrupt(format!("{what}: {e}"));
    let provider: String = row.try_get("provider").map_err(db)?;
    let state: String = row.try_get("state").map_err(db)?;
    let payload: String = row.try_get("payload").map_err(db)?;
    let attempts: i32 = row.try_get("attempts").map_err(db)?;
    let job = JobRecord {
        id: row.try_get("id").map_err(db)?,
        account: row.try_get("account").map_err(db)?,
        provider: provider
            .parse()
            .map_err(|e| corrupt("provider", format!("{e} (stored {provider:?})")))?,
        state: state
            .parse()
            .map_err(|e| corrupt("state", format!("{e} (stored {state:?})")))?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt("attempts", e.to_string()))?,
        deadline: row.try_get("deadline").map_err(db)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(db)?,
        last_error: row.try_get("last_error").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
        message_id: row.try_get("message_id").map_err(db)?,
        media_id: row.try_get("media_id").map_err(db)?,
        message_at: row.try_get("message_at").map_err(db)?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| corrupt("payload", format!("not JSON: {e}")))?,
    };
    Ok((job, row.try_get("lease_token").map_err(db)?))
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
        if max == 0 {
            return Ok(Leased::default());
        }
        let now = self.now();
        let expires_at = now.saturating_add(millis(lease_for));
        let limit = i64::try_from(max.min(MAX_LEASE_BATCH)).unwrap_or(1);

        // Ready but past the deadline: the provider has forgotten the file,
        // so dead-letter it instead of handing it out, and report it to the
        // caller. Ordered and bounded so
        // the planner walks `jobs_ready` from its start even before the
        // table has statistics (unbounded, it chose a sequential scan of the
        // whole table after a bulk load: lease cost grew with the backlog);
        // any rest is expired by the next calls, and the lease below never
        // hands out a job past its deadline meanwhile.
        let sql = format!(
            "WITH expired AS (
                SELECT id AS expired_id FROM jobs
                WHERE due_at IS NOT NULL AND due_at <= $1 AND deadline < $1
                ORDER BY deadline, next_attempt_at
                LIMIT 1000
                FOR UPDATE SKIP LOCKED)
             UPDATE jobs SET state = 'dead',
                last_error = $2 || COALESCE('; last error: ' || jobs.last_error, ''),
                lease_expires_at = NULL, updated_at = $1
             FROM expired WHERE jobs.id = expired.expired_id
             RETURNING {COLUMNS}"
        );
        let expired = sqlx::query(&sql)
            .bind(now)
            .bind(EXPIRED_IN_QUEUE)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(|row| read_job(row).map(|(job, _)| job))
            .collect::<Result<Vec<_>, _>>()?;

        // `deadline >= $1` keeps this statement right on its own even if a
        // job's deadline passed between the two statements.
        let rows = sqlx::query(
            "WITH ready AS (
                SELECT id, state AS was FROM jobs
                WHERE due_at IS NOT NULL AND due_at <= $1 AND deadline >= $1
                ORDER BY deadline, next_attempt_at
                LIMIT $2
                FOR UPDATE SKIP LOCKED)
             UPDATE jobs SET state = 'leased', attempts = jobs.attempts + 1, woken = FALSE,
                lease_token = jobs.lease_token + 1, lease_expires_at = $3, updated_at = $1
             FROM ready WHERE jobs.id = ready.id
             RETURNING ready.was, jobs.id, jobs.account, jobs.provider, jobs.state,
                jobs.attempts, jobs.deadline, jobs.next_attempt_at, jobs.last_error,
                jobs.created_at, jobs.updated_at, jobs.message_id, jobs.media_id,
                jobs.message_at, jobs.payload, jobs.lease_token",
        )
        .bind(now)
        .bind(limit)
        .bind(expires_at)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut leases = Vec::with_capacity(rows.len());
        for row in &rows {
            let was: String = row.try_get("was").map_err(db)?;
            let (job, lease_token) = read_job(row)?;
            if was == "leased" {
                log_lapsed_lease(&job);
            }
            leases.push(Lease {
                job,
                token: issued_token(lease_token),
                expires_at,
            });
        }
        // RETURNING has no order; hand them out earliest deadline first.
        leases.sort_by(|a, b| {
            (a.job.deadline, a.job.next_attempt_at, &a.job.id).cmp(&(
                b.job.deadline,
                b.job.next_attempt_at,
                &b.job.id,
            ))
        });
        Ok(Leased { leases, expired })
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<UnixMillis, QueueError> {
        let now = self.now();
        let expires_at = now.saturating_add(millis(lease_for));
        self.update_held(
            lease,
            sqlx::query(
                "UPDATE jobs SET lease_expires_at = $3, updated_at = $4
                 WHERE id = $1 AND state = 'leased' AND lease_token = $2",
            )
            .bind(&lease.job.id)
            .bind(token(lease)?)
            .bind(expires_at)
            .bind(now),
        )
        .await?;
        Ok(expires_at)
    }

    async fn complete(&self, lease: &Lease) -> Result<(), QueueError> {
        self.update_held(
            lease,
            sqlx::query(
                "UPDATE jobs SET state = 'done', lease_expires_at = NULL, updated_at = $3
                 WHERE id = $1 AND state = 'leased' AND lease_token = $2",
            )
            .bind(&lease.job.id)
            .bind(token(lease)?)
            .bind(self.now()),
        )
        .await
    }

    async fn fail(
        &self,
        lease: &Lease,
        class: ErrorClass,
        error: &str,
    ) -> Result<Disposition, QueueError> {
        let now = self.now();
        let held_token = token(lease)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let found = sqlx::query(
            "SELECT deadline, backoff_interval_ms FROM jobs
             WHERE id = $1 AND state = 'leased' AND lease_token = $2
             FOR UPDATE",
        )
        .bind(&lease.job.id)
        .bind(held_token)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(found) = found else {
            return Err(lost(lease));
        };
        let deadline: i64 = found.try_get(0).map_err(db)?;
        let stored_interval: Option<i64> = found.try_get(1).map_err(db)?;

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
                sqlx::query(
                    "UPDATE jobs SET state = 'pending', next_attempt_at = $2,
                        backoff_interval_ms = $3, last_error = $4,
                        lease_expires_at = NULL, updated_at = $5
                     WHERE id = $1",
                )
                .bind(&lease.job.id)
                .bind(at)
                .bind(interval)
                .bind(error)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            Disposition::Dead { reason } => {
                sqlx::query(
                    "UPDATE jobs SET state = 'dead', backoff_interval_ms = $2, last_error = $3,
                        lease_expires_at = NULL, updated_at = $4
                     WHERE id = $1",
                )
                .bind(&lease.job.id)
                .bind(interval)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(decision.disposition)
    }

    async fn park(&self, lease: &Lease, until: UnixMillis) -> Result<(), QueueError> {
        self.update_held(
            lease,
            sqlx::query(
                "UPDATE jobs SET
                    state = CASE WHEN woken THEN 'pending' ELSE 'waiting' END,
                    next_attempt_at = CASE WHEN woken THEN $4 ELSE $3 END,
                    woken = FALSE, lease_expires_at = NULL, updated_at = $4
                 WHERE id = $1 AND state = 'leased' AND lease_token = $2",
            )
            .bind(&lease.job.id)
            .bind(token(lease)?)
            .bind(until)
            .bind(self.now()),
        )
        .await
    }

    async fn wake(&self, job_id: &str, note: Option<&str>) -> Result<bool, QueueError> {
        // A waiting job becomes ready now; a leased one (its worker has not
        // parked it yet) is marked so that its park makes it ready at once.
        let done = sqlx::query(
            "UPDATE jobs SET
                state = CASE state WHEN 'waiting' THEN 'pending' ELSE state END,
                next_attempt_at = CASE state WHEN 'waiting' THEN $2 ELSE next_attempt_at END,
                woken = CASE state WHEN 'leased' THEN TRUE ELSE woken END,
                last_error = COALESCE($3, last_error), updated_at = $2
             WHERE id = $1 AND state IN ('waiting', 'leased')",
        )
        .bind(job_id)
        .bind(self.now())
        .bind(note)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        self.update_held(
            lease,
            sqlx::query(
                "UPDATE jobs SET state = 'pending', next_attempt_at = $3,
                    attempts = GREATEST(attempts - 1, 0), lease_expires_at = NULL, updated_at = $3
                 WHERE id = $1 AND state = 'leased' AND lease_token = $2",
            )
            .bind(&lease.job.id)
            .bind(token(lease)?)
            .bind(self.now()),
        )
        .await
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, QueueError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref()
            .map(read_job)
            .transpose()
            .map(|found| found.map(|(job, _)| job))
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let mut conditions = Vec::new();
        let mut n = 0;
        // By message id, the candidates are the jobs in the (partial)
        // message index plus, for each account, the job whose id is
        // `{account}:{message id}`, found by primary key; the accounts are
        // read by skipping through `jobs_account` (one probe per account).
        let (with, from) = if filter.message_id.is_some() {
            n += 1;
            (
                "WITH RECURSIVE accounts(a) AS (
                     SELECT min(account) FROM jobs
                     UNION ALL
                     SELECT (SELECT min(account) FROM jobs WHERE account > a)
                         FROM accounts WHERE a IS NOT NULL)",
                format!(
                    "(SELECT id AS job FROM jobs
                          WHERE message_id = ${n} AND id <> account || ':' || message_id
                      UNION ALL
                      SELECT id FROM jobs
                          WHERE id IN (SELECT a || ':' || ${n} FROM accounts WHERE a IS NOT NULL)
                            AND message_id = ${n}
                     ) AS found JOIN jobs ON jobs.id = found.job"
                ),
            )
        } else {
            ("", "jobs".to_owned())
        };
        if filter.state.is_some() {
            n += 1;
            conditions.push(format!("state = ${n}"));
        }
        if filter.account.is_some() {
            n += 1;
            conditions.push(format!("account = ${n}"));
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        // Only the shape varies (eight variants); every value is bound.
        let sql = format!(
            "{with} SELECT {COLUMNS} FROM {from} {where_clause} ORDER BY updated_at DESC LIMIT ${}",
            n + 1
        );
        let mut query = sqlx::query(&sql);
        if let Some(message_id) = &filter.message_id {
            query = query.bind(message_id.as_str());
        }
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some(account) = &filter.account {
            query = query.bind(account.as_str());
        }
        let limit = i64::try_from(filter.effective_limit()).unwrap_or(1);
        let rows = query.bind(limit).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter()
            .map(|row| read_job(row).map(|(job, _)| job))
            .collect()
    }

    async fn retry_now(&self, job_id: &str) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'pending', next_attempt_at = $2,
                backoff_interval_ms = NULL, lease_expires_at = NULL, updated_at = $2
             WHERE id = $1 AND state IN ('dead', 'pending', 'waiting')",
        )
        .bind(job_id)
        .bind(self.now())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn retry_all(&self, state: JobState) -> Result<u64, QueueError> {
        if !matches!(
            state,
            JobState::Dead | JobState::Pending | JobState::Waiting
        ) {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE jobs SET state = 'pending', next_attempt_at = $2,
                backoff_interval_ms = NULL, lease_expires_at = NULL, updated_at = $2
             WHERE state = $1",
        )
        .bind(state.as_str())
        .bind(self.now())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn stats(&self, at_risk_within: Duration) -> Result<QueueStats, QueueError> {
        let now = self.now();
        let horizon = now.saturating_add(millis(at_risk_within));
        let mut stats = QueueStats::empty();
        // One consistent snapshot for all three answers.
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        // Counted, not kept in a counter table: a (account, state) counter
        // row would be updated by every transition of every replica and
        // serialise them all on its row lock.
        let counts =
            sqlx::query("SELECT account, state, COUNT(*) AS n FROM jobs GROUP BY account, state")
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        for row in counts {
            let account: String = row.try_get(0).map_err(db)?;
            let state: String = row.try_get(1).map_err(db)?;
            stats.add(account, state, row.try_get(2).map_err(db)?);
        }
        // `due_at IS NOT NULL` is exactly "pending, leased or waiting".
        let row = sqlx::query(
            "SELECT (SELECT MIN(created_at) FROM jobs WHERE state = 'pending'),
                    (SELECT COUNT(*) FROM jobs WHERE due_at IS NOT NULL AND deadline <= $1)",
        )
        .bind(horizon)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        stats.oldest_pending = row.try_get(0).map_err(db)?;
        stats.at_risk = row.try_get::<i64, _>(1).map_err(db)?.max(0).unsigned_abs();
        tx.commit().await.map_err(db)?;
        Ok(stats)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if self.enqueues.is_closed() {
            return Err(stopped());
        }
        Ok(())
    }
}

fn stopped() -> QueueError {
    QueueError::Unavailable("the queue's enqueue tasks have stopped".to_owned())
}

// ---------------------------------------------------------------------------
// Group commit.

struct EnqueueRequest {
    jobs: Vec<JobSpec>,
    reply: oneshot::Sender<Result<Vec<Enqueued>, QueueError>>,
}

/// Takes every request waiting in the channel (up to [`MAX_GROUP`]) and
/// commits them in one transaction; stops when the queue is dropped.
async fn batcher(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    receiver: Arc<Mutex<mpsc::Receiver<EnqueueRequest>>>,
    commits: Arc<AtomicU64>,
) {
    loop {
        let group = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return; // every sender dropped: the queue was dropped
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            group
        };
        let now = clock.now_ms();
        match insert_group(&pool, &group, now).await {
            Ok(outcomes) => {
                let n = commits.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::trace!(
                    requests = group.len(),
                    commits = n,
                    "enqueue group committed"
                );
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                // Nothing of the group was committed; every caller hears so.
                tracing::warn!(error = %e, requests = group.len(), "enqueue failed");
                let message = e.to_string();
                for request in group {
                    let _ = request
                        .reply
                        .send(Err(QueueError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// Inserts or revives every job of a group in one transaction and says, per
/// request and job, whether it was new.
async fn insert_group(
    pool: &PgPool,
    group: &[EnqueueRequest],
    now: UnixMillis,
) -> Result<Vec<Vec<Enqueued>>, QueueError> {
    // The first occurrence of an id in the group is the one that may be
    // new; later ones are duplicates of it.
    let mut first: HashMap<&str, (usize, usize)> = HashMap::new();
    for (r, request) in group.iter().enumerate() {
        for (j, job) in request.jobs.iter().enumerate() {
            first.entry(job.id.as_str()).or_insert((r, j));
        }
    }
    let mut unique: Vec<&JobSpec> = first.values().map(|&(r, j)| &group[r].jobs[j]).collect();
    // One lock order for every inserter: no deadlock between replicas.
    unique.sort_by(|a, b| a.id.cmp(&b.id));

    let mut ids = Vec::with_capacity(unique.len());
    let mut accounts = Vec::with_capacity(unique.len());
    let mut providers = Vec::with_capacity(unique.len());
    let mut deadlines = Vec::with_capacity(unique.len());
    let mut message_ids = Vec::with_capacity(unique.len());
    let mut media_ids: Vec<Option<&str>> = Vec::with_capacity(unique.len());
    let mut message_ats = Vec::with_capacity(unique.len());
    let mut payloads = Vec::with_capacity(unique.len());
    for job in &unique {
        ids.push(job.id.as_str());
        accounts.push(job.account.as_str());
        providers.push(job.provider.as_str());
        deadlines.push(job.deadline);
        message_ids.push(job.message_id.as_str());
        media_ids.push(job.media_id.as_deref());
        message_ats.push(job.message_at);
        payloads.push(job.payload.to_string());
    }

    let mut tx = pool.begin().await.map_err(db)?;
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO jobs (id, account, provider, state, attempts, deadline, next_attempt_at,
            created_at, updated_at, message_id, media_id, message_at, payload)
         SELECT u.id, u.account, u.provider, 'pending', 0, u.deadline, $1, $1, $1,
            u.message_id, u.media_id, u.message_at, u.payload
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[],
                     $8::int8[], $9::text[])
              AS u(id, account, provider, deadline, message_id, media_id, message_at, payload)
         ORDER BY u.id
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(now)
    .bind(&ids)
    .bind(&accounts)
    .bind(&providers)
    .bind(&deadlines)
    .bind(&message_ids)
    .bind(&media_ids)
    .bind(&message_ats)
    .bind(&payloads)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let inserted: HashSet<String> = inserted.into_iter().collect();

    let existing: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !inserted.contains(*id))
        .collect();
    if !existing.is_empty() {
        // A dedup entry never blocks the retry of a failed job.
        let revived = sqlx::query(
            "UPDATE jobs SET state = 'pending', attempts = 0, backoff_interval_ms = NULL,
                next_attempt_at = $2, lease_expires_at = NULL, updated_at = $2
             WHERE id = ANY($1) AND state = 'dead'
             RETURNING id, account",
        )
        .bind(&existing)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for row in revived {
            let job_id: String = row.try_get(0).map_err(db)?;
            let account: String = row.try_get(1).map_err(db)?;
            log_revived(&job_id, &account);
        }
    }
    tx.commit().await.map_err(db)?;

    Ok(group
        .iter()
        .enumerate()
        .map(|(r, request)| {
            request
                .jobs
                .iter()
                .enumerate()
                .map(|(j, job)| {
                    let is_first = first.get(job.id.as_str()) == Some(&(r, j));
                    if is_first && inserted.contains(&job.id) {
                        Enqueued::New
                    } else {
                        Enqueued::Duplicate
                    }
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_without_connecting_and_never_show_the_url() {
        let good = PgOptions::new("postgres://app:s3cret@db.internal:5432/media");
        assert_eq!(good.validate(), Ok(()));
        let debug = format!("{good:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains("db.internal"), "{debug}");

        let bad = PgOptions {
            url: Secret::new("mysql://root:hunter2@x/y"),
            max_connections: 1,
            schema: Some("Bad-Name".into()),
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("url"), "{err}");
        assert!(err.contains("max_connections"), "{err}");
        assert!(err.contains("schema"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["media_archiver", "_q", "q1", &"a".repeat(63)] {
            assert!(valid_identifier(ok), "{ok}");
        }
        for bad in ["", "1q", "Q", "a-b", "a\"; DROP", &"a".repeat(64)] {
            assert!(!valid_identifier(bad), "{bad}");
        }
    }
}
