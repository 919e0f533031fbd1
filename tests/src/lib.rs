//! Harness for the end-to-end tests (`tests/tests/e2e/`, one test binary)
//! and the bench binaries (`src/bin/`): runs the real `media-archiver`
//! binary as a child process with a generated config, talks to it over HTTP
//! like a provider and an operator would, and reads back what it archived.
//!
//! Each concern is written once, here:
//! - `config` ([`config()`], [`StoreUnderTest`]): the daemon's config for a
//!   test: fast retries, private networks allowed, the admin API on;
//! - [`accounts`]: one `[[accounts]]` snippet per provider, pointed at its
//!   fake from `test-support`, with the webhook credentials tests post with;
//! - `daemon` ([`Daemon`]): starting and stopping the real binary, waiting
//!   until it listens, posting webhooks, polling the admin API;
//! - [`cli`]: the operator commands (`backfill`, `verify`, `jobs`, ...);
//! - `archive` ([`Archive`]): reading the archive back, from a folder or
//!   from S3, the same calls for both;
//! - [`process`]: a process's memory, open files and CPU time from `/proc`
//!   (the benches' samples);
//! - `stage` ([`Stage`]): a provider's fake, a daemon for it and its
//!   archive, started in one call;
//! - [`standard_webhooks`]: checking a `[[notify]]` delivery with the
//!   Standard Webhooks reference library;
//! - [`now`], [`bytes`], [`sha256_hex`]: the clock and the test data.
//!
//! The binary is the one cargo built for this workspace
//! (`target/<profile>/media-archiver`); `cargo test --workspace` builds it
//! because the `media-archiver` package has integration tests of its own.

pub mod accounts;
mod archive;
pub mod cli;
mod config;
mod daemon;
pub mod process;
mod stage;
pub mod standard_webhooks;

pub use archive::{Archive, blob_key};
pub use config::{
    ADMIN_TOKEN, NOTIFY_SECRET, StoreUnderTest, config, fjall_queue, guarded_config, notify_target,
    postgres_queue,
};
pub use daemon::{Daemon, binary, free_port, metric_sample};
pub use stage::Stage;
pub use test_support::files_under;

use sha2::Digest as _;

/// Unix seconds now: the timestamp a provider puts in a webhook it sends now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// sha256 of bytes as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes (incompressible, unlike zeros): the
/// same `len` and `seed` give the same file.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
