//! `media-archiver erase`: erasure (PRODUCT.md section 10) straight from
//! the queue and the stores named in the config, as `POST /api/v1/erasures`
//! does it (the same [`ArchiveEraser`]), or `--rebuild-index`: the queue's
//! blob index rebuilt by a scan of every archive's manifests.
//!
//! Exit codes: 0 done, 1 failed part-way (run it again to finish), 2 usage
//! (unknown account, nothing to erase by), 3 refused (nothing deleted:
//! Object Lock, a matching message being archived, an index to rebuild).

use std::process::ExitCode;

use retry_queue::ErasureFilter;
use webhook_receiver::{Eraser as _, ErasureFailure};

use crate::cli;
use crate::config::Settings;
use crate::daemon;
use crate::erase::ArchiveEraser;

/// `erase`'s flags, as given.
#[derive(Debug, clap::Args)]
pub(crate) struct EraseArgs {
    /// The account whose media to erase.
    #[arg(long, required_unless_present = "rebuild_index")]
    pub(crate) account: Option<String>,
    /// Every message of this chat (with `--message`: only those).
    #[arg(long)]
    pub(crate) chat: Option<String>,
    /// These messages (several after one flag, or the flag repeated).
    #[arg(long = "message", num_args = 1..)]
    pub(crate) messages: Vec<String>,
    /// Only messages sent before this time (RFC 3339).
    #[arg(long)]
    pub(crate) before: Option<String>,
    /// Count what would be erased; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Rebuild the blob index from the archives' manifests (once after
    /// upgrading, before the first erasure), instead of erasing.
    #[arg(long, conflicts_with_all = ["account", "chat", "messages", "before", "dry_run"])]
    pub(crate) rebuild_index: bool,
}

/// Runs `erase` on checked settings and returns the exit code.
pub(crate) fn main(config: &Settings, args: &EraseArgs) -> ExitCode {
    let filter = if args.rebuild_index {
        None
    } else {
        match filter(config, args) {
            Ok(filter) => Some(filter),
            Err(usage) => {
                eprintln!("error: {usage}");
                return ExitCode::from(2);
            }
        }
    };
    cli::block_on(tokio::runtime::Builder::new_multi_thread(), async {
        let opened = async {
            let archives = daemon::open_archives(config).await?;
            let queue = daemon::open_queue(config).await.map_err(|e| match e {
                daemon::ServeError::Config(problems) => anyhow::anyhow!("{problems}"),
                daemon::ServeError::Runtime(e) => e,
            })?;
            anyhow::Ok(ArchiveEraser { queue, archives })
        };
        let eraser = match opened.await {
            Ok(eraser) => eraser,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let Some(filter) = filter else {
            return match eraser.rebuild_index().await {
                Ok(counts) => {
                    for (archive, n) in counts {
                        println!("{archive}: {n} manifests indexed");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: the index was not rebuilt: {e}");
                    ExitCode::FAILURE
                }
            };
        };
        match eraser.erase(&filter, args.dry_run, "cli").await {
            Ok(report) => {
                let verb = if report.dry_run {
                    "would erase"
                } else {
                    "erased"
                };
                println!(
                    "{verb}: {} manifests, {} blobs deleted, {} blobs kept (shared with other messages), {} jobs erased",
                    report.manifests,
                    report.blobs_deleted,
                    report.blobs_kept_shared,
                    report.jobs_erased
                );
                ExitCode::SUCCESS
            }
            Err(ErasureFailure::Refused(why)) => {
                eprintln!("refused, nothing deleted: {why}");
                ExitCode::from(3)
            }
            Err(ErasureFailure::Unavailable(why)) => {
                eprintln!("error: {why}; run the same erasure again to finish it");
                ExitCode::FAILURE
            }
        }
    })
}

/// The filter the flags give, or what is wrong with them.
fn filter(config: &Settings, args: &EraseArgs) -> Result<ErasureFilter, String> {
    let account = args.account.clone().unwrap_or_default();
    if !config.providers.contains_key(&account) {
        return Err(format!(
            "account {account:?} is not configured (accounts: {})",
            config.account_names().join(", ")
        ));
    }
    webhook_receiver::erasure_filter(
        account,
        args.chat.clone(),
        args.messages.clone(),
        args.before.as_deref(),
    )
    .map_err(|e| {
        e.replace("chat_id, message_ids", "--chat, --message")
            .replace("before ", "--before ")
    })
}
