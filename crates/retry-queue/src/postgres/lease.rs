//! A job's life under a lease: handing ready jobs out (and dead-lettering
//! those past their deadline) with `FOR UPDATE SKIP LOCKED`, then renew,
//! complete, fail, park, wake and release, each one statement (or one
//! transaction) that only matches while the lease's fencing token holds.

use std::time::Duration;

use archiver_core::{ErrorClass, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::PgQueue;
use super::row::{db, read_job};
use crate::backend::{
    COLUMNS, EXPIRED_IN_QUEUE, MAX_LEASE_BATCH, issued_token, log_lapsed_lease, millis,
};
use crate::retry::{self, Stored};
use crate::{Disposition, Lease, Leased, QueueError};

/// Runs a one-statement update that only matches while `lease` still
/// holds the job; `LeaseLost` if it changed nothing.
pub(super) async fn update_held(
    pool: &PgPool,
    lease: &Lease,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<(), QueueError> {
    let done = query.execute(pool).await.map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(lost(lease));
    }
    Ok(())
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

pub(super) async fn lease(
    queue: &PgQueue,
    max: usize,
    lease_for: Duration,
) -> Result<Leased, QueueError> {
    if max == 0 {
        return Ok(Leased::default());
    }
    let now = queue.now();
    let expires_at = now.saturating_add(millis(lease_for));
    let limit = i64::try_from(max.min(MAX_LEASE_BATCH)).unwrap_or(1);

    // Ready but past the deadline: the provider has forgotten the file, so
    // dead-letter it instead of handing it out, and report it to the
    // caller. Ordered and bounded so the planner walks `jobs_ready` from
    // its start even before the table has statistics (unbounded, it chose a
    // sequential scan of the whole table after a bulk load: lease cost grew
    // with the backlog); any rest is expired by the next calls, and the
    // lease below never hands out a job past its deadline meanwhile.
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
        .fetch_all(&queue.pool)
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
    .fetch_all(&queue.pool)
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

pub(super) async fn renew(
    queue: &PgQueue,
    lease: &Lease,
    lease_for: Duration,
) -> Result<UnixMillis, QueueError> {
    let now = queue.now();
    let expires_at = now.saturating_add(millis(lease_for));
    update_held(
        &queue.pool,
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

pub(super) async fn complete(queue: &PgQueue, lease: &Lease) -> Result<(), QueueError> {
    update_held(
        &queue.pool,
        lease,
        sqlx::query(
            "UPDATE jobs SET state = 'done', lease_expires_at = NULL, updated_at = $3
             WHERE id = $1 AND state = 'leased' AND lease_token = $2",
        )
        .bind(&lease.job.id)
        .bind(token(lease)?)
        .bind(queue.now()),
    )
    .await
}

pub(super) async fn fail(
    queue: &PgQueue,
    lease: &Lease,
    class: ErrorClass,
    error: &str,
) -> Result<Disposition, QueueError> {
    let now = queue.now();
    let held_token = token(lease)?;
    let mut tx = queue.pool.begin().await.map_err(db)?;
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
    let stored = Stored {
        deadline: found.try_get(0).map_err(db)?,
        backoff_interval_ms: found.try_get(1).map_err(db)?,
    };
    let decision = retry::decide(&queue.policy, class, error, now, stored);
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

pub(super) async fn park(
    queue: &PgQueue,
    lease: &Lease,
    until: UnixMillis,
) -> Result<(), QueueError> {
    update_held(
        &queue.pool,
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
        .bind(queue.now()),
    )
    .await
}

pub(super) async fn wake(
    queue: &PgQueue,
    job_id: &str,
    note: Option<&str>,
) -> Result<bool, QueueError> {
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
    .bind(queue.now())
    .bind(note)
    .execute(&queue.pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn release(queue: &PgQueue, lease: &Lease) -> Result<(), QueueError> {
    update_held(
        &queue.pool,
        lease,
        sqlx::query(
            "UPDATE jobs SET state = 'pending', next_attempt_at = $3,
                attempts = GREATEST(attempts - 1, 0), lease_expires_at = NULL, updated_at = $3
             WHERE id = $1 AND state = 'leased' AND lease_token = $2",
        )
        .bind(&lease.job.id)
        .bind(token(lease)?)
        .bind(queue.now()),
    )
    .await
}
