//! A job's life under a lease: handing ready jobs out (and dead-lettering
//! those past their deadline), then renew, complete, fail, park, wake and
//! release, each checked against the lease's fencing token.

use std::time::Duration;

use archiver_core::{ErrorClass, JobState, UnixMillis};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::row::{StoredJob, read_job};
use super::thread::{Store, StoreError, StoreResult};
use crate::backend::{
    COLUMNS, EXPIRED_IN_QUEUE, MAX_LEASE_BATCH, issued_token, log_lapsed_lease, millis,
};
use crate::retry::{self, Stored};
use crate::{Disposition, Lease, Leased, QueueError};

/// What a lease call needs to prove it still holds the job.
pub(super) struct Held {
    job_id: String,
    token: u64,
}

impl Held {
    pub(super) fn of(lease: &Lease) -> Self {
        Self {
            job_id: lease.job.id.clone(),
            token: lease.token,
        }
    }

    /// The job the lease is for.
    pub(super) fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The token as stored; a token that does not fit was never issued.
    pub(super) fn token(&self) -> StoreResult<i64> {
        i64::try_from(self.token).map_err(|_| self.lost())
    }

    pub(super) fn lost(&self) -> StoreError {
        QueueError::LeaseLost {
            job_id: self.job_id.clone(),
        }
        .into()
    }
}

impl Store {
    pub(super) fn lease(&mut self, max: usize, lease_for: Duration) -> StoreResult<Leased> {
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
    pub(super) fn update_held(
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

    pub(super) fn renew(&mut self, held: &Held, lease_for: Duration) -> StoreResult<UnixMillis> {
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

    pub(super) fn complete(&mut self, held: &Held) -> StoreResult<()> {
        let now = self.now();
        self.update_held(
            held,
            "UPDATE jobs SET state = 'done', lease_expires_at = NULL, updated_at = ?3
             WHERE id = ?1 AND state = 'leased' AND lease_token = ?2",
            params![held.job_id, held.token()?, now],
        )
    }

    pub(super) fn park(&mut self, held: &Held, until: UnixMillis) -> StoreResult<()> {
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

    pub(super) fn release(&mut self, held: &Held) -> StoreResult<()> {
        let now = self.now();
        self.update_held(
            held,
            "UPDATE jobs SET state = 'pending', next_attempt_at = ?3,
                attempts = MAX(attempts - 1, 0), lease_expires_at = NULL, updated_at = ?3
             WHERE id = ?1 AND state = 'leased' AND lease_token = ?2",
            params![held.job_id, held.token()?, now],
        )
    }

    pub(super) fn fail(
        &mut self,
        held: &Held,
        class: ErrorClass,
        error: &str,
    ) -> StoreResult<Disposition> {
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
                Ok(Stored {
                    deadline: row.get(0)?,
                    backoff_interval_ms: row.get(1)?,
                })
            })
            .optional()?;
        let Some(stored) = found else {
            return Err(held.lost());
        };

        let decision = retry::decide(&self.policy, class, error, now, stored);
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

    pub(super) fn wake(&mut self, job_id: &str, note: Option<&str>) -> StoreResult<bool> {
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
}
