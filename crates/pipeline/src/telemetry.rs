//! The one place where job transitions are reported.
//!
//! Every transition a worker causes (archived, retry scheduled, dead, parked,
//! released at shutdown) goes through [`transition`], which writes one
//! structured log event with the same fields each time and updates the
//! counters of PRODUCT.md section 8 in the same call, so logs and metrics
//! cannot disagree. Stage timings ([`Stage`]) are recorded as histograms.
//!
//! Metrics go through the `metrics` facade: the binary installs the
//! Prometheus recorder; without one (unit tests) they cost nothing.
//!
//! Durations (`elapsed`, stage timings) are measured by the caller on the
//! monotonic Tokio clock; the one point in time reported, when a job was
//! archived, comes from the injected wall clock, like the job's
//! `created_at` it is compared with.

use std::time::Duration;

use archiver_core::{ErrorClass, UnixMillis};
use retry_queue::JobRecord;

/// What happened to a job at the end of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Verified and archived.
    Archived {
        /// When (the manifest's `archived_at`): `job_latency_seconds` is
        /// the time from the webhook (`created_at`) to this.
        at: UnixMillis,
        /// Streamed through to the store (`streamed_total`), not staged.
        streamed: bool,
    },
    /// Failed with this class; another attempt is scheduled.
    Retry(ErrorClass),
    /// Failed for good; `reason` is a short label (`expired`, `permanent`).
    Dead {
        /// Metric label: why it died.
        reason: &'static str,
    },
    /// Handed back unfinished (shutdown).
    Released,
    /// Waiting for the provider's event (On-Prem store callback).
    Parked,
}

impl Outcome {
    /// The label used in logs.
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Archived { .. } => "archived",
            Outcome::Retry(_) => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Released => "released",
            Outcome::Parked => "parked",
        }
    }
}

/// A timed stage of an attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    /// Resolving and downloading into the spool (streamed through: until
    /// the last byte arrived, its parts sent meanwhile).
    Download,
    /// Writing blob and manifest to the store.
    Upload,
}

/// Records how long a stage took.
pub(crate) fn stage(stage: Stage, elapsed: Duration) {
    let name = match stage {
        Stage::Download => "media_archiver_download_seconds",
        Stage::Upload => "media_archiver_upload_seconds",
    };
    metrics::histogram!(name).record(elapsed.as_secs_f64());
}

/// Reports one transition: one log event, and the matching counters.
pub(crate) fn transition(
    job: &JobRecord,
    outcome: Outcome,
    bytes: u64,
    elapsed: Duration,
    detail: Option<&str>,
) {
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let account = job.account.clone();
    match &outcome {
        Outcome::Archived { at, streamed } => {
            metrics::counter!("media_archiver_archived_total", "account" => account.clone())
                .increment(1);
            if *streamed {
                metrics::counter!("media_archiver_streamed_total", "account" => account.clone())
                    .increment(1);
            }
            metrics::counter!("media_archiver_archived_bytes_total", "account" => account)
                .increment(bytes);
            let since_webhook = at.saturating_sub(job.created_at);
            metrics::histogram!("media_archiver_job_latency_seconds")
                .record(since_webhook.max(0) as f64 / 1000.0);
        }
        Outcome::Retry(class) => {
            metrics::counter!("media_archiver_failures_total", "account" => account, "class" => class.label())
                .increment(1);
        }
        Outcome::Dead { reason } => {
            metrics::counter!("media_archiver_failures_total", "account" => account.clone(), "class" => "permanent")
                .increment(1);
            metrics::counter!("media_archiver_dead_total", "account" => account, "reason" => *reason).increment(1);
        }
        Outcome::Released | Outcome::Parked => {}
    }
    let label = outcome.as_str();
    // One field list for both levels: a tracing level must be a constant.
    macro_rules! log {
        ($level:expr) => {
            tracing::event!(
                $level,
                job_id = %job.id,
                account = %job.account,
                provider = %job.provider,
                attempt = job.attempts,
                outcome = label,
                bytes,
                elapsed_ms,
                detail,
                "job {label}"
            )
        };
    }
    match outcome {
        Outcome::Archived { .. } | Outcome::Released | Outcome::Parked => {
            log!(tracing::Level::INFO)
        }
        Outcome::Retry(_) | Outcome::Dead { .. } => log!(tracing::Level::WARN),
    }
}
