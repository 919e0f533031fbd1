//! `media-archiver`: the daemon (`serve`) and its operator commands.
//!
//! This binary is the only crate that knows every other crate: it reads the
//! config, builds the queue, the store, the fetcher and one adapter per
//! account, and wires them into the webhook receiver and the worker. Exit
//! codes: 0 ok, 1 failure, 2 usage, 78 config error.

mod cli;
mod config;
mod daemon;
mod erase;
mod media_index;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// Archives WhatsApp media announced by gateway webhooks, verified, to S3 or a folder.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: receive webhooks, archive media.
    Serve {
        /// Config file (TOML).
        #[arg(long, env = "MEDIA_ARCHIVER_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and print a summary; exit 78 on problems.
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, env = "MEDIA_ARCHIVER_CONFIG")]
        config: PathBuf,
    },
    /// List, inspect and requeue jobs through a running daemon's admin API
    /// (token from MEDIA_ARCHIVER_ADMIN_TOKEN).
    Jobs(cli::jobs::JobsArgs),
    /// Find where a message's file was archived, through a running daemon's
    /// admin API (token from MEDIA_ARCHIVER_ADMIN_TOKEN).
    Media(cli::media::MediaArgs),
    /// List and resend the events sent to [[notify]] targets, through a
    /// running daemon's admin API (token from MEDIA_ARCHIVER_ADMIN_TOKEN).
    Notifications(cli::notifications::NotificationsArgs),
    /// Scrub the archive named in the config: re-read every blob and check
    /// its sha256 against its key, and every manifest against its blob;
    /// exit 1 on any mismatch.
    Verify {
        /// Config file (TOML).
        #[arg(long, env = "MEDIA_ARCHIVER_CONFIG")]
        config: PathBuf,
        /// Objects read at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
        /// Only this account's archive (its own `[accounts.storage]`, or
        /// the global store); by default every distinct archive.
        #[arg(long)]
        account: Option<String>,
    },
    /// Erase a person's media (GDPR): the manifests of an account's
    /// messages by chat and/or message id, each blob no other message
    /// names, and the unfinished jobs; or rebuild the blob index
    /// (--rebuild-index). Works on the queue and stores in the config.
    Erase {
        /// Config file (TOML).
        #[arg(long, env = "MEDIA_ARCHIVER_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: cli::erase::EraseArgs,
    },
    /// Work on queues directly: `queue migrate --from CONFIG --to CONFIG`
    /// copies every job and the blob index between two backends.
    Queue(cli::queue::QueueArgs),
    /// Enqueue media references without webhooks, from a JSON Lines file
    /// (one reference per line, in the provider's field names), into the
    /// queue named in the config. Idempotent.
    Backfill {
        /// Config file (TOML).
        #[arg(long, env = "MEDIA_ARCHIVER_CONFIG")]
        config: PathBuf,
        /// The account the references belong to.
        #[arg(long)]
        account: String,
        /// The references (`-`: standard input).
        #[arg(long)]
        input: String,
    },
}

/// Exit code for a bad config (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// jemalloc instead of the system allocator. Every archived file makes
/// buffers of its size (the download, hyper's read buffers, the request
/// body); glibc's allocator gave that memory back to the kernel and took it
/// again, file after file, and the kernel zeroed each page anew (page
/// faults and `clear_page` were a tenth of the daemon's CPU on small files,
/// BENCHMARKS.md). jemalloc keeps freed pages for reuse, returning them
/// after a few seconds unused, so peak memory is unchanged.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.command {
        Command::Serve { config }
        | Command::CheckConfig { config }
        | Command::Verify { config, .. }
        | Command::Backfill { config, .. }
        | Command::Erase { config, .. } => config,
        Command::Jobs(args) => return cli::jobs::run(args),
        Command::Media(args) => return cli::media::run(args),
        Command::Notifications(args) => return cli::notifications::run(args),
        Command::Queue(args) => return cli::queue::run(args),
    };
    let config = match Settings::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("{}: {errors}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        // Returned above, before any config is read.
        Command::Jobs(_) | Command::Media(_) | Command::Notifications(_) | Command::Queue(_) => {
            ExitCode::SUCCESS
        }
        Command::Verify {
            parallel,
            ref account,
            ..
        } => cli::verify::main(&config, usize::from(parallel), account.as_deref()),
        Command::Backfill {
            ref account,
            ref input,
            ..
        } => cli::backfill::main(&config, path, account, input),
        Command::Erase { ref args, .. } => cli::erase::main(&config, args),
        Command::CheckConfig { .. } => {
            print!("{}", cli::check_config::summary(&config));
            ExitCode::SUCCESS
        }
        Command::Serve { .. } => {
            daemon::init_logging(&config.log.format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(daemon::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(daemon::ServeError::Config(errors)) => {
                    eprint!("{}: {errors}", path.display());
                    ExitCode::from(EXIT_CONFIG)
                }
                Err(daemon::ServeError::Runtime(e)) => {
                    tracing::error!(error = format!("{e:#}"), "media-archiver stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
