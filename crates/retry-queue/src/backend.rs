//! What the SQLite and PostgreSQL backends share: the row shape they read,
//! their batch bounds, how times and reasons are stored, and the log events
//! the queue itself writes.
//!
//! The two backends store the same columns with the same meaning (the crate
//! docs document the schema), so anything about a stored value, as opposed
//! to how a database is driven, is written here once and both use it.

use std::collections::BTreeMap;
use std::time::Duration;

use archiver_core::JobState;

use crate::{JobRecord, QueueStats};

/// Columns read into a [`JobRecord`] (plus the lease token), in this order.
pub(crate) const COLUMNS: &str = "id, account, provider, state, attempts, deadline, next_attempt_at, \
     last_error, created_at, updated_at, message_id, media_id, message_at, payload, lease_token";

/// Enqueue requests waiting to be committed; senders wait when it is full.
pub(crate) const CHANNEL_CAPACITY: usize = 1024;
/// Most enqueue requests committed in one transaction (group commit).
pub(crate) const MAX_GROUP: usize = 256;
/// Most jobs handed out by one `lease` call.
pub(crate) const MAX_LEASE_BATCH: usize = 1000;

/// The dead-letter reason `lease` stores for a ready job past its deadline;
/// `; last error: ...` follows when the job had failed before.
pub(crate) const EXPIRED_IN_QUEUE: &str = "expired: the deadline passed before the job could run";

/// Whole milliseconds, rounded up (a wait is never shortened), saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX)
}

/// A stored `backoff_interval_ms` as a duration (a negative one, never
/// written, reads as zero and is clamped by the backoff).
pub(crate) fn stored_interval(ms: Option<i64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs()))
}

/// A stored lease token as issued: tokens start at 0 and only grow, so a
/// negative one is never read.
pub(crate) fn issued_token(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or_default()
}

/// Logs a job that `lease` hands out again because its previous lease lapsed
/// without an outcome (the job is not at an end, so the worker reports it
/// no transition).
pub(crate) fn log_lapsed_lease(job: &JobRecord) {
    tracing::info!(
        job_id = job.id,
        account = job.account,
        attempts = job.attempts,
        "lease expired without an outcome (worker gone?); job leased again"
    );
}

/// Logs a dead job that an enqueue brought back to pending.
pub(crate) fn log_revived(job_id: &str, account: &str) {
    tracing::info!(
        job_id,
        account,
        outcome = "revived",
        "dead job enqueued again; back to pending"
    );
}

/// The state a job imported from another backend gets: its own, except
/// that a leased job's worker is gone, so it arrives pending.
pub(crate) fn imported_state(state: JobState) -> JobState {
    match state {
        JobState::Leased => JobState::Pending,
        state => state,
    }
}

/// Counts per state, every state present.
fn zeroes() -> BTreeMap<String, u64> {
    JobState::ALL
        .iter()
        .map(|state| (state.as_str().to_owned(), 0))
        .collect()
}

impl QueueStats {
    /// No jobs: every state present with 0.
    pub(crate) fn empty() -> Self {
        Self {
            by_state: zeroes(),
            ..Self::default()
        }
    }

    /// Adds `n` jobs of `account` in `state` (a negative count, never
    /// stored, adds nothing).
    pub(crate) fn add(&mut self, account: String, state: String, n: i64) {
        let n = n.max(0).unsigned_abs();
        *self.by_state.entry(state.clone()).or_default() += n;
        *self
            .by_account
            .entry(account)
            .or_insert_with(zeroes)
            .entry(state)
            .or_default() += n;
    }
}
