//! `media-archiver queue migrate --from CONFIG --to CONFIG`: copies every
//! job and the blob index from the queue of one config into the queue of
//! another (`retry_queue::migrate`), e.g. SQLite to fjall, or fjall to
//! PostgreSQL when one machine is no longer enough. Idempotent and
//! resumable: a job already in the target is left alone. Stop the daemon
//! on the source first (an embedded queue refuses a second process; a
//! running daemon would keep changing the jobs being copied).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use retry_queue::{JobQueue, Migrated, QueueSettings};

use crate::cli;
use crate::config::Settings;
use crate::daemon::{self, ServeError};

/// `queue ...`.
#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Copy every job (state, attempts, times and errors kept) and the
    /// blob index from the queue of one config into the queue of another.
    /// Run it again to resume or to check: jobs already copied are kept.
    Migrate {
        /// The config whose queue is read (its daemon stopped).
        #[arg(long)]
        from: PathBuf,
        /// The config whose queue receives the jobs.
        #[arg(long)]
        to: PathBuf,
    },
}

/// Runs `queue ...`; the process exit code (0 copied, 1 failure, 2 the
/// same queue twice, 78 a config error).
pub(crate) fn run(args: &QueueArgs) -> ExitCode {
    let QueueCommand::Migrate { from, to } = &args.command;
    let (source, target) = match (load(from), load(to)) {
        (Ok(source), Ok(target)) => (source, target),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let (from_queue, to_queue) = (describe(&source), describe(&target));
    if same_queue(&source.queue, &target.queue) {
        eprintln!("error: both configs name the same queue ({from_queue}); nothing to copy");
        return ExitCode::from(2);
    }
    cli::block_on(tokio::runtime::Builder::new_multi_thread(), async {
        let queues = match (open(&source, from).await, open(&target, to).await) {
            (Ok(s), Ok(t)) => (s, t),
            (Err(code), _) | (_, Err(code)) => return code,
        };
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} jobs copied ({per_sec})")
                .expect("a valid template"),
        );
        let copied = retry_queue::migrate(queues.0.as_ref(), queues.1.as_ref(), &mut |n| {
            bar.set_position(n);
        })
        .await;
        bar.finish_and_clear();
        match copied {
            Ok(copied) => {
                print!("{}", summary(&from_queue, &to_queue, &copied));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: {e}\nwhat was copied stays; run the same command again to resume"
                );
                ExitCode::FAILURE
            }
        }
    })
}

fn load(path: &Path) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|errors| {
        eprint!("{}: {errors}", path.display());
        ExitCode::from(crate::EXIT_CONFIG)
    })
}

/// The queue a config names, for messages (never a URL: it may hold a
/// password).
fn describe(config: &Settings) -> String {
    cli::check_config::queue_summary(&config.queue)
}

/// Whether two configs name one queue (a copy onto itself would read
/// what it writes).
fn same_queue(a: &QueueSettings, b: &QueueSettings) -> bool {
    let same_path = |a: &Path, b: &Path| {
        a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
    };
    match (a, b) {
        (QueueSettings::Sqlite { path: a }, QueueSettings::Sqlite { path: b }) => same_path(a, b),
        (QueueSettings::Fjall(a), QueueSettings::Fjall(b)) => same_path(&a.path, &b.path),
        (QueueSettings::Postgres(a), QueueSettings::Postgres(b)) => {
            a.url.expose() == b.url.expose() && a.schema == b.schema
        }
        _ => false,
    }
}

async fn open(config: &Settings, path: &Path) -> Result<std::sync::Arc<dyn JobQueue>, ExitCode> {
    daemon::open_queue(config).await.map_err(|e| match e {
        ServeError::Config(errors) => {
            eprint!("{}: {errors}", path.display());
            ExitCode::from(crate::EXIT_CONFIG)
        }
        ServeError::Runtime(e) => {
            eprintln!("error: {}: {e:#}", path.display());
            ExitCode::FAILURE
        }
    })
}

fn summary(from: &str, to: &str, copied: &Migrated) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "queue migrate from {from} to {to}");
    let _ = writeln!(out, "jobs:              {}", copied.jobs);
    let _ = writeln!(out, "  new in target:   {}", copied.jobs_new);
    let _ = writeln!(out, "  already there:   {}", copied.jobs - copied.jobs_new);
    let _ = writeln!(out, "blob references:   {}", copied.refs);
    let _ = writeln!(out, "complete indexes:  {}", copied.complete_indexes);
    if copied.pending_deliveries_left > 0 {
        let _ = writeln!(
            out,
            "note: {} notifications were still pending in the source and were not copied \
             (let its daemon deliver them before migrating)",
            copied.pending_deliveries_left
        );
    }
    out
}
