use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use archiver_core::{Classify, Clock};
use media_fetch::Fetcher;
use providers::Provider;
use retry_queue::{Disposition, JobQueue, JobRecord, Lease};
use s3_uploader::Archives;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WorkerConfig;
use crate::job::{Attempt, Attempted, BlobIndex, JobError};
use crate::telemetry::{self, Outcome};

/// The `dead_total{reason}` label of a job whose deadline passed: its next
/// retry would have fallen after it, or it passed while the job waited.
const EXPIRED: &str = "expired";

/// What a worker runs jobs through: the queue it leases from, the stages of
/// an attempt, and the process's one clock (the binary gives the queue and
/// the adapters the same one).
#[derive(Debug)]
pub struct Stages {
    /// Where jobs are leased from and their outcomes recorded.
    pub queue: Arc<dyn JobQueue>,
    /// One adapter per configured account, by account name.
    pub providers: HashMap<String, Arc<dyn Provider>>,
    /// Downloads into the spool.
    pub fetcher: Fetcher,
    /// Each account's archive (store and layout): the global one, or the
    /// account's own.
    pub archives: Archives,
    /// Every wall-clock time the worker writes or compares with a stored
    /// time (park timeouts, `archived_at`, webhook-to-archive latency).
    pub clock: Arc<dyn Clock>,
}

/// Runs jobs from the queue until shut down.
#[derive(Debug)]
pub struct Worker {
    stages: Stages,
    config: WorkerConfig,
    new_work: Arc<Notify>,
}

impl Worker {
    /// A worker over these stages.
    pub fn new(stages: Stages, config: WorkerConfig) -> Self {
        Self {
            stages,
            config,
            new_work: Arc::new(Notify::new()),
        }
    }

    /// A handle the receiver pokes after enqueueing, so new jobs start at
    /// once instead of at the next idle poll.
    pub fn new_work_signal(&self) -> Arc<Notify> {
        self.new_work.clone()
    }

    /// Leases and runs jobs until `shutdown` is cancelled, then drains: jobs
    /// in flight get `shutdown_grace` to finish, the rest are cancelled and
    /// their leases released.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        while !shutdown.is_cancelled() {
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permit = permits.clone().acquire_owned() => { drop(permit); continue; }
                }
            }
            let leases = match self.stages.queue.lease(free, self.config.lease).await {
                Ok(leased) => {
                    report_expired(&leased.expired);
                    leased.leases
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot lease jobs; retrying shortly");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.config.idle_poll) => continue,
                    }
                }
            };
            if leases.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.new_work.notified() => {}
                    _ = tokio::time::sleep(self.config.idle_poll) => {}
                }
                continue;
            }
            for lease in leases {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Cannot happen (we leased no more than the free permits),
                    // but never hold a lease we cannot run.
                    self.release(&lease).await;
                    continue;
                };
                let worker = self.clone();
                let abandon = abandon.clone();
                tracker.spawn(async move {
                    worker.run_one(lease, abandon).await;
                    drop(permit);
                });
            }
        }
        tracker.close();
        tracing::info!(in_flight = tracker.len(), grace = ?self.config.shutdown_grace, "draining jobs");
        if tokio::time::timeout(self.config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = tracker.len(),
                "grace period over; releasing unfinished jobs"
            );
            abandon.cancel();
            tracker.wait().await;
        }
    }

    async fn run_one(&self, lease: Lease, abandon: CancellationToken) {
        let started = Instant::now();
        let progress = AtomicU64::new(0);
        let outcome = {
            let renewing = self.keep_renewed(&lease);
            let work = self.attempt(&lease, &progress);
            tokio::pin!(work);
            tokio::select! {
                result = &mut work => Some(result),
                _ = renewing => None,
                _ = abandon.cancelled() => None,
            }
        };
        let bytes = progress.load(Ordering::Relaxed);
        let job = &lease.job;
        match outcome {
            None if abandon.is_cancelled() => {
                self.release(&lease).await;
                telemetry::transition(job, Outcome::Released, bytes, started.elapsed(), None);
            }
            None => {
                // The lease was lost (another worker has the job now).
                tracing::warn!(job_id = %job.id, "lease lost; abandoning this attempt");
            }
            Some(Ok(Attempted::Archived(done))) => match self.stages.queue.complete(&lease).await {
                Ok(()) => telemetry::transition(
                    job,
                    Outcome::Archived {
                        at: done.archived_at,
                        streamed: done.streamed,
                    },
                    done.size,
                    started.elapsed(),
                    Some(&done.blob_key),
                ),
                Err(e) => {
                    tracing::error!(job_id = %job.id, error = %e, "archived but could not mark done; it will run again")
                }
            },
            Some(Ok(Attempted::Parked { timeout, reason })) => {
                let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
                let until = self.stages.clock.now_ms().saturating_add(timeout_ms);
                match self.stages.queue.park(&lease, until).await {
                    Ok(()) => telemetry::transition(
                        job,
                        Outcome::Parked,
                        bytes,
                        started.elapsed(),
                        Some(&reason),
                    ),
                    Err(e) => {
                        tracing::error!(job_id = %job.id, error = %e, "could not park the job; its lease will expire and it runs again")
                    }
                }
            }
            Some(Err(error)) => {
                self.record_failure(&lease, &error, bytes, started.elapsed())
                    .await
            }
        }
    }

    async fn attempt(&self, lease: &Lease, progress: &AtomicU64) -> Result<Attempted, JobError> {
        let job = &lease.job;
        let provider = self
            .stages
            .providers
            .get(&job.account)
            .ok_or_else(|| JobError::UnknownAccount(job.account.clone()))?;
        let archive = self.stages.archives.of(&job.account);
        let attempt = Attempt {
            fetcher: &self.stages.fetcher,
            store: archive.store.as_ref(),
            layout: &archive.layout,
            clock: self.stages.clock.as_ref(),
            blob_index: self.stages.queue.erasures().map(|erasures| BlobIndex {
                erasures,
                lease,
                store_id: &archive.store_id,
            }),
        };
        attempt.run(provider.as_ref(), job, progress).await
    }

    async fn record_failure(&self, lease: &Lease, error: &JobError, bytes: u64, elapsed: Duration) {
        let job = &lease.job;
        let message = error.to_string();
        let class = error.class();
        match self.stages.queue.fail(lease, class, &message).await {
            Ok(Disposition::RetryAt(at)) => {
                let detail = format!("{message}; next attempt at {}", crate::job::rfc3339(at));
                telemetry::transition(job, Outcome::Retry(class), bytes, elapsed, Some(&detail));
            }
            Ok(Disposition::Dead { reason }) => {
                let label = if class.is_retryable() {
                    EXPIRED
                } else {
                    error.label()
                };
                telemetry::transition(
                    job,
                    Outcome::Dead { reason: label },
                    bytes,
                    elapsed,
                    Some(&reason),
                );
            }
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "could not record the failure; the lease will expire and the job run again")
            }
        }
    }

    /// Renews the lease at a third of its length for as long as the job
    /// runs; resolves only if the lease is lost.
    async fn keep_renewed(&self, lease: &Lease) {
        let every = self.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match self.stages.queue.renew(lease, self.config.lease).await {
                Ok(_) => {}
                Err(retry_queue::QueueError::LeaseLost { .. }) => return,
                Err(e) => {
                    tracing::warn!(job_id = %lease.job.id, error = %e, "lease renewal failed; will try again")
                }
            }
        }
    }

    async fn release(&self, lease: &Lease) {
        if let Err(e) = self.stages.queue.release(lease).await {
            tracing::warn!(job_id = %lease.job.id, error = %e, "could not release lease; it will expire");
        }
    }
}

/// Reports the jobs a lease call dead-lettered because their deadline passed
/// while they waited in the queue. No attempt was running, so no other step
/// of the worker sees them end; without this they would be dead but never
/// counted in `dead_total`.
fn report_expired(expired: &[JobRecord]) {
    for job in expired {
        telemetry::transition(
            job,
            Outcome::Dead { reason: EXPIRED },
            0,
            Duration::ZERO,
            job.last_error.as_deref(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use archiver_core::ManualClock;
    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
    use retry_queue::conformance::{T0, job_of};
    use retry_queue::{RetryPolicy, SqliteQueue};

    use super::*;

    /// A metrics recorder that keeps every counter by name and labels.
    #[derive(Debug, Default)]
    struct Counters(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

    impl Counters {
        /// `name{k=v,...}` as registered (labels in emission order).
        fn get(&self, key: &str) -> u64 {
            let counters = self.0.lock().unwrap();
            counters.get(key).map_or(0, |n| n.load(Ordering::Relaxed))
        }
    }

    impl metrics::Recorder for Counters {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut counters = self.0.lock().unwrap();
            Counter::from_arc(counters.entry(name).or_default().clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// The alert on `dead_total` must see jobs that die in the queue too:
    /// each job a lease reports as expired is counted once as dead with
    /// reason `expired`, under its account.
    #[tokio::test]
    async fn jobs_the_lease_expired_are_counted_dead_expired_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let queue = SqliteQueue::open(
            &dir.path().join("q.db"),
            RetryPolicy::default(),
            Arc::new(clock.clone()),
        )
        .unwrap();
        queue
            .enqueue(vec![
                job_of("acme", "late-1", T0 + 1_000),
                job_of("acme", "late-2", T0 + 1_000),
                job_of("globex", "late", T0 + 1_000),
                job_of("acme", "healthy", T0 + 86_400_000),
            ])
            .await
            .unwrap();
        clock.advance(Duration::from_secs(2));
        let leased = queue.lease(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(leased.leases.len(), 1);

        let counters = Counters::default();
        metrics::with_local_recorder(&counters, || report_expired(&leased.expired));
        assert_eq!(
            counters.get("media_archiver_dead_total{account=acme,reason=expired}"),
            2
        );
        assert_eq!(
            counters.get("media_archiver_dead_total{account=globex,reason=expired}"),
            1
        );
    }
}
