//! The one place that knows which backoff library computes retry delays.
//!
//! `backoff` 0.4 is flagged unmaintained (RUSTSEC-2025-0012); the product's
//! design names it, so it stays for now, and replacing it (e.g. with `backon`)
//! means rewriting only [`next_step`].
//!
//! The queue is stateless between calls: the current interval is stored with
//! each job, so every failure rebuilds an `ExponentialBackoff` from the stored
//! interval, takes one step, and stores the next interval. The library's own
//! clock only measures elapsed time against `max_elapsed_time`, which is
//! `None` here (the job's deadline bounds retries instead), so it never
//! influences a delay; "now" comes from the injected `archiver_core::Clock`.

use std::time::Duration;

use ::backoff::ExponentialBackoff;
use ::backoff::backoff::Backoff as _;

use crate::RetryPolicy;

/// Jitter: each wait is the interval ±25%.
pub(crate) const RANDOMIZATION_FACTOR: f64 = 0.25;

/// One failure's backoff: how long to wait, and the interval to store for
/// the next failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Step {
    /// Wait before the next attempt: interval ±25%, at most `policy.max`.
    pub(crate) delay: Duration,
    /// Interval the next failure starts from (already multiplied, capped).
    pub(crate) next_interval: Duration,
}

/// Computes the wait after a failure from the interval stored with the job
/// (`None` for a job that has not failed since it was (re)queued).
///
/// A stored interval outside `[initial, max]` (the policy changed since it
/// was stored) is clamped into it.
pub(crate) fn next_step(policy: &RetryPolicy, stored_interval: Option<Duration>) -> Step {
    let current = stored_interval
        .unwrap_or(policy.initial)
        .clamp(policy.initial, policy.max);
    let mut backoff = ExponentialBackoff {
        current_interval: current,
        initial_interval: policy.initial,
        randomization_factor: RANDOMIZATION_FACTOR,
        multiplier: policy.multiplier,
        max_interval: policy.max,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    };
    // With `max_elapsed_time: None` the library always yields a value.
    let delay = backoff.next_backoff().unwrap_or(current);
    Step {
        // `max` is a hard ceiling on any single wait, jitter included.
        delay: delay.min(policy.max),
        next_interval: backoff.current_interval.clamp(policy.initial, policy.max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(60),
            multiplier: 2.0,
        }
    }

    fn within_jitter(delay: Duration, interval: Duration, max: Duration) -> bool {
        delay >= interval.mul_f64(1.0 - RANDOMIZATION_FACTOR)
            && delay <= interval.mul_f64(1.0 + RANDOMIZATION_FACTOR).min(max)
    }

    #[test]
    fn intervals_grow_by_the_multiplier_up_to_max() {
        let p = policy();
        let mut stored = None;
        let mut intervals = Vec::new();
        for _ in 0..6 {
            let step = next_step(&p, stored);
            let interval = stored.unwrap_or(p.initial);
            assert!(
                within_jitter(step.delay, interval, p.max),
                "{step:?} for {interval:?}"
            );
            intervals.push(step.next_interval.as_secs());
            stored = Some(step.next_interval);
        }
        assert_eq!(intervals, [20, 40, 60, 60, 60, 60]);
    }

    #[test]
    fn jitter_spreads_over_both_sides_of_the_interval() {
        let p = policy();
        let delays: Vec<Duration> = (0..200).map(|_| next_step(&p, None).delay).collect();
        assert!(delays.iter().any(|d| *d < Duration::from_millis(9_000)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(11_000)));
        assert!(delays.iter().all(|d| within_jitter(*d, p.initial, p.max)));
    }

    #[test]
    fn stored_interval_outside_the_policy_is_clamped() {
        let p = policy();
        let step = next_step(&p, Some(Duration::from_secs(3600)));
        assert!(step.delay <= p.max);
        assert_eq!(step.next_interval, p.max);
        let step = next_step(&p, Some(Duration::from_millis(1)));
        assert!(within_jitter(step.delay, p.initial, p.max));
    }

    #[test]
    fn multiplier_one_is_constant() {
        let p = RetryPolicy {
            multiplier: 1.0,
            ..policy()
        };
        let step = next_step(&p, None);
        assert_eq!(step.next_interval, p.initial);
    }
}
