//! `[workers]`: how many jobs run at once and how long they may hold them,
//! deserialized here because the worker is what consumes it (the binary
//! only composes the sections).

use std::time::Duration;

use archiver_core::config_value::{duration, verdict};
use serde::Deserialize;

/// The shortest `lease` accepted: renewals go out at a fraction of it, and
/// below a few seconds a busy store or database would make every job lose
/// its lease.
const MIN_LEASE: Duration = Duration::from_secs(3);

/// The most jobs in flight: each holds a few upload parts and connections.
const MAX_CONCURRENCY: usize = 1024;

/// `[workers]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Jobs in flight at once (1 to 1024); also bounds memory (each holds at
    /// most a few upload parts) and connections to providers and the store.
    pub concurrency: usize,
    /// How long a lease lasts without renewal (at least 3 s); a crashed
    /// worker's jobs run again after this.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    /// How long in-flight jobs may run on after shutdown begins.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// How often an idle worker looks for due jobs (retries, expired leases)
    /// when no new webhook woke it.
    #[serde(deserialize_with = "duration")]
    pub idle_poll: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(25),
            idle_poll: Duration::from_secs(1),
        }
    }
}

impl WorkerConfig {
    /// Checks the values; every problem is returned, each starting with its
    /// key path (`workers.…`).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            problems.push(format!(
                "workers.concurrency: must be between 1 and {MAX_CONCURRENCY}"
            ));
        }
        if self.lease < MIN_LEASE {
            problems.push(format!(
                "workers.lease: must be at least {}s",
                MIN_LEASE.as_secs()
            ));
        }
        verdict(problems, ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<WorkerConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_section_gets_the_documented_defaults() {
        let config = parse("{}").unwrap();
        assert_eq!(config.concurrency, 16);
        assert_eq!(config.lease, Duration::from_secs(300));
        assert_eq!(config.shutdown_grace, Duration::from_secs(25));
        assert_eq!(config.idle_poll, Duration::from_secs(1));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn durations_are_written_with_units_and_unknown_keys_are_refused() {
        let config = parse(r#"{"lease": "2m", "shutdown_grace": "500ms"}"#).unwrap();
        assert_eq!(config.lease, Duration::from_secs(120));
        assert_eq!(config.shutdown_grace, Duration::from_millis(500));
        assert!(parse(r#"{"leese": "2m"}"#).unwrap_err().contains("leese"));
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let config = parse(r#"{"concurrency": 0, "lease": "2s"}"#).unwrap();
        let problems = config.validate().unwrap_err();
        for key in ["workers.concurrency", "workers.lease"] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 2, "{problems:#?}");
    }
}
