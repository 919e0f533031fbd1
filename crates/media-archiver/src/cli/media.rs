//! `media-archiver media find`: where a message's file was archived, from a
//! running daemon's admin API (`GET /api/v1/media`), with the same `--url`,
//! token variable, `--json` and exit codes as `jobs`.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::Value;

use super::api::{ApiArgs, Failure, run_command, text};

/// `media`: look up archived media through a running daemon.
#[derive(Debug, clap::Args)]
pub(crate) struct MediaArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: MediaCommand,
}

#[derive(Debug, clap::Subcommand)]
enum MediaCommand {
    /// Where a message's file was archived: keys, sha256, size and, on S3,
    /// a presigned download URL.
    Find {
        /// The account the message arrived on.
        #[arg(long)]
        account: String,
        /// The provider's message id (not the media id).
        #[arg(long)]
        message_id: String,
    },
}

/// Runs a `media` subcommand and returns the process exit code.
pub(crate) fn run(args: &MediaArgs) -> ExitCode {
    run_command(execute(args))
}

async fn execute(args: &MediaArgs) -> Result<String, Failure> {
    let api = args.api.connect()?;
    let MediaCommand::Find {
        account,
        message_id,
    } = &args.command;
    let answer = api
        .get(
            "/media",
            &[
                ("account", account.clone()),
                ("message_id", message_id.clone()),
            ],
        )
        .await?;
    Ok(args.api.output(&answer, || {
        listing(answer["objects"].as_array().map_or(&[][..], Vec::as_slice))
    }))
}

/// One block of `field: value` lines per archived object.
fn listing(objects: &[Value]) -> String {
    const FIELDS: [&str; 8] = [
        "blob_key",
        "manifest_key",
        "sha256",
        "size",
        "mime_type",
        "verified",
        "verification",
        "url",
    ];
    let mut out = String::new();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for field in FIELDS {
            if field == "url" && object[field].is_null() {
                continue;
            }
            let _ = writeln!(out, "{:<13} {}", format!("{field}:"), text(&object[field]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_object_is_a_block_and_url_only_when_given() {
        let objects = [
            json!({"blob_key": "blobs/sha256/ab/ab.jpg", "manifest_key": "messages/g/2026/01/01/M.json",
                   "sha256": "ab", "size": 3, "mime_type": "image/jpeg", "verified": false,
                   "verification": "computed-only"}),
            json!({"blob_key": "b", "manifest_key": "m", "sha256": "cd", "size": 1,
                   "mime_type": null, "verified": true, "verification": "provider-sha256",
                   "url": "https://s3/x?sig"}),
        ];
        let out = listing(&objects);
        assert!(
            out.starts_with("blob_key:     blobs/sha256/ab/ab.jpg\n"),
            "{out}"
        );
        assert!(out.contains("mime_type:    -\n"), "{out}");
        assert!(
            out.contains("verified:     false\nverification: computed-only\n"),
            "{out}"
        );
        assert_eq!(out.matches("url:").count(), 1, "{out}");
        assert!(out.contains("\n\nblob_key:     b\n"), "{out}");
    }
}
