//! What the admin API and the metrics read, and the admin requeues: get,
//! list, retry now, stats, ping.

use std::time::Duration;

use archiver_core::JobState;
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::row::read_job;
use super::thread::{Store, StoreResult};
use crate::backend::{COLUMNS, millis};
use crate::{JobFilter, JobRecord, QueueStats};

impl Store {
    pub(super) fn get(&mut self, job_id: &str) -> StoreResult<Option<JobRecord>> {
        let found = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?
            .query_row(params![job_id], read_job)
            .optional()?;
        Ok(found.map(|stored| stored.job))
    }

    pub(super) fn list(&mut self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>> {
        let (sql, args) = list_sql(filter);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let jobs = stmt
            .query_map(params_from_iter(args), read_job)?
            .map(|row| row.map(|stored| stored.job))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(jobs)
    }

    pub(super) fn retry_now(&mut self, job_id: &str) -> StoreResult<bool> {
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

    pub(super) fn retry_all(&mut self, state: JobState) -> StoreResult<u64> {
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

    pub(super) fn stats(&mut self, at_risk_within: Duration) -> StoreResult<QueueStats> {
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

    pub(super) fn ping(&mut self) -> StoreResult<()> {
        self.conn
            .prepare_cached("SELECT 1")?
            .query_row([], |row| row.get::<_, i64>(0))?;
        Ok(())
    }
}

/// The query behind [`JobQueue::list`](crate::JobQueue::list) and its arguments.
///
/// By message id, the candidates are the jobs in the (partial) message
/// index plus, for each account, the job whose id is `{account}:{message
/// id}` (found by primary key; every account with jobs has `job_counts`
/// rows), and only those few are sorted.
pub(super) fn list_sql(filter: &JobFilter) -> (String, Vec<Value>) {
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
