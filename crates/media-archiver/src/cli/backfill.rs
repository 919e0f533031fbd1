//! `media-archiver backfill`: enqueue references to media whose webhooks
//! never arrived (or predate the daemon), from a JSON Lines file, straight
//! into the queue named in the config. A running daemon picks the jobs up
//! at its next poll (SQLite in WAL mode and PostgreSQL both take a second
//! process).
//!
//! Each line is one reference in the provider's own field names, turned
//! into a job by [`Provider::backfill`]; the job id is the one the webhook
//! would have made, so a second run (or a late webhook) enqueues nothing
//! new. Lines are read and enqueued in batches (memory: one batch, whatever
//! the file's size). A line that cannot be used is reported with its number
//! and the reason, the others still go in; the exit code is then 1.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use archiver_core::JobSpec;
use indicatif::{ProgressBar, ProgressStyle};
use providers::{Provider, ProviderError};
use retry_queue::{Enqueued, JobQueue};
use tokio::io::AsyncBufReadExt as _;

use crate::cli::{self, Findings};
use crate::config::Settings;
use crate::daemon::{self, ServeError};

/// Jobs committed per enqueue (one transaction each).
const BATCH: usize = 200;

/// What a backfill did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) lines: u64,
    pub(crate) new: u64,
    pub(crate) duplicates: u64,
    /// Rejected lines: `line N: reason`.
    pub(crate) rejected: Findings,
}

impl Summary {
    fn reject(&mut self, line: u64, reason: &str, bar: &ProgressBar) {
        self.rejected
            .record("rejected", format!("line {line}: {reason}"), bar);
    }

    /// The summary printed at the end.
    pub(crate) fn render(&self, account: &str, input: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "backfill of account {account} from {input}");
        let _ = writeln!(out, "references: {}", self.lines);
        let _ = writeln!(out, "new:        {}", self.new);
        let _ = writeln!(out, "duplicates: {}", self.duplicates);
        let _ = writeln!(out, "rejected:   {}", self.rejected.count());
        self.rejected.write_list(&mut out);
        out
    }
}

/// Why a backfill stopped before the end of its input.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The account's provider has no backfill (exit 1, nothing enqueued).
    Unsupported(String),
    /// The input could not be read, or the queue refused a batch (exit 1);
    /// what was committed before stays.
    Failed(String),
}

/// `media-archiver backfill`: enqueues the references in `input` for
/// `account` into the queue of `config` and prints the summary; the process
/// exit code (0 all enqueued or already there, 1 rejected lines or a
/// failure, 2 unknown account, 78 config).
pub(crate) fn main(config: &Settings, path: &Path, account: &str, input: &str) -> ExitCode {
    let Some(provider) = config.providers.get(account).cloned() else {
        eprintln!(
            "error: {} has no account {account:?} (accounts: {})",
            path.display(),
            config.account_names().join(", ")
        );
        return ExitCode::from(2);
    };
    cli::block_on(tokio::runtime::Builder::new_multi_thread(), async {
        let queue = match daemon::open_queue(config).await {
            Ok(queue) => queue,
            Err(ServeError::Config(errors)) => {
                eprint!("{}: {errors}", path.display());
                return ExitCode::from(crate::EXIT_CONFIG);
            }
            Err(ServeError::Runtime(e)) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let mut summary = Summary::default();
        let result = run(provider, queue, input, &mut summary).await;
        match result {
            Err(Stop::Unsupported(reason)) => {
                eprintln!("error: account {account}: {reason}; nothing was enqueued");
                ExitCode::FAILURE
            }
            Err(Stop::Failed(reason)) => {
                print!("{}", summary.render(account, input));
                eprintln!("error: {reason}");
                ExitCode::FAILURE
            }
            Ok(()) => {
                print!("{}", summary.render(account, input));
                if summary.rejected.count() == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
        }
    })
}

/// Reads `input` (`-`: standard input) and enqueues its references for
/// `provider`'s account into `queue`.
pub(crate) async fn run(
    provider: Arc<dyn Provider>,
    queue: Arc<dyn JobQueue>,
    input: &str,
    summary: &mut Summary,
) -> Result<(), Stop> {
    let (reader, len): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) = if input == "-"
    {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(input)
            .await
            .map_err(|e| Stop::Failed(format!("cannot open {input}: {e}")))?;
        let len = file.metadata().await.ok().map(|m| m.len());
        (Box::new(file), len)
    };
    let bar = match len {
        Some(len) => {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {percent:>3}% {binary_bytes}/{binary_total_bytes} [{elapsed_precise}<{eta}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        None => ProgressBar::new_spinner(),
    };
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let mut batch: Vec<(u64, JobSpec)> = Vec::with_capacity(BATCH);
    let mut number = 0u64;
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| Stop::Failed(format!("cannot read {input} after line {number}: {e}")))?;
        let Some(line) = line else { break };
        number += 1;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        let reference: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                summary.reject(number, &format!("not JSON: {e}"), &bar);
                continue;
            }
        };
        match provider.backfill(&reference).await {
            Ok(job) => batch.push((number, job)),
            Err(ProviderError::Unsupported(reason)) => {
                bar.finish_and_clear();
                return Err(Stop::Unsupported(reason));
            }
            Err(e) => summary.reject(number, &e.to_string(), &bar),
        }
        if batch.len() >= BATCH {
            commit(queue.as_ref(), &mut batch, summary).await?;
        }
        bar.set_message(format!(
            "new {}, duplicates {}, rejected {}",
            summary.new,
            summary.duplicates,
            summary.rejected.count()
        ));
    }
    commit(queue.as_ref(), &mut batch, summary).await?;
    bar.finish_and_clear();
    Ok(())
}

/// Enqueues the batch (one durable commit) and counts the outcomes.
async fn commit(
    queue: &dyn JobQueue,
    batch: &mut Vec<(u64, JobSpec)>,
    summary: &mut Summary,
) -> Result<(), Stop> {
    if batch.is_empty() {
        return Ok(());
    }
    let first = batch[0].0;
    let jobs = batch.drain(..).map(|(_, job)| job).collect();
    let outcomes = queue.enqueue(jobs).await.map_err(|e| {
        Stop::Failed(format!(
            "the queue refused the batch starting at line {first}: {e}"
        ))
    })?;
    for outcome in outcomes {
        match outcome {
            Enqueued::New => summary.new += 1,
            Enqueued::Duplicate => summary.duplicates += 1,
        }
    }
    Ok(())
}
