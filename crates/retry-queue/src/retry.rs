//! The retry decision: what a failed attempt becomes.
//!
//! [`decide`] is the whole of [`JobQueue::fail`](crate::JobQueue::fail)'s
//! rule (PRODUCT.md section 6) as a pure function of the error class, the
//! clock and what the job has stored (deadline, backoff interval). Each
//! backend reads those in its transaction, calls it, and persists what it
//! returns, so the two backends cannot drift apart on when a job dies and the
//! rule is tested here as a table, without a database.

use std::time::Duration;

use archiver_core::{ErrorClass, UnixMillis};

use crate::backend::{millis, stored_interval};
use crate::{Disposition, RetryPolicy, backoff};

/// What [`decide`] concluded, for the backend to persist.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// The job's next state: pending again at a time, or dead with a reason
    /// (the reason is stored as `last_error`).
    pub(crate) disposition: Disposition,
    /// `backoff_interval_ms` to store: where the next failure's backoff
    /// starts. A permanent failure leaves the stored value as it was.
    pub(crate) backoff_interval_ms: Option<i64>,
}

/// The job's state as `fail` reads it under the lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    /// The job's deadline.
    pub(crate) deadline: UnixMillis,
    /// The stored `backoff_interval_ms` (`None`: not failed since queued).
    pub(crate) backoff_interval_ms: Option<i64>,
}

/// The dead-letter reason of a retry that would fall after the deadline; it
/// names the last error, since that is what the operator needs to see.
pub(crate) fn expired_reason(error: &str) -> String {
    format!("expired: next attempt would fall after the deadline; last error: {error}")
}

/// Decides what an attempt that failed with `class` and `error` at `now`
/// becomes:
///
/// - `Permanent`: dead at once, the error itself as the reason.
/// - `Transient`: pending again after the backoff (the stored interval
///   ±25% jitter, at most `policy.max`; see [`backoff::next_step`]).
/// - `RetryAfter(d)`: as transient, but never sooner than `d`.
/// - Either retry, if it would fall after the deadline: dead with
///   [`expired_reason`]. An attempt due exactly at the deadline still runs.
pub(crate) fn decide(
    policy: &RetryPolicy,
    class: ErrorClass,
    error: &str,
    now: UnixMillis,
    stored: Stored,
) -> Decision {
    let at_least = match class {
        ErrorClass::Permanent => {
            return Decision {
                disposition: Disposition::Dead {
                    reason: error.to_owned(),
                },
                backoff_interval_ms: stored.backoff_interval_ms,
            };
        }
        ErrorClass::Transient => Duration::ZERO,
        ErrorClass::RetryAfter(at_least) => at_least,
    };
    let step = backoff::next_step(policy, stored_interval(stored.backoff_interval_ms));
    let at = now.saturating_add(millis(step.delay.max(at_least)));
    let disposition = if at > stored.deadline {
        Disposition::Dead {
            reason: expired_reason(error),
        }
    } else {
        Disposition::RetryAt(at)
    };
    Decision {
        disposition,
        backoff_interval_ms: Some(millis(step.next_interval)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_000_000;
    const SEC: i64 = 1_000;
    const LATE: UnixMillis = i64::MAX / 2;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(60),
            multiplier: 2.0,
        }
    }

    /// What a row expects.
    #[derive(Debug)]
    enum Expect {
        /// Pending again, `delay` ms from now within these bounds, and this
        /// interval stored for the next failure.
        Retry {
            delay: std::ops::RangeInclusive<i64>,
            next_interval_ms: i64,
        },
        /// Dead with this reason; this interval stored.
        Dead {
            reason: &'static str,
            interval_ms: Option<i64>,
        },
    }

    struct Row {
        rule: &'static str,
        class: ErrorClass,
        deadline: UnixMillis,
        stored_interval_ms: Option<i64>,
        expect: Expect,
    }

    fn rows() -> Vec<Row> {
        let retry_after = |secs| ErrorClass::RetryAfter(Duration::from_secs(secs));
        vec![
            Row {
                rule: "a permanent error is dead at once, the error as reason, backoff kept",
                class: ErrorClass::Permanent,
                deadline: LATE,
                stored_interval_ms: Some(40 * SEC),
                expect: Expect::Dead {
                    reason: "boom",
                    interval_ms: Some(40 * SEC),
                },
            },
            Row {
                rule: "a permanent error past the deadline is still the error, not expired",
                class: ErrorClass::Permanent,
                deadline: NOW - 1,
                stored_interval_ms: None,
                expect: Expect::Dead {
                    reason: "boom",
                    interval_ms: None,
                },
            },
            Row {
                rule: "a first transient failure waits the initial interval ±25%",
                class: ErrorClass::Transient,
                deadline: LATE,
                stored_interval_ms: None,
                expect: Expect::Retry {
                    delay: 7_500..=12_500,
                    next_interval_ms: 20 * SEC,
                },
            },
            Row {
                rule: "a later transient failure waits the stored interval ±25%",
                class: ErrorClass::Transient,
                deadline: LATE,
                stored_interval_ms: Some(20 * SEC),
                expect: Expect::Retry {
                    delay: 15_000..=25_000,
                    next_interval_ms: 40 * SEC,
                },
            },
            Row {
                rule: "no wait exceeds max, jitter included, and the interval stays at max",
                class: ErrorClass::Transient,
                deadline: LATE,
                stored_interval_ms: Some(60 * SEC),
                expect: Expect::Retry {
                    delay: 45_000..=60_000,
                    next_interval_ms: 60 * SEC,
                },
            },
            Row {
                rule: "a stored interval outside the policy is clamped into it",
                class: ErrorClass::Transient,
                deadline: LATE,
                stored_interval_ms: Some(3_600 * SEC),
                expect: Expect::Retry {
                    delay: 45_000..=60_000,
                    next_interval_ms: 60 * SEC,
                },
            },
            Row {
                rule: "Retry-After longer than the backoff is honoured exactly",
                class: retry_after(600),
                deadline: LATE,
                stored_interval_ms: None,
                expect: Expect::Retry {
                    delay: 600 * SEC..=600 * SEC,
                    next_interval_ms: 20 * SEC,
                },
            },
            Row {
                rule: "Retry-After shorter than the backoff waits the backoff",
                class: retry_after(1),
                deadline: LATE,
                stored_interval_ms: Some(20 * SEC),
                expect: Expect::Retry {
                    delay: 15_000..=25_000,
                    next_interval_ms: 40 * SEC,
                },
            },
            Row {
                rule: "a retry due exactly at the deadline still runs",
                class: retry_after(600),
                deadline: NOW + 600 * SEC,
                stored_interval_ms: None,
                expect: Expect::Retry {
                    delay: 600 * SEC..=600 * SEC,
                    next_interval_ms: 20 * SEC,
                },
            },
            Row {
                rule: "a transient retry after the deadline is dead expired, naming the last error",
                class: ErrorClass::Transient,
                deadline: NOW + 5 * SEC,
                stored_interval_ms: None,
                expect: Expect::Dead {
                    reason: "expired: next attempt would fall after the deadline; last error: boom",
                    interval_ms: Some(20 * SEC),
                },
            },
            Row {
                rule: "a Retry-After past the deadline is dead expired, naming the last error",
                class: retry_after(7_200),
                deadline: NOW + 3_600 * SEC,
                stored_interval_ms: None,
                expect: Expect::Dead {
                    reason: "expired: next attempt would fall after the deadline; last error: boom",
                    interval_ms: Some(20 * SEC),
                },
            },
        ]
    }

    #[test]
    fn each_rule_of_the_retry_decision() {
        for row in rows() {
            // Jitter is random: every run of a row must satisfy it.
            for _ in 0..100 {
                let stored = Stored {
                    deadline: row.deadline,
                    backoff_interval_ms: row.stored_interval_ms,
                };
                let decision = decide(&policy(), row.class, "boom", NOW, stored);
                match &row.expect {
                    Expect::Retry {
                        delay,
                        next_interval_ms,
                    } => {
                        let Disposition::RetryAt(at) = decision.disposition else {
                            panic!("{}: expected a retry, got {decision:?}", row.rule);
                        };
                        assert!(
                            delay.contains(&(at - NOW)),
                            "{}: delay {} ms not in {delay:?}",
                            row.rule,
                            at - NOW
                        );
                        assert_eq!(
                            decision.backoff_interval_ms,
                            Some(*next_interval_ms),
                            "{}",
                            row.rule
                        );
                    }
                    Expect::Dead {
                        reason,
                        interval_ms,
                    } => {
                        assert_eq!(
                            decision,
                            Decision {
                                disposition: Disposition::Dead {
                                    reason: (*reason).to_owned()
                                },
                                backoff_interval_ms: *interval_ms,
                            },
                            "{}",
                            row.rule
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_wait_is_rounded_up_to_the_millisecond_never_shortened() {
        let decision = decide(
            &policy(),
            ErrorClass::RetryAfter(Duration::from_micros(600_000_001)),
            "429",
            NOW,
            Stored {
                deadline: LATE,
                backoff_interval_ms: None,
            },
        );
        assert_eq!(decision.disposition, Disposition::RetryAt(NOW + 600_001));
    }
}
