//! What the admin API and the metrics read, and the admin requeues: get,
//! list, retry now, stats, ping.

use std::time::Duration;

use archiver_core::JobState;
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, TransactionBehavior, params, params_from_iter};

use super::row::read_job;
use super::thread::{Store, StoreResult};
use crate::backend::{COLUMNS, imported_state, millis};
use crate::{JobFilter, JobRecord, MigratedJob, QueueStats};

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

    pub(super) fn export_jobs(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<MigratedJob>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Two statements, so that each page is a seek on the primary key
        // (an `OR` would make it a scan).
        let after_clause = if after.is_some() {
            "WHERE id > ?1"
        } else {
            "WHERE ?1 IS NULL"
        };
        let jobs = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, chat_id, backoff_interval_ms FROM jobs
                 {after_clause} ORDER BY id LIMIT ?2"
            ))?
            .query_map(params![after, limit], |row| {
                Ok(MigratedJob {
                    job: read_job(row)?.job,
                    chat_id: row.get(15)?,
                    backoff_interval_ms: row.get(16)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(jobs)
    }

    pub(super) fn import_jobs(&mut self, jobs: &[MigratedJob]) -> StoreResult<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut new = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO jobs (id, account, provider, state, attempts, deadline,
                    next_attempt_at, backoff_interval_ms, last_error, created_at, updated_at,
                    message_id, media_id, message_at, payload, chat_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT (id) DO NOTHING",
            )?;
            // Inserts are counted by the writer, not by a trigger (schema v3).
            let mut count = tx.prepare_cached(
                "INSERT INTO job_counts (account, state, n) VALUES (?1, ?2, 1)
                 ON CONFLICT (account, state) DO UPDATE SET n = n + 1",
            )?;
            for MigratedJob {
                job,
                chat_id,
                backoff_interval_ms,
            } in jobs
            {
                let state = imported_state(job.state).as_str();
                let inserted = insert.execute(params![
                    job.id,
                    job.account,
                    job.provider.as_str(),
                    state,
                    job.attempts,
                    job.deadline,
                    job.next_attempt_at,
                    backoff_interval_ms,
                    job.last_error,
                    job.created_at,
                    job.updated_at,
                    job.message_id,
                    job.media_id,
                    job.message_at,
                    job.payload.to_string(),
                    chat_id,
                ])?;
                if inserted > 0 {
                    count.execute(params![job.account, state])?;
                    new += 1;
                }
            }
        }
        tx.commit()?;
        Ok(new)
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
