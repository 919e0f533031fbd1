//! The one place where job transitions are reported.
//!
//! Every transition a worker causes (archived, retry scheduled, dead,
//! released at shutdown) goes through [`transition`], which writes one
//! structured log event with the same fields each time. Metrics hang off
//! the same call, so logs and counters can never disagree.

use std::time::Duration;

use retry_queue::JobRecord;

/// What happened to a job at the end of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and archived.
    Archived,
    /// Failed; another attempt is scheduled.
    Retry,
    /// Failed for good.
    Dead,
    /// Handed back unfinished (shutdown).
    Released,
    /// Waiting for the provider's event (On-Prem store callback).
    Parked,
}

impl Outcome {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Archived => "archived",
            Outcome::Retry => "retry",
            Outcome::Dead => "dead",
            Outcome::Released => "released",
            Outcome::Parked => "parked",
        }
    }
}

/// Reports one transition.
pub fn transition(
    job: &JobRecord,
    outcome: Outcome,
    bytes: u64,
    elapsed: Duration,
    detail: Option<&str>,
) {
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Outcome::Archived | Outcome::Released | Outcome::Parked => tracing::info!(
            job_id = %job.id,
            account = %job.account,
            provider = %job.provider,
            attempt = job.attempts,
            outcome = outcome.as_str(),
            bytes,
            elapsed_ms,
            detail,
            "job {}", outcome.as_str()
        ),
        Outcome::Retry | Outcome::Dead => tracing::warn!(
            job_id = %job.id,
            account = %job.account,
            provider = %job.provider,
            attempt = job.attempts,
            outcome = outcome.as_str(),
            bytes,
            elapsed_ms,
            detail,
            "job {}", outcome.as_str()
        ),
    }
}
