//! `[retry]`: the backoff bounds, deserialized here because the queue is
//! what applies them (the binary only composes the sections).

use std::time::Duration;

use archiver_core::config_value::{duration, verdict};
use serde::Deserialize;

/// Bounds of the exponential backoff between attempts of one job; the
/// `[retry]` section of the config file.
///
/// The wait after the n-th consecutive failure is about
/// `initial * multiplier^(n-1)`, never more than `max`, randomised by ±25%
/// so that jobs failing together do not retry together. The current interval
/// is stored with each job, so backoff survives restarts and one job's
/// failures never slow another job down.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Wait after the first failure. Must be more than zero.
    #[serde(deserialize_with = "duration")]
    pub initial: Duration,
    /// Ceiling of any single wait (before the deadline check). At least `initial`.
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
    /// Growth of the wait per failure. At least 1.0 (1.0 = constant backoff).
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// Checks the bounds without doing anything else; the message names the
    /// field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.initial.is_zero() {
            problems.push("initial must be more than zero".to_owned());
        }
        if self.max < self.initial {
            problems.push(format!(
                "max ({:?}) must be at least initial ({:?})",
                self.max, self.initial
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            problems.push(format!(
                "multiplier ({}) must be a finite number of at least 1.0",
                self.multiplier
            ));
        }
        verdict(problems, ()).map_err(|problems| problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid_and_matches_the_product() {
        let p = RetryPolicy::default();
        assert_eq!(p.initial, Duration::from_secs(5));
        assert_eq!(p.max, Duration::from_secs(3600));
        assert_eq!(p.multiplier, 2.0);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn validate_names_every_bad_bound() {
        let p = RetryPolicy {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 0.5,
        };
        let err = p.validate().unwrap_err();
        assert!(err.contains("initial"), "{err}");
        assert!(err.contains("multiplier"), "{err}");

        let p = RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        };
        assert!(p.validate().unwrap_err().contains("max"));

        let p = RetryPolicy {
            multiplier: f64::NAN,
            ..RetryPolicy::default()
        };
        assert!(p.validate().is_err());
        let p = RetryPolicy {
            multiplier: 1.0,
            max: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn the_section_takes_durations_with_units_and_defaults_the_rest() {
        let p: RetryPolicy = serde_json::from_str(r#"{"initial": "10s", "max": "2h"}"#).unwrap();
        assert_eq!(p.initial, Duration::from_secs(10));
        assert_eq!(p.max, Duration::from_secs(7200));
        assert_eq!(p.multiplier, RetryPolicy::default().multiplier);
        let typo = serde_json::from_str::<RetryPolicy>(r#"{"multiplyer": 3.0}"#).unwrap_err();
        assert!(
            typo.to_string().contains("unknown field `multiplyer`"),
            "{typo}"
        );
        let unitless = serde_json::from_str::<RetryPolicy>(r#"{"initial": "5"}"#).unwrap_err();
        assert!(
            unitless.to_string().contains("invalid duration"),
            "{unitless}"
        );
    }
}
