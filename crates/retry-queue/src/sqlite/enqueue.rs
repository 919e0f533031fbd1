//! Group commit: every enqueue waiting in the channel is inserted (or, for a
//! dead duplicate, revived) in one transaction, and new jobs are counted
//! into `job_counts` once per account and group.

use std::collections::BTreeMap;

use archiver_core::UnixMillis;
use rusqlite::{Connection, TransactionBehavior, params};

use super::not_durable;
use super::thread::{EnqueueRequest, Store};
use super::wal_sync::Answer;
use crate::backend::log_revived;
use crate::{Enqueued, QueueError};

impl Store {
    /// Commits a group; the answer tells each request its outcomes.
    pub(super) fn enqueue_group(&mut self, group: Vec<EnqueueRequest>) -> Answer {
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
}

/// Inserts or revives every job of a group in one transaction.
pub(super) fn insert_group(
    conn: &mut Connection,
    group: &[EnqueueRequest],
    now: UnixMillis,
) -> rusqlite::Result<Vec<Vec<Enqueued>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(group.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO jobs (id, account, provider, state, attempts, deadline, next_attempt_at,
                created_at, updated_at, message_id, media_id, message_at, payload, chat_id)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?5, ?5, ?6, ?7, ?8, ?9, ?10)
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
                    job.chat_id,
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
