//! What the admin API and the metrics read, and the admin requeues: get,
//! list, retry now, stats, ping.

use std::time::Duration;

use archiver_core::JobState;
use sqlx::Row;

use super::row::{db, read_job};
use super::{PgQueue, stopped};
use crate::backend::{COLUMNS, imported_state, millis};
use crate::{JobFilter, JobRecord, MigratedJob, QueueError, QueueStats};

pub(super) async fn get(queue: &PgQueue, job_id: &str) -> Result<Option<JobRecord>, QueueError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(job_id)
        .fetch_optional(&queue.pool)
        .await
        .map_err(db)?;
    row.as_ref()
        .map(read_job)
        .transpose()
        .map(|found| found.map(|(job, _)| job))
}

pub(super) async fn list(
    queue: &PgQueue,
    filter: &JobFilter,
) -> Result<Vec<JobRecord>, QueueError> {
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
    let rows = query.bind(limit).fetch_all(&queue.pool).await.map_err(db)?;
    rows.iter()
        .map(|row| read_job(row).map(|(job, _)| job))
        .collect()
}

pub(super) async fn retry_now(queue: &PgQueue, job_id: &str) -> Result<bool, QueueError> {
    let done = sqlx::query(
        "UPDATE jobs SET state = 'pending', next_attempt_at = $2,
            backoff_interval_ms = NULL, lease_expires_at = NULL, updated_at = $2
         WHERE id = $1 AND state IN ('dead', 'pending', 'waiting')",
    )
    .bind(job_id)
    .bind(queue.now())
    .execute(&queue.pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn retry_all(queue: &PgQueue, state: JobState) -> Result<u64, QueueError> {
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
    .bind(queue.now())
    .execute(&queue.pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

pub(super) async fn stats(
    queue: &PgQueue,
    at_risk_within: Duration,
) -> Result<QueueStats, QueueError> {
    let now = queue.now();
    let horizon = now.saturating_add(millis(at_risk_within));
    let mut stats = QueueStats::empty();
    // One consistent snapshot for all three answers.
    let mut tx = queue.pool.begin().await.map_err(db)?;
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

pub(super) async fn ping(queue: &PgQueue) -> Result<(), QueueError> {
    sqlx::query("SELECT 1")
        .execute(&queue.pool)
        .await
        .map_err(db)?;
    if queue.enqueues.is_closed() {
        return Err(stopped());
    }
    Ok(())
}

pub(super) async fn export_jobs(
    queue: &PgQueue,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<MigratedJob>, QueueError> {
    // Two statements, so that each page is a seek on the primary key.
    let after_clause = if after.is_some() {
        "WHERE id > $1"
    } else {
        "WHERE $1::TEXT IS NULL"
    };
    let sql = format!(
        "SELECT {COLUMNS}, chat_id, backoff_interval_ms FROM jobs
         {after_clause} ORDER BY id LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&queue.pool)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|row| {
            Ok(MigratedJob {
                job: read_job(row)?.0,
                chat_id: row.try_get("chat_id").map_err(db)?,
                backoff_interval_ms: row.try_get("backoff_interval_ms").map_err(db)?,
            })
        })
        .collect()
}

pub(super) async fn import_jobs(queue: &PgQueue, jobs: &[MigratedJob]) -> Result<u64, QueueError> {
    let mut tx = queue.pool.begin().await.map_err(db)?;
    let mut new = 0;
    for MigratedJob {
        job,
        chat_id,
        backoff_interval_ms,
    } in jobs
    {
        let attempts = i32::try_from(job.attempts).unwrap_or(i32::MAX);
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, account, provider, state, attempts, deadline,
                next_attempt_at, backoff_interval_ms, last_error, created_at, updated_at,
                message_id, media_id, message_at, payload, chat_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.account)
        .bind(job.provider.as_str())
        .bind(imported_state(job.state).as_str())
        .bind(attempts)
        .bind(job.deadline)
        .bind(job.next_attempt_at)
        .bind(backoff_interval_ms)
        .bind(&job.last_error)
        .bind(job.created_at)
        .bind(job.updated_at)
        .bind(&job.message_id)
        .bind(&job.media_id)
        .bind(job.message_at)
        .bind(job.payload.to_string())
        .bind(chat_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        new += inserted.rows_affected();
    }
    tx.commit().await.map_err(db)?;
    Ok(new)
}
