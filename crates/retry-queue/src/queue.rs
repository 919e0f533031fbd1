use std::collections::BTreeMap;
use std::time::Duration;

use archiver_core::{ErrorClass, JobSpec, JobState, ProviderKind, UnixMillis};

use crate::QueueError;

/// A job as the queue keeps it: the [`JobSpec`] plus its life-cycle fields.
/// Serializes to the admin API's job shape (times as Unix milliseconds; the
/// HTTP layer formats them).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobRecord {
    /// `{account}:{media id or message id}`.
    pub id: String,
    /// The account the webhook arrived on.
    pub account: String,
    /// The account's provider.
    pub provider: ProviderKind,
    /// Where the job is in its life cycle.
    pub state: JobState,
    /// Attempts started (leases taken) since the job was last (re)queued by
    /// an enqueue; a released lease does not count.
    pub attempts: u32,
    /// When the provider forgets the file; no attempt is scheduled after it.
    pub deadline: UnixMillis,
    /// When a pending job becomes ready, or when a waiting job times out.
    pub next_attempt_at: UnixMillis,
    /// The latest error; for a dead job, the dead-letter reason.
    pub last_error: Option<String>,
    /// When the job was first enqueued.
    pub created_at: UnixMillis,
    /// The latest change of any kind (list order).
    pub updated_at: UnixMillis,
    /// The message id; the manifest is named after it.
    pub message_id: String,
    /// The provider's media id, for providers that have one.
    pub media_id: Option<String>,
    /// The message's own timestamp.
    pub message_at: UnixMillis,
    /// The adapter's reference to the media, verbatim.
    pub payload: serde_json::Value,
}

/// A job as `queue migrate` copies it between backends: the record, plus
/// what only the queue reads.
#[derive(Debug, Clone, PartialEq)]
pub struct MigratedJob {
    /// The job; a `leased` one is imported as `pending` (its worker is gone).
    pub job: JobRecord,
    /// The message's chat (erasure by chat).
    pub chat_id: Option<String>,
    /// Where the next failure's backoff starts (`None`: not failed since
    /// queued).
    pub backoff_interval_ms: Option<i64>,
}

/// A worker's time-limited hold on one job.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The job, as of the lease; `job.attempts` already counts this attempt.
    pub job: JobRecord,
    /// Fencing token: operations with an older token fail with
    /// [`QueueError::LeaseLost`].
    pub token: u64,
    /// When the lease lapses unless renewed; the job is then ready again.
    pub expires_at: UnixMillis,
}

/// What one [`JobQueue::lease`] call did: the jobs it handed out, and the
/// jobs it dead-lettered instead because their deadline had passed.
#[derive(Debug, Clone, Default)]
pub struct Leased {
    /// The jobs handed out, earliest deadline first.
    pub leases: Vec<Lease>,
    /// Ready jobs found past their deadline and moved to `dead` by this call,
    /// as stored afterwards (`last_error` is the reason, `expired: ...`).
    /// No worker holds them, so the queue reports them here, once, for the
    /// caller to log and count like any other dead job.
    pub expired: Vec<JobRecord>,
}

/// What [`JobQueue::enqueue`] did with one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job was committed.
    New,
    /// A job with this id already existed (a redelivered webhook). It was left
    /// alone, unless it was dead, in which case it was requeued.
    Duplicate,
}

/// What became of a failed attempt ([`JobQueue::fail`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// The job is pending again and becomes ready at this time.
    RetryAt(UnixMillis),
    /// The job was dead-lettered.
    Dead {
        /// Why, as stored in the job's `last_error`.
        reason: String,
    },
}

/// Which jobs [`JobQueue::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this account.
    pub account: Option<String>,
    /// Only jobs of this message (`JobRecord::message_id`, exact): how the
    /// admin API finds where a message's file went, whether its job id is
    /// keyed by message id or by media id.
    pub message_id: Option<String>,
    /// At most this many; 0 means [`JobFilter::DEFAULT_LIMIT`], and anything
    /// above [`JobFilter::MAX_LIMIT`] is capped.
    pub limit: usize,
}

impl JobFilter {
    /// The limit used when `limit` is 0.
    pub const DEFAULT_LIMIT: usize = 100;
    /// The largest limit honoured.
    pub const MAX_LIMIT: usize = 1000;

    /// The limit to apply.
    pub fn effective_limit(&self) -> usize {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

/// Counts for `/api/v1/stats` and the `jobs{state}` / `jobs_at_risk` metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueStats {
    /// Jobs per state; every state is present, 0 if none.
    pub by_state: BTreeMap<String, u64>,
    /// Jobs per account and state; every state is present for each account
    /// that has jobs.
    pub by_account: BTreeMap<String, BTreeMap<String, u64>>,
    /// `created_at` of the oldest pending job.
    pub oldest_pending: Option<UnixMillis>,
    /// Jobs not done or dead whose deadline is within the asked window (or
    /// already past).
    pub at_risk: u64,
}

/// A durable job queue backend. Every backend passes the same conformance
/// suite (`conformance` feature), so callers can rely on the semantics
/// documented here alone.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug + 'static {
    /// Durably commits new jobs (fsync / commit) before returning; one entry
    /// per input, in order.
    ///
    /// An existing id is a [`Enqueued::Duplicate`] and left untouched, except
    /// a `dead` job, which goes back to `pending`, ready now (attempts and
    /// backoff reset, `last_error` kept), and still reports `Duplicate`: a
    /// dedup entry never blocks the retry of a failed job. A duplicate within
    /// one batch is a `Duplicate` of the earlier entry.
    async fn enqueue(&self, jobs: Vec<JobSpec>) -> Result<Vec<Enqueued>, QueueError>;

    /// Leases up to `max` ready jobs, earliest deadline first (ties: oldest
    /// `next_attempt_at`).
    ///
    /// Ready means: pending with `next_attempt_at <= now`, leased with an
    /// expired lease (crashed worker), or waiting past its timeout. Any such
    /// job whose deadline is before now becomes dead with a reason starting
    /// `expired:` and is not handed out, but reported in
    /// [`Leased::expired`] by the call that dead-lettered it (and by no
    /// other). Leasing increments `attempts`, sets state `leased`, issues a
    /// fresh token and sets `expires_at = now + lease_for`.
    async fn lease(&self, max: usize, lease_for: Duration) -> Result<Leased, QueueError>;

    /// Extends a lease to `now + lease_for` and returns the new expiry;
    /// [`QueueError::LeaseLost`] if the job no longer holds this token
    /// (expired and re-leased, or finished). A lease that expired but was not
    /// taken by anyone else can still be renewed.
    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<UnixMillis, QueueError>;

    /// The job was archived: state `done`. `LeaseLost` if the token no longer
    /// holds the job.
    async fn complete(&self, lease: &Lease) -> Result<(), QueueError>;

    /// Records a failed attempt and decides what happens next.
    ///
    /// `Permanent`: dead, reason = `error`. Otherwise the next attempt is at
    /// `now + backoff` (exponential from the interval stored with the job,
    /// ±25% jitter, at most `policy.max`), or for `RetryAfter(d)` at
    /// `now + max(backoff, d)`; if that falls after the deadline the job is
    /// dead with reason `expired: next attempt would fall after the deadline;
    /// last error: {error}`. `last_error` is always updated (to the reason,
    /// for a dead job). `LeaseLost` if the token no longer holds the job.
    async fn fail(
        &self,
        lease: &Lease,
        class: ErrorClass,
        error: &str,
    ) -> Result<Disposition, QueueError>;

    /// Parks a leased job in `waiting` until `until`, when [`JobQueue::lease`]
    /// treats it as ready again. The attempt stays counted.
    async fn park(&self, lease: &Lease, until: UnixMillis) -> Result<(), QueueError>;

    /// The external event a parked job waits for has happened: a `waiting`
    /// job becomes `pending`, ready now; a `leased` job (whose worker has not
    /// parked it yet: the event won the race) is marked, so that its `park`
    /// makes it ready at once instead of waiting. `note`, when given,
    /// replaces `last_error` so that the next attempt can see what the event
    /// said (e.g. a store callback's error). `Ok(false)` if no waiting or
    /// leased job has that id.
    async fn wake(&self, job_id: &str, note: Option<&str>) -> Result<bool, QueueError>;

    /// Gives a lease back untouched (shutdown): `pending`, ready now, and the
    /// attempt it counted is undone.
    async fn release(&self, lease: &Lease) -> Result<(), QueueError>;

    /// One job, if it exists.
    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, QueueError>;

    /// Jobs matching the filter, most recently updated first.
    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError>;

    /// Admin requeue: a dead, pending or waiting job becomes pending, ready
    /// now, with its backoff interval reset (attempts are kept as history).
    /// `Ok(false)` if the job is absent, done or leased.
    async fn retry_now(&self, job_id: &str) -> Result<bool, QueueError>;

    /// Admin requeue, as [`JobQueue::retry_now`], of every job in `state`
    /// (dead in practice); returns how many. Done or leased: 0.
    async fn retry_all(&self, state: JobState) -> Result<u64, QueueError>;

    /// Counts by state and account, oldest pending `created_at`, and jobs at
    /// risk: not done or dead, deadline within `at_risk_within` of now.
    async fn stats(&self, at_risk_within: Duration) -> Result<QueueStats, QueueError>;

    /// Cheap liveness check of the backend (for `/readyz`).
    async fn ping(&self) -> Result<(), QueueError>;

    /// Up to `limit` jobs whose ids come after `after` in the backend's
    /// own id order, in that order: `queue migrate` pages through every
    /// job with it.
    async fn export_jobs(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MigratedJob>, QueueError> {
        let _ = (after, limit);
        Err(QueueError::Config(
            "this queue cannot export jobs".to_owned(),
        ))
    }

    /// Stores jobs as exported from another backend, state, attempts,
    /// times and errors kept, except that a `leased` job arrives
    /// `pending` (due as it was). A job whose id is already here is left
    /// alone, so an import can be run again, or resumed, safely. No event
    /// is sent for the jobs' past transitions. Returns how many were new.
    async fn import_jobs(&self, jobs: Vec<MigratedJob>) -> Result<u64, QueueError> {
        let _ = jobs;
        Err(QueueError::Config(
            "this queue cannot import jobs".to_owned(),
        ))
    }

    /// The backend's outbox of events to the user's app, committed with the
    /// jobs' transitions (`None`: this queue keeps none, e.g. a test
    /// wrapper; nothing is notified).
    fn outbox(&self) -> Option<&dyn crate::Outbox> {
        None
    }

    /// The backend's blob reference index and erasure bookkeeping (`None`:
    /// a test wrapper; nothing is recorded and nothing can be erased).
    fn erasures(&self) -> Option<&dyn crate::Erasures> {
        None
    }
}
