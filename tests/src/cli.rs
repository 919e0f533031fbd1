//! The operator commands of the real binary (`backfill`, `verify`, `jobs`,
//! `media find`), run as an operator runs them.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::config::ADMIN_TOKEN;
use crate::daemon::binary;

/// Runs `media-archiver args...` in `workdir` (where a daemon's
/// `config.toml` and `data/` are), with the admin token in the environment
/// and no inherited URL or config path.
pub fn run(workdir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(workdir)
        .env("MEDIA_ARCHIVER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("MEDIA_ARCHIVER_URL")
        .env_remove("MEDIA_ARCHIVER_CONFIG")
        .output()
        .expect("run media-archiver")
}

/// `media-archiver backfill --account account --input input` against the
/// daemon's config in `workdir` (`input` relative to it).
pub fn backfill_file(workdir: &Path, account: &str, input: &str) -> Output {
    run(
        workdir,
        &[
            "backfill",
            "--config",
            "config.toml",
            "--account",
            account,
            "--input",
            input,
        ],
    )
}

/// [`backfill_file`] of `references` (one JSON line each, written to
/// `workdir/backfill.jsonl`); returns its standard output, and panics with
/// both streams if it did not exit 0.
pub fn backfill(workdir: &Path, account: &str, references: &[Value]) -> String {
    let lines: Vec<String> = references.iter().map(Value::to_string).collect();
    std::fs::write(workdir.join("backfill.jsonl"), lines.join("\n") + "\n")
        .expect("write backfill.jsonl");
    let run = backfill_file(workdir, account, "backfill.jsonl");
    let (stdout, stderr) = output_text(&run);
    assert_eq!(
        run.status.code(),
        Some(0),
        "backfill failed\n{stdout}{stderr}"
    );
    stdout
}

/// A command's standard output and error, as text.
pub fn output_text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
