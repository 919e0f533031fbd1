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

/// A dead-letter `reason`, with `; last error: ...` when there was one
/// (how SQL spells it: `reason || COALESCE('; last error: ' || last_error, '')`).
#[cfg(feature = "fjall")]
pub(crate) fn with_last_error(reason: &str, last_error: Option<&str>) -> String {
    match last_error {
        Some(last) => format!("{reason}; last error: {last}"),
        None => reason.to_owned(),
    }
}

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

/// The trait impls of a backend whose every operation runs on the one
/// thread that owns its `Store` (SQLite, fjall), written once: each method
/// moves its arguments into a closure for the backend's `call`, which runs
/// it on the thread and awaits the answer (sent once the commit is
/// durable). The backend provides `call`, `enqueue_jobs` (each batches
/// enqueues its own way), a `Held` with `Held::of(&Lease)`, and on its
/// `Store` one method per operation, named after it.
#[cfg(any(feature = "sqlite", feature = "fjall"))]
macro_rules! thread_queue_impls {
    ($queue:ty) => {
        #[async_trait::async_trait]
        impl $crate::JobQueue for $queue {
            async fn enqueue(
                &self,
                jobs: Vec<$crate::JobSpec>,
            ) -> Result<Vec<$crate::Enqueued>, $crate::QueueError> {
                if jobs.is_empty() {
                    return Ok(Vec::new());
                }
                self.enqueue_jobs(jobs).await
            }

            async fn lease(
                &self,
                max: usize,
                lease_for: std::time::Duration,
            ) -> Result<$crate::Leased, $crate::QueueError> {
                if max == 0 {
                    return Ok($crate::Leased::default());
                }
                self.call(move |store| store.lease(max, lease_for)).await
            }

            async fn renew(
                &self,
                lease: &$crate::Lease,
                lease_for: std::time::Duration,
            ) -> Result<$crate::UnixMillis, $crate::QueueError> {
                let held = Held::of(lease);
                self.call(move |store| store.renew(&held, lease_for)).await
            }

            async fn complete(&self, lease: &$crate::Lease) -> Result<(), $crate::QueueError> {
                let held = Held::of(lease);
                self.call(move |store| store.complete(&held)).await
            }

            async fn fail(
                &self,
                lease: &$crate::Lease,
                class: $crate::ErrorClass,
                error: &str,
            ) -> Result<$crate::Disposition, $crate::QueueError> {
                let (held, error) = (Held::of(lease), error.to_owned());
                self.call(move |store| store.fail(&held, class, &error))
                    .await
            }

            async fn park(
                &self,
                lease: &$crate::Lease,
                until: $crate::UnixMillis,
            ) -> Result<(), $crate::QueueError> {
                let held = Held::of(lease);
                self.call(move |store| store.park(&held, until)).await
            }

            async fn wake(
                &self,
                job_id: &str,
                note: Option<&str>,
            ) -> Result<bool, $crate::QueueError> {
                let (id, note) = (job_id.to_owned(), note.map(str::to_owned));
                self.call(move |store| store.wake(&id, note.as_deref()))
                    .await
            }

            async fn release(&self, lease: &$crate::Lease) -> Result<(), $crate::QueueError> {
                let held = Held::of(lease);
                self.call(move |store| store.release(&held)).await
            }

            async fn get(
                &self,
                job_id: &str,
            ) -> Result<Option<$crate::JobRecord>, $crate::QueueError> {
                let id = job_id.to_owned();
                self.call(move |store| store.get(&id)).await
            }

            async fn list(
                &self,
                filter: &$crate::JobFilter,
            ) -> Result<Vec<$crate::JobRecord>, $crate::QueueError> {
                let filter = filter.clone();
                self.call(move |store| store.list(&filter)).await
            }

            async fn retry_now(&self, job_id: &str) -> Result<bool, $crate::QueueError> {
                let id = job_id.to_owned();
                self.call(move |store| store.retry_now(&id)).await
            }

            async fn retry_all(&self, state: $crate::JobState) -> Result<u64, $crate::QueueError> {
                self.call(move |store| store.retry_all(state)).await
            }

            async fn stats(
                &self,
                at_risk_within: std::time::Duration,
            ) -> Result<$crate::QueueStats, $crate::QueueError> {
                self.call(move |store| store.stats(at_risk_within)).await
            }

            async fn ping(&self) -> Result<(), $crate::QueueError> {
                self.call(|store| store.ping()).await
            }

            async fn export_jobs(
                &self,
                after: Option<&str>,
                limit: usize,
            ) -> Result<Vec<$crate::MigratedJob>, $crate::QueueError> {
                let after = after.map(str::to_owned);
                self.call(move |store| store.export_jobs(after.as_deref(), limit))
                    .await
            }

            async fn import_jobs(
                &self,
                jobs: Vec<$crate::MigratedJob>,
            ) -> Result<u64, $crate::QueueError> {
                self.call(move |store| store.import_jobs(&jobs)).await
            }

            fn outbox(&self) -> Option<&dyn $crate::Outbox> {
                Some(self)
            }

            fn erasures(&self) -> Option<&dyn $crate::Erasures> {
                Some(self)
            }
        }

        #[async_trait::async_trait]
        impl $crate::Outbox for $queue {
            async fn set_routes(
                &self,
                routes: &[$crate::Route],
            ) -> Result<u64, $crate::QueueError> {
                let routes = routes.to_vec();
                self.call(move |store| store.set_routes(&routes)).await
            }

            async fn claim_deliveries(
                &self,
                target: &str,
                max: usize,
                hold: std::time::Duration,
            ) -> Result<$crate::Claimed, $crate::QueueError> {
                if max == 0 {
                    return Ok($crate::Claimed::default());
                }
                let target = target.to_owned();
                self.call(move |store| store.claim_deliveries(&target, max, hold))
                    .await
            }

            async fn delivered(&self, claim: &$crate::Delivery) -> Result<(), $crate::QueueError> {
                let claim = claim.clone();
                self.call(move |store| store.delivered(&claim)).await
            }

            async fn delivery_failed(
                &self,
                claim: &$crate::Delivery,
                class: $crate::ErrorClass,
                error: &str,
            ) -> Result<$crate::Disposition, $crate::QueueError> {
                let (claim, error) = (claim.clone(), error.to_owned());
                self.call(move |store| store.delivery_failed(&claim, class, &error))
                    .await
            }

            async fn list_deliveries(
                &self,
                filter: &$crate::DeliveryFilter,
            ) -> Result<Vec<$crate::Delivery>, $crate::QueueError> {
                let filter = filter.clone();
                self.call(move |store| store.list_deliveries(&filter)).await
            }

            async fn retry_delivery(
                &self,
                id: &str,
            ) -> Result<$crate::Retried, $crate::QueueError> {
                let id = id.to_owned();
                self.call(move |store| store.retry_delivery(&id)).await
            }

            async fn pending_deliveries(
                &self,
            ) -> Result<std::collections::BTreeMap<String, u64>, $crate::QueueError> {
                self.call(|store| store.pending_deliveries()).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::Erasures for $queue {
            async fn record_ref(
                &self,
                lease: &$crate::Lease,
                blob: &$crate::BlobRef,
            ) -> Result<(), $crate::QueueError> {
                let (held, blob) = (Held::of(lease), blob.clone());
                self.call(move |store| store.record_ref(&held, &blob)).await
            }

            async fn restore_refs(
                &self,
                refs: &[$crate::BlobRef],
            ) -> Result<(), $crate::QueueError> {
                let refs = refs.to_vec();
                self.call(move |store| store.restore_refs(&refs)).await
            }

            async fn index_complete(&self, store_id: &str) -> Result<bool, $crate::QueueError> {
                let store_id = store_id.to_owned();
                self.call(move |store| store.index_complete(&store_id))
                    .await
            }

            async fn mark_index_complete(&self, store_id: &str) -> Result<(), $crate::QueueError> {
                let store_id = store_id.to_owned();
                self.call(move |store| store.mark_index_complete(&store_id))
                    .await
            }

            async fn plan_erasure(
                &self,
                store_id: &str,
                filter: &$crate::ErasureFilter,
                dry_run: bool,
            ) -> Result<Result<$crate::ErasurePlan, $crate::ErasureRefused>, $crate::QueueError>
            {
                let (store_id, filter) = (store_id.to_owned(), filter.clone());
                self.call(move |store| store.plan_erasure(&store_id, &filter, dry_run))
                    .await
            }

            async fn commit_erasure(
                &self,
                store_id: &str,
                account: &str,
                messages: &[$crate::ErasedMessage],
            ) -> Result<$crate::CommittedErasure, $crate::QueueError> {
                let (store_id, account, messages) =
                    (store_id.to_owned(), account.to_owned(), messages.to_vec());
                self.call(move |store| store.commit_erasure(&store_id, &account, &messages))
                    .await
            }

            async fn confirm_blob_erasure(
                &self,
                store_id: &str,
                blob_key: &str,
            ) -> Result<bool, $crate::QueueError> {
                let (store_id, blob_key) = (store_id.to_owned(), blob_key.to_owned());
                self.call(move |store| store.confirm_blob_erasure(&store_id, &blob_key))
                    .await
            }

            async fn end_blob_erasure(
                &self,
                store_id: &str,
                blob_key: &str,
            ) -> Result<(), $crate::QueueError> {
                let (store_id, blob_key) = (store_id.to_owned(), blob_key.to_owned());
                self.call(move |store| store.end_blob_erasure(&store_id, &blob_key))
                    .await
            }

            async fn unfinished_blob_erasures(
                &self,
                store_id: &str,
            ) -> Result<Vec<String>, $crate::QueueError> {
                let store_id = store_id.to_owned();
                self.call(move |store| store.unfinished_blob_erasures(&store_id))
                    .await
            }

            async fn export_refs(
                &self,
                after: Option<&$crate::BlobRef>,
                limit: usize,
            ) -> Result<Vec<$crate::BlobRef>, $crate::QueueError> {
                let after = after.cloned();
                self.call(move |store| store.export_refs(after.as_ref(), limit))
                    .await
            }

            async fn complete_indexes(&self) -> Result<Vec<String>, $crate::QueueError> {
                self.call(|store| store.complete_indexes()).await
            }
        }
    };
}
#[cfg(any(feature = "sqlite", feature = "fjall"))]
pub(crate) use thread_queue_impls;
