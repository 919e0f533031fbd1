//! Operator commands (PRODUCT.md section 7): `jobs list|show|retry|stats`,
//! `media find` and `notifications list|retry` talk to a running daemon's
//! admin API; `check-config` summarises a config, and `verify` (a scrub of
//! the archive), `backfill` (references into the queue) and `erase` work on
//! the store and the queue named in it; `queue migrate` copies one
//! config's queue into another's. Here: what the commands share (a runtime of their own, and
//! [`Findings`] for the problems a long command reports).

use std::fmt::Write as _;
use std::process::ExitCode;

use indicatif::ProgressBar;

pub(crate) mod api;
pub(crate) mod backfill;
pub(crate) mod check_config;
pub(crate) mod erase;
pub(crate) mod jobs;
pub(crate) mod media;
pub(crate) mod notifications;
pub(crate) mod queue;
pub(crate) mod verify;

/// Runs a command's `work` to its exit code on a Tokio runtime of its own
/// (`builder`: one thread for a request, several for work done in
/// parallel); exit 1 when no runtime can be started.
pub(crate) fn block_on(
    mut builder: tokio::runtime::Builder,
    work: impl Future<Output = ExitCode>,
) -> ExitCode {
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Problems a command finds one by one (rejected lines, mismatches): each
/// printed as it is found, every one counted, and the first
/// [`Findings::MAX_LISTED`] kept for the summary, so that memory stays
/// bounded whatever the input.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    count: u64,
    listed: Vec<String>,
}

impl Findings {
    /// Findings repeated in the summary; the rest are counted.
    const MAX_LISTED: usize = 1000;

    /// Records `finding`, printed at once as `{label} {finding}` above the
    /// progress `bar`.
    pub(crate) fn record(&mut self, label: &str, finding: String, bar: &ProgressBar) {
        bar.suspend(|| eprintln!("{label} {finding}"));
        self.count += 1;
        if self.listed.len() < Self::MAX_LISTED {
            self.listed.push(finding);
        }
    }

    /// How many were found.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The summary's lines for them: the kept ones, then how many more
    /// were printed as they were found.
    pub(crate) fn write_list(&self, out: &mut String) {
        for finding in &self.listed {
            let _ = writeln!(out, "  {finding}");
        }
        let unlisted = self.count - self.listed.len() as u64;
        if unlisted > 0 {
            let _ = writeln!(
                out,
                "  ... and {unlisted} more (printed above as they were found)"
            );
        }
    }
}
