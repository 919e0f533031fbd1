//! `[fetch]`: how the daemon talks to providers and CDNs, deserialized here
//! because downloads are what it shapes (the binary only composes the
//! sections).

use std::path::PathBuf;
use std::time::Duration;

use archiver_core::config_value::{duration, verdict};
use serde::Deserialize;

/// The most `in_memory_max_bytes` may be (64 MiB): larger files belong in
/// the spool, where their size costs disk, not memory.
pub(crate) const MAX_IN_MEMORY_BYTES: u64 = 64 * 1024 * 1024;

/// How downloads behave; the `[fetch]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    /// Time allowed for DNS resolution plus the TCP (and TLS) handshake, of
    /// downloads and provider API calls alike.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Longest silence tolerated while waiting for the response headers or
    /// between two chunks of the body. A download that keeps moving may take
    /// as long as it needs; one that stalls fails fast.
    #[serde(deserialize_with = "duration")]
    pub read_timeout: Duration,
    /// Whole-request limit of one provider API call (a fresh link, media
    /// info, a login, Evolution's base64 answer), which is read whole. Not
    /// used by the [`Fetcher`](crate::Fetcher): the binary gives it, with
    /// `connect_timeout`, to the providers' API client. Separate from
    /// `read_timeout` because an API answer is bounded by its size, not
    /// by how steadily its bytes arrive.
    #[serde(deserialize_with = "duration")]
    pub api_timeout: Duration,
    /// Largest file accepted, in bytes. Checked against `Content-Length`
    /// before the body is read and against the bytes actually received.
    pub max_file_bytes: u64,
    /// Largest file held in memory rather than in a spool file, in bytes
    /// (`0`: every file goes to the spool). Applies to downloads whose
    /// `Content-Length` is known before the body arrives, and to files a
    /// provider inlines. Memory held at once is at most
    /// `workers.concurrency` times this (twice this while decrypting
    /// WhatsApp media); at most 64 MiB.
    pub in_memory_max_bytes: u64,
    /// Skip the address half of the SSRF guard (private, loopback, link-local
    /// and metadata addresses become reachable) for every account. The host
    /// allowlist still applies. Only for tests and deployments whose
    /// download hosts live on a private network: a self-hosted gateway's own
    /// `api_url` host needs no such thing, it is exempt for its account
    /// ([`crate::HostPolicy::with_gateway_api`]).
    pub allow_private_networks: bool,
    /// Where downloads are written while they stream in; created if missing.
    /// Each process works in its own locked `proc-*` subdirectory and, at
    /// startup, removes those of processes that are gone, so replicas may
    /// share it. Best on a local filesystem (the locks are `flock`s).
    pub spool_dir: PathBuf,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            api_timeout: Duration::from_secs(60),
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            in_memory_max_bytes: 1024 * 1024,
            allow_private_networks: false,
            spool_dir: PathBuf::from("data/spool"),
        }
    }
}

impl FetchConfig {
    /// Checks the values; every problem is returned, each starting with its
    /// key path (`fetch…`).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.connect_timeout.is_zero() || self.read_timeout.is_zero() {
            problems.push("fetch: connect_timeout and read_timeout must be above 0".into());
        }
        if self.api_timeout.is_zero() {
            problems.push("fetch.api_timeout: must be above 0".into());
        }
        if self.max_file_bytes == 0 {
            problems.push("fetch.max_file_bytes: must be above 0".into());
        }
        if self.in_memory_max_bytes > MAX_IN_MEMORY_BYTES {
            problems.push(format!(
                "fetch.in_memory_max_bytes: {} is above the most allowed, {MAX_IN_MEMORY_BYTES} (64 MiB); larger files belong in the spool",
                self.in_memory_max_bytes
            ));
        }
        verdict(problems, ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<FetchConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_section_gets_the_documented_defaults() {
        let config = parse("{}").unwrap();
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.read_timeout, Duration::from_secs(60));
        assert_eq!(config.api_timeout, Duration::from_secs(60));
        assert_eq!(config.max_file_bytes, 2_147_483_648);
        assert_eq!(config.in_memory_max_bytes, 1_048_576);
        assert!(!config.allow_private_networks);
        assert_eq!(config.spool_dir, PathBuf::from("data/spool"));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn the_api_timeout_is_set_apart_from_the_read_timeout() {
        let config = parse(r#"{"read_timeout": "5m", "api_timeout": "20s"}"#).unwrap();
        assert_eq!(config.read_timeout, Duration::from_secs(300));
        assert_eq!(config.api_timeout, Duration::from_secs(20));
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let config =
            parse(r#"{"read_timeout": "0s", "api_timeout": "0s", "max_file_bytes": 0, "in_memory_max_bytes": 67108865}"#).unwrap();
        let problems = config.validate().unwrap_err();
        for key in [
            "fetch: connect_timeout and read_timeout",
            "fetch.api_timeout",
            "fetch.max_file_bytes",
            "fetch.in_memory_max_bytes",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:#?}"
            );
        }
        assert!(
            parse(r#"{"read_timout": "5s"}"#)
                .unwrap_err()
                .contains("read_timout")
        );
    }
}
