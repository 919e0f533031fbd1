use std::path::PathBuf;
use std::time::Duration;

/// How downloads behave; the `[fetch]` section of the configuration.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Time allowed for DNS resolution plus the TCP (and TLS) handshake.
    pub connect_timeout: Duration,
    /// Longest silence tolerated while waiting for the response headers or
    /// between two chunks of the body. A download that keeps moving may take
    /// as long as it needs; one that stalls fails fast.
    pub read_timeout: Duration,
    /// Largest file accepted, in bytes. Checked against `Content-Length`
    /// before the body is read and against the bytes actually received.
    pub max_file_bytes: u64,
    /// Skip the address half of the SSRF guard (private, loopback, link-local
    /// and metadata addresses become reachable). The host allowlist still
    /// applies. Only for tests and deployments whose providers live on a
    /// private network.
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
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            allow_private_networks: false,
            spool_dir: PathBuf::from("data/spool"),
        }
    }
}
