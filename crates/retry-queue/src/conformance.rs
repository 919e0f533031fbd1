//! The behaviour every [`JobQueue`] backend must have, as one test suite.
//!
//! Each case is a public async function that takes a [`QueueFactory`] and
//! panics on the first deviation; its name and doc comment are the rule it
//! checks. A backend's integration test provides a factory and expands the
//! whole suite, one `#[tokio::test]` per case, with
//! [`conformance_suite!`](crate::conformance_suite):
//!
//! ```ignore
//! fn sqlite_backend() -> impl retry_queue::conformance::QueueFactory {
//!     let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
//!     move |clock, policy| {
//!         let path = dir.path().join("queue.db");
//!         async move {
//!             std::sync::Arc::new(retry_queue::SqliteQueue::open(&path, policy, clock).unwrap())
//!                 as std::sync::Arc<dyn retry_queue::JobQueue>
//!         }
//!     }
//! }
//! retry_queue::conformance_suite!(sqlite_backend);
//! ```
//!
//! Time only moves through the `ManualClock` the suite hands to the factory;
//! nothing sleeps.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use archiver_core::{Classify, Clock, ErrorClass, ManualClock, ProviderKind, UnixMillis};

#[cfg(feature = "postgres")]
pub mod pg;

use crate::{
    BlobRef, Claimed, CommittedErasure, Delivery, DeliveryFilter, DeliveryState, Disposition,
    Enqueued, ErasedMessage, ErasureFilter, ErasurePlan, ErasureRefused, Erasures, JobFilter,
    JobQueue, JobRecord, JobSpec, JobState, Lease, NotifyEvent, Outbox, QueueError, QueueStats,
    Retried, RetryPolicy, Route,
};

/// Opens a backend for one test case.
///
/// Every call on the same factory must open the **same** storage (same file,
/// same database schema), so that a case can drop a queue and reopen it; a
/// fresh factory must start empty. Any `Fn(Arc<dyn Clock>, RetryPolicy) ->
/// impl Future<Output = Arc<dyn JobQueue>>` is a factory.
pub trait QueueFactory {
    /// The future that opens the queue.
    type Open: Future<Output = Arc<dyn JobQueue>>;
    /// Opens the factory's storage with this clock and policy.
    fn open(&self, clock: Arc<dyn Clock>, policy: RetryPolicy) -> Self::Open;
}

impl<F, Fut> QueueFactory for F
where
    F: Fn(Arc<dyn Clock>, RetryPolicy) -> Fut,
    Fut: Future<Output = Arc<dyn JobQueue>>,
{
    type Open = Fut;
    fn open(&self, clock: Arc<dyn Clock>, policy: RetryPolicy) -> Fut {
        self(clock, policy)
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each calling
/// `$factory()` for a fresh factory. The calling crate needs `tokio` (with
/// `macros` and `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@list $factory, plain);
    };
    // `$factory()` returns `Option<impl QueueFactory>`; `None` (a backend
    // that is not reachable here, and not required) returns from each case.
    (optional $factory:path) => {
        $crate::conformance_suite!(@list $factory, optional);
    };
    (@list $factory:path, $mode:ident) => {
        $crate::conformance_suite!(@cases $factory, $mode;
            enqueue_is_idempotent_within_and_across_batches,
            enqueue_of_a_dead_job_revives_it,
            lease_hands_out_earliest_deadline_first,
            a_leased_job_is_hidden_from_other_leases,
            an_expired_lease_goes_to_another_worker_and_the_first_loses_it,
            renew_extends_the_lease,
            backoff_grows_by_the_multiplier_is_capped_and_jittered_per_job,
            retry_after_is_honoured,
            retries_never_fall_after_the_deadline,
            a_ready_job_past_its_deadline_is_dead_expired,
            a_job_whose_deadline_passed_in_the_queue_is_reported_by_the_lease_that_expires_it,
            a_permanent_error_dead_letters_at_once,
            a_parked_job_waits_for_its_wake,
            a_wake_before_the_park_is_not_lost,
            a_parked_job_times_out_back_to_ready,
            release_gives_the_job_back_and_undoes_the_attempt,
            list_filters_by_state_and_account_newest_first,
            list_finds_a_message_s_jobs_by_message_id,
            retry_now_and_retry_all_requeue_at_once,
            stats_count_states_accounts_oldest_pending_and_at_risk,
            committed_jobs_and_leases_survive_reopen,
            concurrent_enqueues_yield_exactly_one_new_per_id,
            ping_answers,
            a_finished_job_commits_one_delivery_per_matching_route,
            a_claimed_delivery_is_hidden_for_its_hold_and_fenced,
            a_failing_delivery_backs_off_until_max_age_then_dies,
            an_admin_retry_rearms_a_dead_delivery,
            a_delivery_past_its_deadline_is_reported_dead_by_the_claim,
            concurrent_claims_take_disjoint_deliveries,
            a_removed_target_s_pending_deliveries_are_given_up,
            overlapping_routes_of_one_target_make_one_delivery,
            an_erasure_takes_a_chat_s_messages_and_keeps_blobs_other_chats_name,
            an_erasure_is_refused_while_a_matching_job_is_leased,
            a_blob_being_erased_is_not_recorded_until_the_erasure_is_over,
            refs_restored_from_a_scan_are_erased_like_recorded_ones,
        );
    };
    (@cases $factory:path, plain; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case($factory()).await;
            }
        )*
    };
    (@cases $factory:path, optional; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(factory) = $factory() else {
                    return;
                };
                $crate::conformance::$case(factory).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------
// Fixture

/// Where every case's clock starts: 2026-01-01T00:00:00Z.
pub const T0: UnixMillis = 1_767_225_600_000;

const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// The lease length the cases use unless they say otherwise.
const LEASE: Duration = Duration::from_secs(300);

/// The policy the cases use: 10 s, doubling, at most 60 s.
pub fn test_policy() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(60),
        multiplier: 2.0,
    }
}

/// A job of account `acme` with a deadline a week after [`T0`].
pub fn job(id: &str) -> JobSpec {
    job_of("acme", id, T0 + 7 * DAY)
}

/// A job of `account` with id `{account}:{key}` and the given deadline.
pub fn job_of(account: &str, key: &str, deadline: UnixMillis) -> JobSpec {
    JobSpec {
        id: JobSpec::job_id(account, key),
        account: account.to_owned(),
        provider: ProviderKind::Cloudapi,
        message_id: format!("wamid.{key}"),
        media_id: Some(format!("media-{key}")),
        chat_id: Some("4915112345678".to_owned()),
        message_at: T0 - HOUR,
        deadline,
        payload: serde_json::json!({ "media_id": format!("media-{key}"), "sha256": "ab12" }),
    }
}

struct Fixture {
    clock: ManualClock,
    queue: Arc<dyn JobQueue>,
}

async fn start(factory: &impl QueueFactory) -> Fixture {
    let clock = ManualClock::new(T0);
    let queue = factory.open(Arc::new(clock.clone()), test_policy()).await;
    Fixture { clock, queue }
}

impl Fixture {
    fn now(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    fn advance_ms(&self, ms: i64) {
        self.clock
            .advance(Duration::from_millis(u64::try_from(ms).expect("forward")));
    }

    async fn enqueue(&self, jobs: Vec<JobSpec>) -> Vec<Enqueued> {
        let n = jobs.len();
        let out = self.queue.enqueue(jobs).await.expect("enqueue");
        assert_eq!(out.len(), n, "one outcome per job");
        out
    }

    async fn lease(&self, max: usize) -> Vec<Lease> {
        self.queue.lease(max, LEASE).await.expect("lease").leases
    }

    async fn lease_ids(&self, max: usize) -> Vec<String> {
        ids(&self.lease(max).await)
    }

    /// Leases up to `max` jobs, keyed by job id.
    async fn lease_by_id(&self, max: usize) -> BTreeMap<String, Lease> {
        self.lease(max)
            .await
            .into_iter()
            .map(|lease| (lease.job.id.clone(), lease))
            .collect()
    }

    /// Leases exactly one job and checks it is `id`.
    async fn lease_one(&self, id: &str) -> Lease {
        self.lease_one_for(id, LEASE).await
    }

    /// [`Self::lease_one`] for `lease_for`.
    async fn lease_one_for(&self, id: &str, lease_for: Duration) -> Lease {
        let mut leases = self.queue.lease(1, lease_for).await.expect("lease").leases;
        assert_eq!(ids(&leases), [id], "expected to lease {id}");
        leases.remove(0)
    }

    async fn assert_nothing_ready(&self) {
        let leased = self.lease_ids(100).await;
        assert!(leased.is_empty(), "nothing should be ready, got {leased:?}");
    }

    async fn get(&self, id: &str) -> JobRecord {
        self.queue
            .get(id)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("job {id} should exist"))
    }

    async fn fail(&self, lease: &Lease, class: ErrorClass, error: &str) -> Disposition {
        self.queue.fail(lease, class, error).await.expect("fail")
    }

    /// Fails a lease transiently and returns the delay until its next attempt.
    async fn fail_transient(&self, lease: &Lease) -> i64 {
        match self.fail(lease, ErrorClass::Transient, "boom").await {
            Disposition::RetryAt(at) => at - self.now(),
            dead => panic!("expected a retry, got {dead:?}"),
        }
    }

    async fn list(&self, state: Option<JobState>, account: Option<&str>) -> Vec<String> {
        let filter = JobFilter {
            state,
            account: account.map(str::to_owned),
            ..JobFilter::default()
        };
        list_ids(self.queue.as_ref(), &filter).await
    }

    async fn retry_all(&self, state: JobState) -> u64 {
        self.queue.retry_all(state).await.expect("retry_all")
    }

    async fn stats(&self, at_risk_within: Duration) -> QueueStats {
        self.queue.stats(at_risk_within).await.expect("stats")
    }
}

/// The ids of the jobs `filter` lists, in the order listed.
async fn list_ids(queue: &dyn JobQueue, filter: &JobFilter) -> Vec<String> {
    let jobs = queue.list(filter).await.expect("list");
    jobs.into_iter().map(|job| job.id).collect()
}

fn ids(leases: &[Lease]) -> Vec<String> {
    leases.iter().map(|lease| lease.job.id.clone()).collect()
}

fn assert_lease_lost<T: std::fmt::Debug>(result: Result<T, QueueError>, id: &str) {
    match result {
        Err(QueueError::LeaseLost { job_id }) => assert_eq!(job_id, id),
        other => panic!("expected LeaseLost for {id}, got {other:?}"),
    }
}

/// A backoff delay is the interval ±25%, never above the policy's max.
fn assert_jittered(delay_ms: i64, interval_s: i64) {
    let interval = interval_s * SEC;
    let low = interval - interval / 4;
    let high = (interval + interval / 4).min(test_policy().max.as_millis() as i64);
    assert!(
        (low..=high).contains(&delay_ms),
        "delay {delay_ms} ms should be within {low}..={high} ms (interval {interval_s} s)"
    );
}

fn json(job: &JobRecord) -> serde_json::Value {
    serde_json::to_value(job).expect("JobRecord serializes")
}

// ---------------------------------------------------------------------------
// Cases

/// A redelivered webhook is a duplicate, never a second job, whether the
/// repeat is in the same batch or a later one; a duplicate changes nothing;
/// a new job starts pending, ready now, with the spec stored verbatim.
pub async fn enqueue_is_idempotent_within_and_across_batches(factory: impl QueueFactory) {
    let f = start(&factory).await;
    let a = job("a");
    assert_eq!(
        f.enqueue(vec![a.clone(), job("b"), job("a")]).await,
        [Enqueued::New, Enqueued::New, Enqueued::Duplicate]
    );
    assert_eq!(
        f.enqueue(vec![job("b"), job("c")]).await,
        [Enqueued::Duplicate, Enqueued::New]
    );
    assert_eq!(f.enqueue(Vec::new()).await, []);
    assert_eq!(f.list(None, None).await.len(), 3);

    let record = f.get("acme:a").await;
    assert_eq!(record.id, a.id);
    assert_eq!(record.account, a.account);
    assert_eq!(record.provider, a.provider);
    assert_eq!(record.state, JobState::Pending);
    assert_eq!(record.attempts, 0);
    assert_eq!(record.deadline, a.deadline);
    assert_eq!(record.next_attempt_at, T0);
    assert_eq!(record.created_at, T0);
    assert_eq!(record.updated_at, T0);
    assert_eq!(record.last_error, None);
    assert_eq!(record.message_id, a.message_id);
    assert_eq!(record.media_id, a.media_id);
    assert_eq!(record.message_at, a.message_at);
    assert_eq!(record.payload, a.payload);
    assert!(f.queue.get("acme:nope").await.expect("get").is_none());

    // A duplicate of a leased job leaves it alone, payload included.
    f.advance_ms(SEC);
    let lease = f.lease_one("acme:a").await;
    let mut changed = job("a");
    changed.payload = serde_json::json!({ "other": true });
    changed.deadline += DAY;
    assert_eq!(
        f.enqueue(vec![changed.clone()]).await,
        [Enqueued::Duplicate]
    );
    let record = f.get("acme:a").await;
    assert_eq!(record.state, JobState::Leased);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.payload, a.payload);
    assert_eq!(record.deadline, a.deadline);

    // So does a duplicate of a finished job.
    f.queue.complete(&lease).await.expect("complete");
    assert_eq!(f.enqueue(vec![changed]).await, [Enqueued::Duplicate]);
    assert_eq!(f.get("acme:a").await.state, JobState::Done);
}

/// A dedup entry never blocks the retry of a failed job: enqueueing the id
/// of a dead job reports `Duplicate` and puts it back to pending, ready now,
/// attempts and backoff reset, last error kept.
pub async fn enqueue_of_a_dead_job_revives_it(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    // Two transient failures grow the backoff interval to 40 s.
    for interval in [10, 20] {
        let lease = f.lease_one("acme:a").await;
        let delay = f.fail_transient(&lease).await;
        assert_jittered(delay, interval);
        f.advance_ms(delay);
    }
    let lease = f.lease_one("acme:a").await;
    assert_eq!(lease.job.attempts, 3);
    f.fail(&lease, ErrorClass::Permanent, "media gone").await;
    assert_eq!(f.get("acme:a").await.state, JobState::Dead);

    f.advance_ms(HOUR);
    assert_eq!(f.enqueue(vec![job("a")]).await, [Enqueued::Duplicate]);
    let record = f.get("acme:a").await;
    assert_eq!(record.state, JobState::Pending);
    assert_eq!(record.attempts, 0);
    assert_eq!(record.next_attempt_at, f.now());
    assert_eq!(record.last_error.as_deref(), Some("media gone"));

    let lease = f.lease_one("acme:a").await;
    assert_eq!(lease.job.attempts, 1);
    // Backoff starts again from `initial`.
    assert_jittered(f.fail_transient(&lease).await, 10);
}

/// Among ready jobs the earliest deadline goes first; equal deadlines go
/// oldest `next_attempt_at` first; `max` bounds each call.
pub async fn lease_hands_out_earliest_deadline_first(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![
        job_of("acme", "z", T0 + 3 * DAY),
        job_of("acme", "y", T0 + DAY),
        job_of("acme", "x", T0 + 2 * DAY),
        job_of("acme", "tie-early", T0 + 5 * DAY),
    ])
    .await;
    f.advance_ms(SEC);
    // Same deadline, ready one second later, smaller id: still second.
    f.enqueue(vec![job_of("acme", "tie-a-late", T0 + 5 * DAY)])
        .await;

    assert_eq!(f.lease_ids(2).await, ["acme:y", "acme:x"]);
    assert_eq!(
        f.lease_ids(10).await,
        ["acme:z", "acme:tie-early", "acme:tie-a-late"]
    );
    assert_eq!(f.lease_ids(10).await, Vec::<String>::new());
    assert!(
        f.queue
            .lease(0, LEASE)
            .await
            .expect("lease")
            .leases
            .is_empty()
    );
}

/// A leased job is handed to nobody else while its lease runs, even to
/// workers leasing concurrently; the lease carries the counted attempt, a
/// token and its expiry.
pub async fn a_leased_job_is_hidden_from_other_leases(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a"), job("b"), job("c")]).await;
    let first = f.lease(2).await;
    assert_eq!(first.len(), 2);
    for lease in &first {
        assert_eq!(lease.job.state, JobState::Leased);
        assert_eq!(lease.job.attempts, 1);
        assert_eq!(lease.expires_at, T0 + LEASE.as_millis() as i64);
        let stored = f.get(&lease.job.id).await;
        assert_eq!(stored.state, JobState::Leased);
        assert_eq!(stored.attempts, 1);
    }
    let second = f.lease_ids(2).await;
    assert_eq!(second.len(), 1);
    assert!(!ids(&first).contains(&second[0]));
    f.assert_nothing_ready().await;

    // Eight workers racing over forty jobs: each job goes to exactly one.
    let jobs: Vec<JobSpec> = (0..40).map(|i| job(&format!("race-{i}"))).collect();
    f.enqueue(jobs).await;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let queue = f.queue.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let leases = queue.lease(3, LEASE).await.expect("lease").leases;
                    if leases.is_empty() {
                        return mine;
                    }
                    mine.extend(ids(&leases));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 40, "every job leased once: {all:?}");
    assert_eq!(unique.len(), 40);
}

/// A lease that lapses (crashed worker) makes the job ready again; whoever
/// leases it next gets a new token and a counted attempt, and every call
/// with the old lease fails with `LeaseLost` (a permanent error). A lapsed
/// lease nobody took over still works.
pub async fn an_expired_lease_goes_to_another_worker_and_the_first_loses_it(
    factory: impl QueueFactory,
) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    let lease_for = Duration::from_secs(60);
    let first = f.lease_one_for("acme:a", lease_for).await;
    f.advance_ms(30 * SEC);
    f.assert_nothing_ready().await;
    f.advance_ms(31 * SEC);
    let second = &f.lease_one_for("acme:a", lease_for).await;
    assert_eq!(second.job.attempts, 2);
    assert_ne!(second.token, first.token);
    assert_eq!(second.expires_at, f.now() + 60 * SEC);

    let err = f.queue.complete(&first).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_lease_lost(Err::<(), _>(err), "acme:a");
    assert_lease_lost(f.queue.renew(&first, lease_for).await, "acme:a");
    assert_lease_lost(
        f.queue.fail(&first, ErrorClass::Transient, "late").await,
        "acme:a",
    );
    assert_lease_lost(f.queue.park(&first, f.now() + HOUR).await, "acme:a");
    assert_lease_lost(f.queue.release(&first).await, "acme:a");
    let record = f.get("acme:a").await;
    assert_eq!(record.state, JobState::Leased);
    assert_eq!(record.last_error, None, "the lost lease changed nothing");

    f.queue.complete(second).await.expect("complete");
    assert_eq!(f.get("acme:a").await.state, JobState::Done);
    assert_eq!(f.get("acme:a").await.attempts, 2);
    // Finished: the winning lease is spent too.
    assert_lease_lost(f.queue.complete(second).await, "acme:a");
    assert_lease_lost(f.queue.renew(second, lease_for).await, "acme:a");

    // Lapsed but not taken over: the slow worker may still finish.
    f.enqueue(vec![job("b")]).await;
    let slow = f.lease_one_for("acme:b", lease_for).await;
    f.advance_ms(10 * MIN);
    f.queue
        .complete(&slow)
        .await
        .expect("complete after expiry");
    assert_eq!(f.get("acme:b").await.state, JobState::Done);
}

/// Renewing moves the lease's expiry to now + `lease_for`, so a long
/// download keeps its job.
pub async fn renew_extends_the_lease(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    let lease_for = Duration::from_secs(60);
    let lease = f.lease_one_for("acme:a", lease_for).await;
    assert_eq!(lease.expires_at, T0 + 60 * SEC);
    f.advance_ms(50 * SEC);
    let expiry = f.queue.renew(&lease, lease_for).await.expect("renew");
    assert_eq!(expiry, T0 + 110 * SEC);
    f.advance_ms(50 * SEC); // past the first expiry
    f.assert_nothing_ready().await;
    let expiry = f.queue.renew(&lease, lease_for).await.expect("renew");
    assert_eq!(expiry, T0 + 160 * SEC);
    f.advance_ms(60 * SEC); // exactly at the expiry: lapsed
    assert_eq!(f.lease_ids(1).await, ["acme:a"]);
    assert_lease_lost(f.queue.renew(&lease, lease_for).await, "acme:a");
}

/// After each transient failure the wait is the job's current interval ±25%:
/// `initial`, then times `multiplier` per failure, never above `max`. The
/// interval is stored with each job, so one job's failures do not slow
/// another; the job is not ready a millisecond early.
pub async fn backoff_grows_by_the_multiplier_is_capped_and_jittered_per_job(
    factory: impl QueueFactory,
) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    for interval in [10, 20, 40, 60, 60, 60] {
        let lease = f.lease_one("acme:a").await;
        let delay = f.fail_transient(&lease).await;
        assert_jittered(delay, interval);
        let record = f.get("acme:a").await;
        assert_eq!(record.state, JobState::Pending);
        assert_eq!(record.next_attempt_at, f.now() + delay);
        assert_eq!(record.last_error.as_deref(), Some("boom"));
        f.advance_ms(delay - 1);
        f.assert_nothing_ready().await;
        f.advance_ms(1);
    }
    assert_eq!(f.lease_one("acme:a").await.job.attempts, 7);

    // Another job starts from `initial`, whatever `a` went through.
    f.enqueue(vec![job("b")]).await;
    let lease = f.lease_one("acme:b").await;
    assert_jittered(f.fail_transient(&lease).await, 10);

    // Jitter: thirty jobs failing together do not all retry together.
    let jobs: Vec<JobSpec> = (0..30).map(|i| job(&format!("herd-{i}"))).collect();
    f.enqueue(jobs).await;
    let mut delays = HashSet::new();
    for lease in f.lease(30).await {
        let delay = f.fail_transient(&lease).await;
        assert_jittered(delay, 10);
        delays.insert(delay);
    }
    assert!(delays.len() > 1, "jitter should spread retries: {delays:?}");
}

/// `RetryAfter(d)` waits at least `d`, or the backoff if that is longer; the
/// backoff still advances.
pub async fn retry_after_is_honoured(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one("acme:a").await;
    let ten_minutes = Duration::from_secs(600);
    let at = match f
        .fail(
            &lease,
            ErrorClass::RetryAfter(ten_minutes),
            "429 Too Many Requests",
        )
        .await
    {
        Disposition::RetryAt(at) => at,
        dead => panic!("expected a retry, got {dead:?}"),
    };
    assert_eq!(at, f.now() + 10 * MIN);
    assert_eq!(
        f.get("acme:a").await.last_error.as_deref(),
        Some("429 Too Many Requests")
    );
    f.advance_ms(10 * MIN - 1);
    f.assert_nothing_ready().await;
    f.advance_ms(1);
    let lease = f.lease_one("acme:a").await;

    // A shorter Retry-After than the backoff (now 20 s ±25%) waits the backoff.
    let delay = match f
        .fail(
            &lease,
            ErrorClass::RetryAfter(Duration::from_secs(1)),
            "503",
        )
        .await
    {
        Disposition::RetryAt(at) => at - f.now(),
        dead => panic!("expected a retry, got {dead:?}"),
    };
    assert_jittered(delay, 20);
}

/// A retry that would fall after the deadline is not scheduled: the job is
/// dead with reason `expired: ...` naming the last error.
pub async fn retries_never_fall_after_the_deadline(factory: impl QueueFactory) {
    let f = start(&factory).await;
    // The first backoff (10 s ±25%) overshoots a deadline 5 s away.
    f.enqueue(vec![
        job_of("acme", "soon", T0 + 5 * SEC),
        job_of("acme", "later", T0 + HOUR),
    ])
    .await;
    let lease = f.lease_one("acme:soon").await;
    let expected =
        "expired: next attempt would fall after the deadline; last error: connection reset";
    assert_eq!(
        f.fail(&lease, ErrorClass::Transient, "connection reset")
            .await,
        Disposition::Dead {
            reason: expected.to_owned()
        }
    );
    let record = f.get("acme:soon").await;
    assert_eq!(record.state, JobState::Dead);
    assert_eq!(record.last_error.as_deref(), Some(expected));

    // Retry-After beyond the deadline too.
    let lease = f.lease_one("acme:later").await;
    match f
        .fail(
            &lease,
            ErrorClass::RetryAfter(Duration::from_secs(7200)),
            "429",
        )
        .await
    {
        Disposition::Dead { reason } => {
            assert!(reason.starts_with("expired: "), "{reason}");
            assert!(reason.ends_with("last error: 429"), "{reason}");
        }
        other => panic!("expected dead, got {other:?}"),
    }
    f.advance_ms(3 * HOUR);
    f.assert_nothing_ready().await;
}

/// A ready job whose deadline has passed (pending, waiting past its timeout,
/// or behind a lapsed lease) is dead-lettered `expired` by the next lease and
/// not handed out; a deadline equal to now is still in time; a job that is
/// not ready (live lease, park not timed out) is left alone.
pub async fn a_ready_job_past_its_deadline_is_dead_expired(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![
        job_of("acme", "pending", T0 + 10 * SEC),
        job_of("acme", "on-time", T0 + 11 * SEC),
        job_of("acme", "leased", T0 + 30 * SEC),
        job_of("acme", "parked", T0 + 31 * SEC),
        job_of("acme", "healthy", T0 + DAY),
    ])
    .await;
    let leases = f.lease_by_id(5).await;
    assert_eq!(leases.len(), 5);
    for id in ["acme:pending", "acme:on-time", "acme:healthy"] {
        f.queue.release(&leases[id]).await.expect("release");
    }
    f.queue
        .park(&leases["acme:parked"], T0 + 20 * SEC)
        .await
        .expect("park");
    // `acme:leased` keeps its five-minute lease, as if its worker crashed.

    f.advance_ms(11 * SEC); // `pending` is 1 s late, `on-time` due right now
    let handed = f.lease(10).await;
    assert_eq!(ids(&handed), ["acme:on-time", "acme:healthy"]);
    let record = f.get("acme:pending").await;
    assert_eq!(record.state, JobState::Dead);
    let reason = record.last_error.expect("reason");
    assert!(reason.starts_with("expired: "), "{reason}");
    assert_eq!(f.get("acme:parked").await.state, JobState::Waiting);
    assert_eq!(f.get("acme:leased").await.state, JobState::Leased);
    for lease in &handed {
        f.queue.complete(lease).await.expect("complete");
    }

    // Park timeout and lease expiry both arrive after the deadlines.
    f.advance_ms(LEASE.as_millis() as i64);
    f.assert_nothing_ready().await;
    for id in ["acme:parked", "acme:leased"] {
        let record = f.get(id).await;
        assert_eq!(record.state, JobState::Dead, "{id}");
        let reason = record.last_error.unwrap_or_default();
        assert!(reason.starts_with("expired: "), "{id}: {reason}");
    }
    assert_lease_lost(
        f.queue.complete(&leases["acme:leased"]).await,
        "acme:leased",
    );
}

/// No worker holds a job that dies of its deadline inside the queue, so the
/// lease call that dead-letters it reports it (the worker counts dead jobs
/// from what it is told): each such job once, as stored after the change
/// (state `dead`, the reason, its account and attempts), whatever state it
/// waited in; a later lease does not report it again.
pub async fn a_job_whose_deadline_passed_in_the_queue_is_reported_by_the_lease_that_expires_it(
    factory: impl QueueFactory,
) {
    let f = start(&factory).await;
    f.enqueue(vec![
        job_of("acme", "late", T0 + 10 * SEC),
        job_of("acme", "failed", T0 + 40 * SEC),
        job_of("acme", "crashed", T0 + 20 * SEC),
        job_of("globex", "late", T0 + 10 * SEC),
        job_of("acme", "healthy", T0 + DAY),
    ])
    .await;
    let leases = f.lease_by_id(5).await;
    for id in ["acme:late", "globex:late", "acme:healthy"] {
        f.queue.release(&leases[id]).await.expect("release");
    }
    f.fail_transient(&leases["acme:failed"]).await;
    // `acme:crashed` keeps its lease, as if its worker crashed.

    f.advance_ms(LEASE.as_millis() as i64 + SEC);
    let leased = f.queue.lease(10, LEASE).await.expect("lease");
    assert_eq!(ids(&leased.leases), ["acme:healthy"]);
    let mut expired = leased.expired;
    expired.sort_by(|a, b| a.id.cmp(&b.id));
    let reported: Vec<(&str, &str, u32)> = expired
        .iter()
        .map(|job| (job.id.as_str(), job.account.as_str(), job.attempts))
        .collect();
    assert_eq!(
        reported,
        [
            ("acme:crashed", "acme", 1),
            ("acme:failed", "acme", 1),
            ("acme:late", "acme", 0),
            ("globex:late", "globex", 0),
        ]
    );
    for job in &expired {
        assert_eq!(job.state, JobState::Dead, "{}", job.id);
        assert_eq!(json(job), json(&f.get(&job.id).await), "as stored");
    }
    let reason = |id: &str| {
        let job = expired.iter().find(|job| job.id == id).expect("reported");
        job.last_error.clone().unwrap_or_default()
    };
    assert_eq!(
        reason("acme:late"),
        "expired: the deadline passed before the job could run"
    );
    assert_eq!(
        reason("acme:failed"),
        "expired: the deadline passed before the job could run; last error: boom"
    );

    let again = f.queue.lease(10, LEASE).await.expect("lease");
    assert!(again.leases.is_empty());
    assert!(
        again.expired.is_empty(),
        "reported twice: {:?}",
        again.expired
    );
}

/// A permanent error dead-letters at once, with the error as the reason.
pub async fn a_permanent_error_dead_letters_at_once(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one("acme:a").await;
    let reason = "sha256 mismatch: provider says ab12…, bytes are cd34…";
    assert_eq!(
        f.fail(&lease, ErrorClass::Permanent, reason).await,
        Disposition::Dead {
            reason: reason.to_owned()
        }
    );
    let record = f.get("acme:a").await;
    assert_eq!(record.state, JobState::Dead);
    assert_eq!(record.last_error.as_deref(), Some(reason));
    assert_eq!(record.attempts, 1);
    f.advance_ms(DAY);
    f.assert_nothing_ready().await;
    assert_lease_lost(f.queue.complete(&lease).await, "acme:a");
}

/// A parked job waits, off the ready set, until `wake` makes it pending and
/// ready now. `wake` reports whether a waiting job had that id.
pub async fn a_parked_job_waits_for_its_wake(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one("acme:a").await;
    f.queue.park(&lease, T0 + HOUR).await.expect("park");
    let record = f.get("acme:a").await;
    assert_eq!(record.state, JobState::Waiting);
    assert_eq!(record.next_attempt_at, T0 + HOUR);
    assert_eq!(record.attempts, 1, "the attempt stays counted");
    f.assert_nothing_ready().await;
    assert_lease_lost(f.queue.complete(&lease).await, "acme:a");

    f.advance_ms(MIN);
    assert!(
        f.queue
            .wake("acme:a", Some("callback: downloaded"))
            .await
            .expect("wake")
    );
    let record = f.get("acme:a").await;
    assert_eq!(record.state, JobState::Pending);
    assert_eq!(record.next_attempt_at, f.now());
    assert_eq!(
        record.last_error.as_deref(),
        Some("callback: downloaded"),
        "the note is kept"
    );
    assert!(
        !f.queue.wake("acme:a", None).await.expect("wake"),
        "not waiting"
    );
    assert!(
        !f.queue.wake("acme:nope", None).await.expect("wake"),
        "absent"
    );
    assert_eq!(f.lease_one("acme:a").await.job.attempts, 2);
}

/// The event a job will park for can arrive before the worker parks it (a
/// fast callback): the park then makes the job ready at once, never waiting
/// out its timeout.
pub async fn a_wake_before_the_park_is_not_lost(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one("acme:a").await;
    assert!(
        f.queue.wake("acme:a", None).await.expect("wake"),
        "a leased job can be woken"
    );
    assert_eq!(
        f.get("acme:a").await.state,
        JobState::Leased,
        "still held by its worker"
    );
    f.queue.park(&lease, T0 + HOUR).await.expect("park");
    let record = f.get("acme:a").await;
    assert_eq!(record.state, JobState::Pending, "ready at once");
    assert_eq!(record.next_attempt_at, f.now());
    let again = f.lease_one("acme:a").await;
    f.queue.park(&again, T0 + HOUR).await.expect("park");
    assert_eq!(
        f.get("acme:a").await.state,
        JobState::Waiting,
        "the mark was used up"
    );
}

/// A parked job whose callback never comes is ready again at its timeout.
pub async fn a_parked_job_times_out_back_to_ready(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one("acme:a").await;
    f.queue.park(&lease, T0 + 10 * MIN).await.expect("park");
    f.advance_ms(10 * MIN - 1);
    f.assert_nothing_ready().await;
    f.advance_ms(1);
    let lease = f.lease_one("acme:a").await;
    assert_eq!(lease.job.attempts, 2);
    assert_eq!(lease.job.state, JobState::Leased);
}

/// Releasing a lease (shutdown) puts the job back pending, ready now, and
/// undoes the attempt the lease counted.
pub async fn release_gives_the_job_back_and_undoes_the_attempt(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one("acme:a").await;
    let delay = f.fail_transient(&lease).await;
    f.advance_ms(delay);
    let lease = f.lease_one("acme:a").await;
    assert_eq!(lease.job.attempts, 2);
    f.advance_ms(SEC);
    f.queue.release(&lease).await.expect("release");
    let record = f.get("acme:a").await;
    assert_eq!(record.state, JobState::Pending);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.next_attempt_at, f.now());
    assert_eq!(record.last_error.as_deref(), Some("boom"), "kept");
    assert_lease_lost(f.queue.release(&lease).await, "acme:a");
    assert_eq!(f.lease_one("acme:a").await.job.attempts, 2);
}

/// `list` filters by state and account, newest update first; limit 0 means
/// 100 and no call returns more than 1000.
pub async fn list_filters_by_state_and_account_newest_first(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![job_of("acme", "1", T0 + DAY)]).await;
    f.advance_ms(SEC);
    f.enqueue(vec![job_of("globex", "1", T0 + DAY + 1)]).await;
    f.advance_ms(SEC);
    f.enqueue(vec![job_of("acme", "2", T0 + DAY + 2)]).await;
    f.advance_ms(SEC);
    f.enqueue(vec![job_of("globex", "2", T0 + DAY + 3)]).await;
    f.advance_ms(SEC);
    let lease = f.lease_one("acme:1").await; // acme:1 updated last
    f.advance_ms(SEC);
    f.fail(&lease, ErrorClass::Permanent, "gone").await;

    assert_eq!(
        f.list(None, None).await,
        ["acme:1", "globex:2", "acme:2", "globex:1"]
    );
    assert_eq!(
        f.list(Some(JobState::Pending), None).await,
        ["globex:2", "acme:2", "globex:1"]
    );
    assert_eq!(f.list(None, Some("globex")).await, ["globex:2", "globex:1"]);
    assert_eq!(f.list(Some(JobState::Dead), Some("acme")).await, ["acme:1"]);
    assert_eq!(
        f.list(Some(JobState::Dead), Some("globex")).await,
        Vec::<String>::new()
    );
    assert_eq!(f.list(None, Some("initech")).await, Vec::<String>::new());
    let two = JobFilter {
        limit: 2,
        ..JobFilter::default()
    };
    let listed = list_ids(f.queue.as_ref(), &two).await;
    assert_eq!(listed, ["acme:1", "globex:2"]);
    let records = f.queue.list(&two).await.expect("list");
    assert_eq!(records[0].state, JobState::Dead);
    assert_eq!(records[0].last_error.as_deref(), Some("gone"));

    let bulk: Vec<JobSpec> = (0..1001)
        .map(|i| job_of("bulk", &i.to_string(), T0 + DAY))
        .collect();
    f.enqueue(bulk).await;
    let bulk_filter = |limit| JobFilter {
        account: Some("bulk".to_owned()),
        limit,
        ..JobFilter::default()
    };
    let count = |limit| {
        let filter = bulk_filter(limit);
        let queue = f.queue.clone();
        async move { queue.list(&filter).await.expect("list").len() }
    };
    assert_eq!(count(0).await, 100);
    assert_eq!(count(5000).await, 1000);
    assert_eq!(count(7).await, 7);
}

/// `list` finds jobs by exact message id, alone or with the other filters,
/// whatever the job id is keyed by: media id (as for Cloud API) or message
/// id (as for Green API).
pub async fn list_finds_a_message_s_jobs_by_message_id(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![
        job_of("acme", "1", T0 + DAY),
        job_of("acme", "2", T0 + DAY),
        job_of("globex", "1", T0 + DAY),
    ])
    .await;
    let mut second_media = job_of("acme", "1b", T0 + DAY);
    second_media.message_id = "wamid.1".to_owned();
    f.enqueue(vec![second_media]).await;
    let keyed_by_message = |account: &str, message_id: &str| JobSpec {
        id: JobSpec::job_id(account, message_id),
        message_id: message_id.to_owned(),
        media_id: None,
        chat_id: None,
        provider: ProviderKind::Greenapi,
        ..job_of(account, message_id, T0 + DAY)
    };
    f.enqueue(vec![
        keyed_by_message("acme", "BAE5F4886F6F2D05"),
        keyed_by_message("globex", "BAE5F4886F6F2D05"),
        keyed_by_message("acme", "BAE5000000000001"),
    ])
    .await;
    let find = |account: Option<&str>, message_id: &str, state: Option<JobState>| {
        let filter = JobFilter {
            account: account.map(str::to_owned),
            message_id: Some(message_id.to_owned()),
            state,
            ..JobFilter::default()
        };
        let queue = f.queue.clone();
        async move {
            let mut ids = list_ids(queue.as_ref(), &filter).await;
            ids.sort();
            ids
        }
    };
    assert_eq!(
        find(Some("acme"), "wamid.1", None).await,
        ["acme:1", "acme:1b"]
    );
    assert_eq!(
        find(None, "wamid.1", None).await,
        ["acme:1", "acme:1b", "globex:1"]
    );
    assert_eq!(
        find(Some("globex"), "wamid.2", None).await,
        Vec::<String>::new()
    );
    assert_eq!(
        find(Some("acme"), "wamid.", None).await,
        Vec::<String>::new()
    );
    assert_eq!(
        find(Some("acme"), "WAMID.1", None).await,
        Vec::<String>::new()
    );
    assert_eq!(
        find(Some("acme"), "wamid.2", Some(JobState::Pending)).await,
        ["acme:2"]
    );
    assert_eq!(
        find(Some("acme"), "wamid.2", Some(JobState::Done)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        find(None, "BAE5F4886F6F2D05", None).await,
        ["acme:BAE5F4886F6F2D05", "globex:BAE5F4886F6F2D05"]
    );
    assert_eq!(
        find(Some("globex"), "BAE5F4886F6F2D05", Some(JobState::Pending)).await,
        ["globex:BAE5F4886F6F2D05"]
    );
    assert_eq!(find(Some("acme"), "BAE5", None).await, Vec::<String>::new());
    let record = f.queue.get("acme:1b").await.expect("get").expect("exists");
    assert_eq!(record.message_id, "wamid.1");
    assert_eq!(record.media_id.as_deref(), Some("media-1b"));
}

/// Admin requeue: a dead, pending or waiting job becomes pending and ready
/// now with its backoff reset (last error kept); a done or leased job, or an
/// absent one, is refused. `retry_all` does that for every job in a state.
pub async fn retry_now_and_retry_all_requeue_at_once(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.enqueue(vec![
        job("dead"),
        job("backing-off"),
        job("parked"),
        job("done"),
        job("leased"),
    ])
    .await;
    let leases = f.lease_by_id(5).await;
    f.fail(&leases["acme:dead"], ErrorClass::Permanent, "gone")
        .await;
    // Its stored interval is now 20 s.
    f.fail(&leases["acme:backing-off"], ErrorClass::Transient, "slow")
        .await;
    f.queue
        .park(&leases["acme:parked"], T0 + DAY)
        .await
        .expect("park");
    f.queue.complete(&leases["acme:done"]).await.expect("done");

    f.advance_ms(SEC);
    for id in ["acme:dead", "acme:backing-off", "acme:parked"] {
        assert!(f.queue.retry_now(id).await.expect("retry_now"), "{id}");
        let record = f.get(id).await;
        assert_eq!(record.state, JobState::Pending, "{id}");
        assert_eq!(record.next_attempt_at, f.now(), "{id}");
    }
    assert_eq!(f.get("acme:dead").await.last_error.as_deref(), Some("gone"));
    assert_eq!(
        f.get("acme:backing-off").await.last_error.as_deref(),
        Some("slow")
    );
    for id in ["acme:done", "acme:leased", "acme:absent"] {
        assert!(!f.queue.retry_now(id).await.expect("retry_now"), "{id}");
    }
    assert_eq!(f.get("acme:done").await.state, JobState::Done);
    assert_eq!(f.get("acme:leased").await.state, JobState::Leased);

    let again = f.lease_by_id(10).await;
    let ready: Vec<&str> = again.keys().map(String::as_str).collect();
    assert_eq!(ready, ["acme:backing-off", "acme:dead", "acme:parked"]);
    // The backoff was reset: 10 s again, not 20 s.
    assert_jittered(f.fail_transient(&again["acme:backing-off"]).await, 10);

    // retry_all(Dead) requeues every dead job, and only those.
    f.fail(&again["acme:dead"], ErrorClass::Permanent, "gone")
        .await;
    f.fail(&again["acme:parked"], ErrorClass::Permanent, "gone")
        .await;
    f.fail(&leases["acme:leased"], ErrorClass::Permanent, "gone")
        .await;
    assert_eq!(f.retry_all(JobState::Dead).await, 3);
    assert_eq!(
        f.list(Some(JobState::Dead), None).await,
        Vec::<String>::new()
    );
    assert_eq!(f.retry_all(JobState::Dead).await, 0);
    assert_eq!(f.retry_all(JobState::Done).await, 0);
    assert_eq!(f.get("acme:done").await.state, JobState::Done);
    let mut ready = f.lease_ids(10).await; // `backing-off` is not due yet
    ready.sort();
    assert_eq!(ready, ["acme:dead", "acme:leased", "acme:parked"]);
    assert_eq!(f.retry_all(JobState::Leased).await, 0);
    // retry_all(Pending) makes backing-off jobs ready now.
    assert_eq!(f.retry_all(JobState::Pending).await, 1);
    assert_eq!(f.lease_ids(10).await, ["acme:backing-off"]);
}

/// Stats count every state (zeros included) overall and per account, give
/// the oldest pending job's `created_at`, and count live jobs whose deadline
/// is within the window as at risk.
pub async fn stats_count_states_accounts_oldest_pending_and_at_risk(factory: impl QueueFactory) {
    let f = start(&factory).await;
    let stats = f.stats(Duration::from_secs(86_400)).await;
    let states: Vec<&str> = stats.by_state.keys().map(String::as_str).collect();
    assert_eq!(
        states,
        ["dead", "done", "erased", "leased", "pending", "waiting"]
    );
    assert!(stats.by_state.values().all(|n| *n == 0));
    assert!(stats.by_account.is_empty());
    assert_eq!(stats.oldest_pending, None);
    assert_eq!(stats.at_risk, 0);

    // Leased first (earliest deadlines), then the rest.
    f.enqueue(vec![
        job_of("globex", "leased", T0 + HOUR),
        job_of("globex", "done", T0 + HOUR + 1),
        job_of("globex", "dead", T0 + HOUR + 2),
        job_of("globex", "waiting", T0 + HOUR + 3),
    ])
    .await;
    let leases = f.lease(4).await;
    f.queue.complete(&leases[1]).await.expect("complete");
    f.fail(&leases[2], ErrorClass::Permanent, "gone").await;
    f.queue.park(&leases[3], T0 + DAY).await.expect("park");
    f.advance_ms(MIN);
    f.enqueue(vec![job_of("acme", "urgent", T0 + 2 * HOUR)])
        .await;
    f.advance_ms(MIN);
    f.enqueue(vec![job_of("acme", "relaxed", T0 + 3 * DAY)])
        .await;

    let stats = f.stats(Duration::from_secs(86_400)).await;
    let expected: BTreeMap<String, u64> = [
        ("pending", 2),
        ("leased", 1),
        ("waiting", 1),
        ("done", 1),
        ("dead", 1),
        ("erased", 0),
    ]
    .into_iter()
    .map(|(state, n)| (state.to_owned(), n))
    .collect();
    assert_eq!(stats.by_state, expected);
    let acme = &stats.by_account["acme"];
    assert_eq!(acme.len(), 6, "every state per account: {acme:?}");
    assert_eq!(acme["pending"], 2);
    assert_eq!(acme.values().sum::<u64>(), 2);
    let globex = &stats.by_account["globex"];
    assert_eq!(globex["pending"], 0);
    for state in ["leased", "waiting", "done", "dead"] {
        assert_eq!(globex[state], 1, "{state}");
    }
    assert_eq!(stats.by_account.len(), 2);
    assert_eq!(stats.oldest_pending, Some(T0 + MIN));
    // Within 24 h and live: globex leased + waiting, acme urgent.
    assert_eq!(stats.at_risk, 3);
    assert_eq!(f.stats(Duration::ZERO).await.at_risk, 0);
    // A deadline already passed still counts as at risk until dead.
    f.advance_ms(HOUR);
    let stats = f.stats(Duration::ZERO).await;
    assert_eq!(stats.at_risk, 2, "globex leased and waiting are past due");
    let value = serde_json::to_value(&stats).expect("serializes");
    assert!(value["by_state"]["pending"].is_u64());
}

/// What a queue acknowledged is still there after the queue is dropped and
/// its storage reopened: jobs, backoff state and leases (the tokens are data).
pub async fn committed_jobs_and_leases_survive_reopen(factory: impl QueueFactory) {
    let clock = ManualClock::new(T0);
    let queue = factory.open(Arc::new(clock.clone()), test_policy()).await;
    let f = Fixture {
        clock: clock.clone(),
        queue,
    };
    f.enqueue(vec![job("a"), job("b"), job("c")]).await;
    let held = f.lease_one("acme:a").await;
    let b = f.lease_one("acme:b").await;
    let delay = f.fail_transient(&b).await;
    let before: Vec<serde_json::Value> = {
        let mut all = Vec::new();
        for id in ["acme:a", "acme:b", "acme:c"] {
            all.push(json(&f.get(id).await));
        }
        all
    };
    drop(f);

    let queue = factory.open(Arc::new(clock.clone()), test_policy()).await;
    let f = Fixture { clock, queue };
    for (id, before) in ["acme:a", "acme:b", "acme:c"].into_iter().zip(before) {
        assert_eq!(json(&f.get(id).await), before, "{id}");
    }
    assert_eq!(
        f.enqueue(vec![job("a"), job("c")]).await,
        [Enqueued::Duplicate, Enqueued::Duplicate]
    );
    // The lease taken before the restart still holds its job.
    f.queue
        .complete(&held)
        .await
        .expect("complete after reopen");
    f.advance_ms(delay);
    let leases = f.lease(10).await;
    let mut ready = ids(&leases);
    ready.sort();
    assert_eq!(ready, ["acme:b", "acme:c"]);
    // `b`'s backoff continued from the stored interval (20 s, not 10 s).
    let b = leases
        .iter()
        .find(|lease| lease.job.id == "acme:b")
        .expect("b");
    assert_jittered(f.fail_transient(b).await, 20);
}

/// Fifty concurrent enqueues of overlapping batches (one id shared by all,
/// one shared by pairs, one per task) create each job exactly once.
pub async fn concurrent_enqueues_yield_exactly_one_new_per_id(factory: impl QueueFactory) {
    let f = start(&factory).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let queue = f.queue.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let batch = vec![
                    job("shared"),
                    job(&format!("own-{i}")),
                    job(&format!("pair-{}", i / 2)),
                    job("shared"),
                ];
                let ids: Vec<String> = batch.iter().map(|job| job.id.clone()).collect();
                barrier.wait().await;
                let outcome = queue.enqueue(batch).await.expect("enqueue");
                ids.into_iter().zip(outcome).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut new_per_id: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        let outcome = task.await.expect("task");
        assert_eq!(outcome.len(), 4);
        assert_eq!(outcome[3].1, Enqueued::Duplicate, "repeat within a batch");
        for (id, enqueued) in outcome {
            let count = new_per_id.entry(id).or_default();
            if enqueued == Enqueued::New {
                *count += 1;
            }
        }
    }
    assert_eq!(new_per_id.len(), 1 + 50 + 25);
    for (id, count) in &new_per_id {
        assert_eq!(*count, 1, "{id} should be New exactly once");
    }
    let all = f
        .queue
        .list(&JobFilter {
            limit: 1000,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 76);
}

/// `ping` answers while the backend is usable.
pub async fn ping_answers(factory: impl QueueFactory) {
    let f = start(&factory).await;
    f.queue.ping().await.expect("ping");
    f.enqueue(vec![job("a")]).await;
    f.queue.ping().await.expect("ping");
}

// ---------------------------------------------------------------------------
// Outbox

/// The backend's outbox; every backend under this suite keeps one.
fn outbox(f: &Fixture) -> &dyn Outbox {
    f.queue.outbox().expect("the backend keeps an outbox")
}

fn route(target: &str, event: NotifyEvent, account: Option<&str>, max_age_ms: i64) -> Route {
    Route {
        target: target.to_owned(),
        event,
        account: account.map(str::to_owned),
        max_age: Duration::from_millis(u64::try_from(max_age_ms).expect("positive")),
    }
}

/// Every delivery, keyed by id.
async fn deliveries(f: &Fixture) -> BTreeMap<String, Delivery> {
    let filter = DeliveryFilter {
        limit: DeliveryFilter::default().effective_limit(),
        ..DeliveryFilter::default()
    };
    outbox(f)
        .list_deliveries(&filter)
        .await
        .expect("list deliveries")
        .into_iter()
        .map(|d| (d.id.clone(), d))
        .collect()
}

async fn claim(f: &Fixture, target: &str, hold_ms: i64) -> Vec<Delivery> {
    let claimed = claim_all(f, target, hold_ms).await;
    assert!(claimed.expired.is_empty(), "{:?}", claimed.expired);
    claimed.deliveries
}

/// A claim of up to 10 deliveries, and those it found expired.
async fn claim_all(f: &Fixture, target: &str, hold_ms: i64) -> Claimed {
    outbox(f)
        .claim_deliveries(
            target,
            10,
            Duration::from_millis(u64::try_from(hold_ms).expect("positive")),
        )
        .await
        .expect("claim")
}

/// A target with a route for every account and one for the job's own
/// account is told once: one delivery, counted once as pending, gone from
/// the count once delivered. Deliveries made at the same instant are
/// listed by id.
pub async fn overlapping_routes_of_one_target_make_one_delivery(factory: impl QueueFactory) {
    let f = start(&factory).await;
    outbox(&f)
        .set_routes(&[
            route("crm", NotifyEvent::Archived, None, DAY),
            route("crm", NotifyEvent::Archived, Some("acme"), DAY),
            route("audit", NotifyEvent::Archived, None, DAY),
        ])
        .await
        .expect("set routes");
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one(&job("a").id).await;
    f.queue.complete(&lease).await.expect("complete");
    let made = deliveries(&f).await;
    assert_eq!(
        made.keys().collect::<Vec<_>>(),
        ["audit:acme:a:media.archived", "crm:acme:a:media.archived"]
    );
    let pending = outbox(&f).pending_deliveries().await.expect("pending");
    assert_eq!(pending.get("crm"), Some(&1), "{pending:?}");
    let first = outbox(&f)
        .list_deliveries(&DeliveryFilter {
            limit: 1,
            ..DeliveryFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(first[0].id, "audit:acme:a:media.archived", "ties by id");

    let claimed = claim(&f, "crm", 60 * SEC).await;
    assert_eq!(claimed.len(), 1);
    outbox(&f).delivered(&claimed[0]).await.expect("delivered");
    let pending = outbox(&f).pending_deliveries().await.expect("pending");
    assert_eq!(pending.get("crm"), None, "{pending:?}");
}

/// A job that becomes `done` or `dead` commits, with that transition, one
/// pending delivery per route matching its event and account, named
/// `{target}:{job id}:{event}`, due at once and dying `max_age` later; a
/// job still in flight has none; a dead job's delivery keeps its reason;
/// a job dead-lettered by a lease (deadline passed) gets one too; and
/// the deliveries survive a reopen.
pub async fn a_finished_job_commits_one_delivery_per_matching_route(factory: impl QueueFactory) {
    let f = start(&factory).await;
    outbox(&f)
        .set_routes(&[
            route("crm", NotifyEvent::Archived, None, DAY),
            route("crm", NotifyEvent::Dead, None, DAY),
            route("audit", NotifyEvent::Archived, Some("shop"), 3 * DAY),
        ])
        .await
        .expect("set routes");
    f.enqueue(vec![
        job("done"),
        job_of("shop", "done", T0 + 7 * DAY),
        job("dead"),
        job("running"),
    ])
    .await;
    let leases = f.lease_by_id(4).await;
    f.enqueue(vec![job_of("acme", "late", T0 + MIN)]).await;
    assert!(deliveries(&f).await.is_empty(), "leasing notifies nothing");

    f.advance_ms(SEC);
    f.queue
        .complete(&leases["acme:done"])
        .await
        .expect("complete");
    f.queue
        .complete(&leases["shop:done"])
        .await
        .expect("complete");
    f.fail(
        &leases["acme:dead"],
        ErrorClass::Permanent,
        "sha256 mismatch",
    )
    .await;
    f.advance_ms(HOUR);
    let expired = f.queue.lease(10, LEASE).await.expect("lease").expired;
    assert_eq!(
        expired.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["acme:late"]
    );

    let found = deliveries(&f).await;
    assert_eq!(
        found.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "audit:shop:done:media.archived",
            "crm:acme:dead:media.dead",
            "crm:acme:done:media.archived",
            "crm:acme:late:media.dead",
            "crm:shop:done:media.archived",
        ],
        "one delivery per matching route, none for the running job"
    );
    let done = &found["crm:acme:done:media.archived"];
    assert_eq!(
        (done.target.as_str(), done.job_id.as_str(), done.event),
        ("crm", "acme:done", NotifyEvent::Archived)
    );
    assert_eq!(done.state, DeliveryState::Pending);
    assert_eq!(done.attempts, 0);
    assert_eq!(done.created_at, T0 + SEC, "committed at the transition");
    assert_eq!(done.next_attempt_at, T0 + SEC, "due at once");
    assert_eq!(
        done.deadline,
        T0 + SEC + DAY,
        "max_age after the transition"
    );
    assert_eq!(
        found["audit:shop:done:media.archived"].deadline,
        T0 + SEC + 3 * DAY
    );
    assert_eq!(
        found["crm:acme:dead:media.dead"].job_error.as_deref(),
        Some("sha256 mismatch"),
        "the dead reason travels with the event"
    );
    assert!(
        found["crm:acme:late:media.dead"]
            .job_error
            .as_deref()
            .is_some_and(|e| e.starts_with("expired:"))
    );
    let pending = outbox(&f).pending_deliveries().await.expect("pending");
    assert_eq!(
        pending,
        BTreeMap::from([("audit".to_owned(), 1), ("crm".to_owned(), 4)])
    );

    drop(f.queue);
    let reopened = Fixture {
        queue: factory.open(Arc::new(f.clock.clone()), test_policy()).await,
        clock: f.clock,
    };
    assert_eq!(deliveries(&reopened).await, found, "committed, not cached");
}

/// A claim hands out a target's due deliveries, counts the attempt, and
/// hides them until its hold passes; then they can be claimed again, and
/// the older claim's report is refused (`LeaseLost`), so a sender that
/// lost its claim never overwrites the outcome of the one that took over.
/// Other targets' deliveries are not claimed.
pub async fn a_claimed_delivery_is_hidden_for_its_hold_and_fenced(factory: impl QueueFactory) {
    let f = start(&factory).await;
    outbox(&f)
        .set_routes(&[
            route("crm", NotifyEvent::Archived, None, DAY),
            route("audit", NotifyEvent::Archived, None, DAY),
        ])
        .await
        .expect("set routes");
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one("acme:a").await;
    f.queue.complete(&lease).await.expect("complete");

    let first = claim(&f, "crm", MIN).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, "crm:acme:a:media.archived");
    assert_eq!(first[0].attempts, 1);
    assert!(claim(&f, "crm", MIN).await.is_empty(), "hidden while held");
    f.advance_ms(MIN + 1);
    let second = claim(&f, "crm", MIN).await;
    assert_eq!(second.len(), 1, "claimable again once the hold passed");
    assert_eq!(second[0].attempts, 2);
    assert!(matches!(
        outbox(&f).delivered(&first[0]).await,
        Err(QueueError::LeaseLost { .. })
    ));
    outbox(&f).delivered(&second[0]).await.expect("delivered");
    let found = deliveries(&f).await;
    assert_eq!(
        found["crm:acme:a:media.archived"].state,
        DeliveryState::Delivered
    );
    assert_eq!(
        found["audit:acme:a:media.archived"].state,
        DeliveryState::Pending,
        "another target's delivery is its own"
    );
    f.advance_ms(DAY / 2);
    assert!(claim(&f, "crm", MIN).await.is_empty(), "delivered is final");
    assert_eq!(claim(&f, "audit", MIN).await.len(), 1);
}

/// A failed send is retried with the jobs' backoff; a retry that would
/// fall after `created_at + max_age` makes the delivery dead with the
/// jobs' expired reason; a permanent failure is dead at once.
pub async fn a_failing_delivery_backs_off_until_max_age_then_dies(factory: impl QueueFactory) {
    let f = start(&factory).await;
    outbox(&f)
        .set_routes(&[route("crm", NotifyEvent::Archived, None, MIN)])
        .await
        .expect("set routes");
    f.enqueue(vec![job("a"), job("b")]).await;
    for lease in f.lease(2).await {
        f.queue.complete(&lease).await.expect("complete");
    }
    let claimed = claim(&f, "crm", 30 * SEC).await;
    assert_eq!(claimed.len(), 2);
    let (a, b) = (&claimed[0], &claimed[1]);
    let refused = outbox(&f)
        .delivery_failed(b, ErrorClass::Permanent, "HTTP 410 Gone")
        .await
        .expect("failed");
    assert_eq!(
        refused,
        Disposition::Dead {
            reason: "HTTP 410 Gone".to_owned()
        },
        "a permanent failure is dead at once"
    );

    let retry_at = match outbox(&f)
        .delivery_failed(a, ErrorClass::Transient, "HTTP 500")
        .await
        .expect("failed")
    {
        Disposition::RetryAt(at) => at,
        dead => panic!("expected a retry, got {dead:?}"),
    };
    assert_jittered(retry_at - f.now(), 10);
    f.advance_ms(retry_at - f.now() - 1);
    assert!(
        claim(&f, "crm", 30 * SEC).await.is_empty(),
        "not before the backoff"
    );
    f.advance_ms(1);
    let again = claim(&f, "crm", 30 * SEC).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[0].last_error.as_deref(), Some("HTTP 500"));

    // Keep failing: the backoff soon reaches past the one-minute max_age.
    let mut current = again.into_iter().next().expect("claimed");
    let reason = loop {
        match outbox(&f)
            .delivery_failed(&current, ErrorClass::Transient, "timeout after 10s")
            .await
            .expect("failed")
        {
            Disposition::RetryAt(at) => {
                assert!(at <= current.deadline, "never retried past max_age");
                f.advance_ms(at - f.now());
                current = claim(&f, "crm", 30 * SEC).await.remove(0);
            }
            Disposition::Dead { reason } => break reason,
        }
    };
    assert!(reason.starts_with("expired:"), "{reason}");
    assert!(reason.contains("timeout after 10s"), "{reason}");

    let found = deliveries(&f).await;
    assert!(found.values().all(|d| d.state == DeliveryState::Dead));
    assert_eq!(
        found["crm:acme:a:media.archived"].last_error.as_deref(),
        Some(reason.as_str())
    );
    assert!(
        outbox(&f)
            .pending_deliveries()
            .await
            .expect("pending")
            .is_empty()
    );
    f.advance_ms(DAY);
    assert!(claim(&f, "crm", 30 * SEC).await.is_empty(), "dead is final");
}

/// An admin retry makes a dead delivery pending and due now with a fresh
/// `max_age` window (each retry's window starts at that retry); a pending
/// one is left alone (it may be being sent), a delivered one is not resent,
/// an unknown id is unknown. A job dead-lettered again after its own retry
/// re-arms its `media.dead` delivery under the same id with the new time
/// and reason, and fences off a send of the old event still in flight.
pub async fn an_admin_retry_rearms_a_dead_delivery(factory: impl QueueFactory) {
    let f = start(&factory).await;
    outbox(&f)
        .set_routes(&[route("crm", NotifyEvent::Dead, None, HOUR)])
        .await
        .expect("set routes");
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one("acme:a").await;
    f.fail(&lease, ErrorClass::Permanent, "first reason").await;
    let id = "crm:acme:a:media.dead";
    let claimed = claim(&f, "crm", MIN).await.remove(0);
    assert_eq!(
        outbox(&f).retry_delivery(id).await.expect("retry"),
        Retried::NotDead(DeliveryState::Pending),
        "a pending delivery (here: being sent) is not sent twice"
    );
    outbox(&f)
        .delivery_failed(&claimed, ErrorClass::Permanent, "HTTP 404")
        .await
        .expect("failed");
    assert_eq!(deliveries(&f).await[id].state, DeliveryState::Dead);

    for _ in 0..2 {
        f.advance_ms(2 * HOUR);
        assert_eq!(
            outbox(&f).retry_delivery(id).await.expect("retry"),
            Retried::Requeued
        );
        let rearmed = &deliveries(&f).await[id];
        assert_eq!(rearmed.state, DeliveryState::Pending);
        assert_eq!(rearmed.next_attempt_at, f.now());
        assert_eq!(rearmed.deadline, f.now() + HOUR, "a fresh max_age window");
        assert_eq!(rearmed.created_at, T0, "the event's time stays the death's");
        let claimed = claim(&f, "crm", MIN).await.remove(0);
        outbox(&f)
            .delivery_failed(&claimed, ErrorClass::Permanent, "HTTP 404")
            .await
            .expect("failed");
    }
    f.advance_ms(HOUR);
    assert_eq!(
        outbox(&f).retry_delivery(id).await.expect("retry"),
        Retried::Requeued
    );
    let claimed = claim(&f, "crm", MIN).await.remove(0);
    outbox(&f).delivered(&claimed).await.expect("delivered");
    assert_eq!(
        outbox(&f).retry_delivery(id).await.expect("retry"),
        Retried::NotDead(DeliveryState::Delivered)
    );
    assert_eq!(
        outbox(&f)
            .retry_delivery("crm:nope:media.dead")
            .await
            .expect("retry"),
        Retried::Unknown
    );

    // The job itself is retried and dies again while a send of the old
    // event is in flight.
    assert!(f.queue.retry_now("acme:a").await.expect("retry job"));
    let lease = f.lease_one("acme:a").await;
    f.fail(&lease, ErrorClass::Permanent, "second reason").await;
    let in_flight = claim(&f, "crm", MIN).await.remove(0);
    assert!(f.queue.retry_now("acme:a").await.expect("retry job"));
    f.advance_ms(SEC);
    let lease = f.lease_one("acme:a").await;
    f.fail(&lease, ErrorClass::Permanent, "third reason").await;
    let again = &deliveries(&f).await[id];
    assert_eq!(again.state, DeliveryState::Pending, "re-armed");
    assert_eq!(again.job_error.as_deref(), Some("third reason"));
    assert_eq!(again.created_at, f.now(), "the new death's time");
    assert!(
        matches!(
            outbox(&f).delivered(&in_flight).await,
            Err(QueueError::LeaseLost { .. })
        ),
        "the old event's send cannot mark the new one delivered"
    );
    assert_eq!(deliveries(&f).await[id].state, DeliveryState::Pending);
}

/// A due delivery found past its deadline (the daemon was down longer than
/// `max_age`) becomes dead with the expired reason, naming its last error,
/// and is reported by the claim that made it so, once.
pub async fn a_delivery_past_its_deadline_is_reported_dead_by_the_claim(
    factory: impl QueueFactory,
) {
    let f = start(&factory).await;
    outbox(&f)
        .set_routes(&[route("crm", NotifyEvent::Archived, None, MIN)])
        .await
        .expect("set routes");
    f.enqueue(vec![job("a"), job("b")]).await;
    for lease in f.lease(2).await {
        f.queue.complete(&lease).await.expect("complete");
    }
    let claimed = claim(&f, "crm", 30 * SEC).await;
    let failed = claimed.iter().find(|d| d.job_id == "acme:a").expect("a");
    outbox(&f)
        .delivery_failed(failed, ErrorClass::Transient, "HTTP 502")
        .await
        .expect("failed");

    f.advance_ms(HOUR);
    let after = claim_all(&f, "crm", 30 * SEC).await;
    assert!(after.deliveries.is_empty(), "{:?}", after.deliveries);
    let mut expired: Vec<_> = after.expired.iter().map(|d| d.job_id.as_str()).collect();
    expired.sort_unstable();
    assert_eq!(expired, ["acme:a", "acme:b"]);
    let a = after.expired.iter().find(|d| d.job_id == "acme:a").unwrap();
    assert_eq!(a.state, DeliveryState::Dead);
    assert_eq!(
        a.last_error.as_deref(),
        Some("expired: max_age passed before it could be delivered; last error: HTTP 502")
    );
    let again = claim_all(&f, "crm", 30 * SEC).await;
    assert!(again.expired.is_empty() && again.deliveries.is_empty());
}

/// Two claims at once never take the same delivery.
pub async fn concurrent_claims_take_disjoint_deliveries(factory: impl QueueFactory) {
    let f = start(&factory).await;
    outbox(&f)
        .set_routes(&[route("crm", NotifyEvent::Archived, None, DAY)])
        .await
        .expect("set routes");
    let jobs: Vec<JobSpec> = (0..40).map(|i| job(&format!("j{i}"))).collect();
    f.enqueue(jobs).await;
    for lease in f.lease(40).await {
        f.queue.complete(&lease).await.expect("complete");
    }
    let claims: Vec<_> = (0..4)
        .map(|_| {
            let queue = f.queue.clone();
            tokio::spawn(async move {
                queue
                    .outbox()
                    .expect("outbox")
                    .claim_deliveries("crm", 15, Duration::from_secs(60))
                    .await
                    .expect("claim")
                    .deliveries
            })
        })
        .collect();
    let mut taken = Vec::new();
    for claim in claims {
        taken.extend(claim.await.expect("claim task").into_iter().map(|d| d.id));
    }
    let distinct: HashSet<&String> = taken.iter().collect();
    assert_eq!(taken.len(), 40, "every delivery claimed: {taken:?}");
    assert_eq!(distinct.len(), 40, "none twice: {taken:?}");
}

/// Replacing the routes gives up the pending deliveries of a target no
/// route names any more (no sender would claim them), and counts them;
/// the remaining targets' deliveries stay pending.
pub async fn a_removed_target_s_pending_deliveries_are_given_up(factory: impl QueueFactory) {
    let f = start(&factory).await;
    outbox(&f)
        .set_routes(&[
            route("crm", NotifyEvent::Archived, None, DAY),
            route("old", NotifyEvent::Archived, None, DAY),
        ])
        .await
        .expect("set routes");
    f.enqueue(vec![job("a")]).await;
    let lease = f.lease_one("acme:a").await;
    f.queue.complete(&lease).await.expect("complete");
    let removed = outbox(&f)
        .set_routes(&[route("crm", NotifyEvent::Archived, None, DAY)])
        .await
        .expect("set routes");
    assert_eq!(removed, 1);
    let found = deliveries(&f).await;
    assert_eq!(
        found["old:acme:a:media.archived"].state,
        DeliveryState::Dead
    );
    assert_eq!(
        found["old:acme:a:media.archived"].last_error.as_deref(),
        Some("its [[notify]] target is no longer configured")
    );
    assert_eq!(
        found["crm:acme:a:media.archived"].state,
        DeliveryState::Pending
    );
}

// ---------------------------------------------------------------------------
// Erasure

/// The backend's erasure bookkeeping; every backend under this suite has it.
fn erasures(f: &Fixture) -> &dyn Erasures {
    f.queue.erasures().expect("the backend keeps a blob index")
}

const STORE: &str = "s3:test/bucket";

/// A job of `acme` in `chat`.
fn job_in(key: &str, chat: &str) -> JobSpec {
    let mut spec = job(key);
    spec.chat_id = Some(chat.to_owned());
    spec
}

/// The ref a lease on `job` records for `blob`.
fn blob_ref(lease: &Lease, blob: &str) -> BlobRef {
    BlobRef {
        store: STORE.to_owned(),
        blob_key: blob.to_owned(),
        account: lease.job.account.clone(),
        message_id: lease.job.message_id.clone(),
        chat_id: Some(format!("chat-of-{}", lease.job.message_id)),
        message_at: lease.job.message_at,
    }
}

/// Leases `key`, records its message's use of `blob` in `chat`, and
/// completes it: what the worker does for an archived file.
async fn archive(f: &Fixture, key: &str, chat: &str, blob: &str) {
    f.enqueue(vec![job_in(key, chat)]).await;
    let lease = f.lease_one(&format!("acme:{key}")).await;
    let mut r = blob_ref(&lease, blob);
    r.chat_id = Some(chat.to_owned());
    erasures(f).record_ref(&lease, &r).await.expect("record");
    f.queue.complete(&lease).await.expect("complete");
}

fn chat_filter(chat: &str) -> ErasureFilter {
    ErasureFilter {
        account: "acme".into(),
        chat_id: Some(chat.into()),
        ..ErasureFilter::default()
    }
}

/// Plans an erasure of `filter` (not a dry run) and, as the eraser does
/// once the manifests are deleted, commits it.
async fn erase_now(f: &Fixture, filter: &ErasureFilter) -> (ErasurePlan, CommittedErasure) {
    let plan = erasures(f)
        .plan_erasure(STORE, filter, false)
        .await
        .expect("plan")
        .expect("not refused");
    let done = erasures(f)
        .commit_erasure(STORE, &filter.account, &plan.messages)
        .await
        .expect("commit");
    (plan, done)
}

/// Erasing a chat takes its archived messages (committed, their refs go),
/// ends its unfinished jobs `erased` at once (terminal: a retry and a
/// redelivery leave it so), marks the blobs no other message names for
/// deletion, and keeps a blob another chat's message still names; a dry
/// run reports what the real run then does, and changes nothing. Erasing
/// the other chat then lets the shared blob go. Until a store's index is
/// complete, an erasure in it is refused.
pub async fn an_erasure_takes_a_chat_s_messages_and_keeps_blobs_other_chats_name(
    factory: impl QueueFactory,
) {
    let f = start(&factory).await;
    archive(&f, "a", "chat-1", "blobs/x").await;
    archive(&f, "b", "chat-1", "blobs/y").await;
    archive(&f, "c", "chat-2", "blobs/x").await;
    f.enqueue(vec![job_in("d", "chat-1"), job_in("e", "chat-2")])
        .await;
    assert_eq!(
        erasures(&f)
            .plan_erasure(STORE, &chat_filter("chat-1"), true)
            .await
            .expect("plan"),
        Err(ErasureRefused::IndexIncomplete)
    );
    assert!(!erasures(&f).index_complete(STORE).await.expect("complete?"));
    erasures(&f).mark_index_complete(STORE).await.expect("mark");

    let dry = erasures(&f)
        .plan_erasure(STORE, &chat_filter("chat-1"), true)
        .await
        .expect("plan")
        .expect("not refused");
    assert_eq!(
        f.get("acme:d").await.state,
        JobState::Pending,
        "a dry run changes nothing"
    );
    let (plan, done) = erase_now(&f, &chat_filter("chat-1")).await;
    assert_eq!(plan, dry, "a dry run counts what the real run does");
    assert_eq!(
        plan.messages,
        [
            ErasedMessage {
                message_id: "wamid.a".into(),
                message_at: T0 - HOUR
            },
            ErasedMessage {
                message_id: "wamid.b".into(),
                message_at: T0 - HOUR
            },
        ]
    );
    assert_eq!((plan.blobs_unshared, plan.blobs_kept_shared), (1, 1));
    assert_eq!(plan.jobs_erased, 1, "d; a and b are done");
    assert_eq!(done.blobs_to_delete, ["blobs/y"]);
    assert_eq!(done.blobs_kept_shared, 1, "blobs/x is chat-2's too");

    let d = f.get("acme:d").await;
    assert_eq!(d.state, JobState::Erased);
    assert!(
        !f.queue.retry_now("acme:d").await.expect("retry"),
        "erased is terminal"
    );
    assert_eq!(
        f.enqueue(vec![job_in("d", "chat-1")]).await,
        [Enqueued::Duplicate]
    );
    assert_eq!(
        f.get("acme:d").await.state,
        JobState::Erased,
        "a redelivery is ignored"
    );
    assert_eq!(
        f.get("acme:e").await.state,
        JobState::Pending,
        "another chat's job"
    );
    assert_eq!(
        f.get("acme:a").await.state,
        JobState::Done,
        "done jobs stay done"
    );
    let stats = f.stats(Duration::ZERO).await;
    assert_eq!(stats.by_state["erased"], 1);

    assert_eq!(
        erasures(&f)
            .unfinished_blob_erasures(STORE)
            .await
            .expect("marks"),
        ["blobs/y"],
        "marked until deleted"
    );
    assert!(
        erasures(&f)
            .confirm_blob_erasure(STORE, "blobs/y")
            .await
            .expect("confirm")
    );
    erasures(&f)
        .end_blob_erasure(STORE, "blobs/y")
        .await
        .expect("end");
    assert!(
        erasures(&f)
            .unfinished_blob_erasures(STORE)
            .await
            .expect("marks")
            .is_empty()
    );
    let (again, _) = erase_now(&f, &chat_filter("chat-1")).await;
    assert!(again.messages.is_empty() && again.blobs_unshared == 0);

    let (other, done) = erase_now(&f, &chat_filter("chat-2")).await;
    assert_eq!(
        done.blobs_to_delete,
        ["blobs/x"],
        "the last message naming it went"
    );
    assert_eq!(other.jobs_erased, 1, "e");
}

/// A matching job being archived right now refuses the erasure, and
/// nothing changes: its attempt could write a manifest after the erasure.
pub async fn an_erasure_is_refused_while_a_matching_job_is_leased(factory: impl QueueFactory) {
    let f = start(&factory).await;
    erasures(&f).mark_index_complete(STORE).await.expect("mark");
    archive(&f, "a", "chat-1", "blobs/x").await;
    f.enqueue(vec![job_in("b", "chat-1"), job_in("p", "chat-1")])
        .await;
    let _running = f.lease_one("acme:b").await;
    let refused = erasures(&f)
        .plan_erasure(STORE, &chat_filter("chat-1"), false)
        .await
        .expect("plan");
    assert_eq!(refused, Err(ErasureRefused::InFlight("acme:b".into())));
    assert_eq!(
        f.get("acme:p").await.state,
        JobState::Pending,
        "nothing changed"
    );
    let by_message = ErasureFilter {
        account: "acme".into(),
        message_ids: vec!["wamid.a".into()],
        ..ErasureFilter::default()
    };
    let (_, done) = erase_now(&f, &by_message).await;
    assert_eq!(
        done.blobs_to_delete,
        ["blobs/x"],
        "another message of the chat is not in the way"
    );
}

/// The two orders of an erasure racing a new message with the same blob:
/// recorded first, the blob is kept (the first case); committed first, the
/// record is refused (`BlobBeingErased`, retried later) until the blob is
/// deleted, then goes through. A record needs the lease; a mark whose
/// erasure died (stale) is taken over, and the dead erasure's blob kept.
pub async fn a_blob_being_erased_is_not_recorded_until_the_erasure_is_over(
    factory: impl QueueFactory,
) {
    let f = start(&factory).await;
    erasures(&f).mark_index_complete(STORE).await.expect("mark");
    archive(&f, "a", "chat-1", "blobs/x").await;
    let (_, done) = erase_now(&f, &chat_filter("chat-1")).await;
    assert_eq!(done.blobs_to_delete, ["blobs/x"]);

    f.enqueue(vec![job_in("b", "chat-2")]).await;
    let lease = f.lease_one("acme:b").await;
    let refused = erasures(&f)
        .record_ref(&lease, &blob_ref(&lease, "blobs/x"))
        .await;
    assert!(
        matches!(refused, Err(QueueError::BlobBeingErased { ref blob_key }) if blob_key == "blobs/x"),
        "{refused:?}"
    );
    assert!(
        erasures(&f)
            .confirm_blob_erasure(STORE, "blobs/x")
            .await
            .expect("confirm")
    );
    erasures(&f)
        .end_blob_erasure(STORE, "blobs/x")
        .await
        .expect("end");
    erasures(&f)
        .record_ref(&lease, &blob_ref(&lease, "blobs/x"))
        .await
        .expect("recorded once the erasure is over");

    // A lease that lost its job records nothing.
    f.advance_ms(2 * LEASE.as_millis() as i64);
    let _other = f.lease_one("acme:b").await;
    assert_lease_lost(
        erasures(&f)
            .record_ref(&lease, &blob_ref(&lease, "blobs/z"))
            .await,
        "acme:b",
    );

    // An erasure that died after its commit: its mark goes stale, a
    // worker takes it over, and the blob it names is not deleted.
    archive(&f, "c", "chat-3", "blobs/w").await;
    erase_now(&f, &chat_filter("chat-3")).await;
    f.advance_ms(crate::backend::millis(crate::STALE_ERASURE) + 1);
    // Due before b, whose lease lapsed meanwhile.
    let mut d = job_of("acme", "d", T0 + 2 * DAY);
    d.chat_id = Some("chat-4".into());
    f.enqueue(vec![d]).await;
    let lease = f.lease_one("acme:d").await;
    erasures(&f)
        .record_ref(&lease, &blob_ref(&lease, "blobs/w"))
        .await
        .expect("a stale mark is taken over");
    assert!(
        erasures(&f)
            .unfinished_blob_erasures(STORE)
            .await
            .expect("marks")
            .is_empty(),
        "the mark went with the takeover"
    );
    assert!(
        !erasures(&f)
            .confirm_blob_erasure(STORE, "blobs/w")
            .await
            .expect("confirm"),
        "named again: not deleted"
    );
}

/// Refs restored by a scan of the archive (`erase --rebuild-index`) are
/// found by an erasure like the ones workers record; restoring twice
/// changes nothing; `before` keeps only older messages.
pub async fn refs_restored_from_a_scan_are_erased_like_recorded_ones(factory: impl QueueFactory) {
    let f = start(&factory).await;
    let scanned = |message: &str, blob: &str| BlobRef {
        store: STORE.into(),
        blob_key: blob.into(),
        account: "acme".into(),
        message_id: message.into(),
        chat_id: Some("chat-9".into()),
        message_at: T0 - DAY,
    };
    let refs = [scanned("old-1", "blobs/o"), scanned("old-2", "blobs/o")];
    for _ in 0..2 {
        erasures(&f).restore_refs(&refs).await.expect("restore");
    }
    erasures(&f).mark_index_complete(STORE).await.expect("mark");
    let first = ErasureFilter {
        account: "acme".into(),
        chat_id: Some("chat-9".into()),
        message_ids: vec!["old-1".into()],
        before: Some(T0),
    };
    let (plan, done) = erase_now(&f, &first).await;
    assert_eq!(plan.messages.len(), 1);
    assert_eq!(done.blobs_kept_shared, 1);
    let later = ErasureFilter {
        before: Some(T0 - 2 * DAY),
        ..chat_filter("chat-9")
    };
    let (none, _) = erase_now(&f, &later).await;
    assert!(
        none.messages.is_empty(),
        "before filters by the message's time"
    );
    let (_, rest) = erase_now(&f, &chat_filter("chat-9")).await;
    assert_eq!(rest.blobs_to_delete, ["blobs/o"]);
}
