//! The command line as an operator meets it: exit codes and messages.

use std::process::Command;

fn media_archiver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_media-archiver"))
}

fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn check_config_accepts_the_dev_config_and_summarises_it() {
    let dev = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/dev.toml");
    let output = media_archiver()
        .args(["check-config", "--config", dev])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("green-dev: greenapi (authenticated)"),
        "{stdout}"
    );
    assert!(stdout.contains("queue: sqlite"), "{stdout}");
    assert!(stdout.contains("storage: fs"), "{stdout}");
    assert!(
        !stdout.contains("dev-api-token"),
        "secrets must not be printed: {stdout}"
    );
}

#[test]
fn check_config_names_unauthenticated_accounts() {
    let (_dir, path) = write_config(
        "[[accounts]]\nname = \"open\"\nprovider = \"greenapi\"\nid_instance = 1\napi_token = \"t\"\n\
         allow_unauthenticated_webhooks = true\n",
    );
    let output = media_archiver()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("open: greenapi (UNAUTHENTICATED webhooks)")
    );
}

#[test]
fn an_account_without_webhook_credentials_is_a_config_error_naming_the_key() {
    let (_dir, path) = write_config(
        "[[accounts]]\nname = \"green-main\"\nprovider = \"greenapi\"\nid_instance = 1\napi_token = \"t\"\n",
    );
    let output = media_archiver()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "accounts[0] (green-main): webhook_token: required (or set allow_unauthenticated_webhooks = true)"
        ),
        "{stderr}"
    );
}

#[test]
fn a_bad_config_exits_78_listing_every_problem() {
    let (_dir, path) =
        write_config("[server]\nlisten = \"x\"\nport = 1\n[[accounts]]\nname = \"Bad Name\"\n");
    for command in ["check-config", "serve"] {
        let output = media_archiver()
            .args([command, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(78), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("unknown field `port`"), "{stderr}");
        assert!(stderr.contains("accounts[0] (Bad Name)"), "{stderr}");
    }
}

#[test]
fn a_secret_that_cannot_be_read_is_a_config_error_naming_the_variable_not_a_value() {
    let (_dir, path) = write_config(
        "[[accounts]]\nname = \"g\"\nprovider = \"greenapi\"\nid_instance = 1\n\
         api_token = { env = \"MEDIA_ARCHIVER_TEST_NO_SUCH_VAR\" }\nwebhook_token = \"w\"\n",
    );
    let output = media_archiver()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("MEDIA_ARCHIVER_TEST_NO_SUCH_VAR"));
}

#[test]
fn usage_errors_exit_2() {
    let output = media_archiver().arg("frobnicate").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn verify_and_backfill_exit_78_on_a_bad_config_and_2_on_usage() {
    let (_dir, path) = write_config("[server]\nport = 1\n");
    for args in [
        vec!["verify", "--config"],
        vec![
            "backfill",
            "--account",
            "a",
            "--input",
            "refs.jsonl",
            "--config",
        ],
    ] {
        let output = media_archiver().args(&args).arg(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(78), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field `port`"));
    }
    let missing_account = media_archiver()
        .args(["backfill", "--input", "refs.jsonl", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(missing_account.status.code(), Some(2));
    let (_dir, path) = write_config(
        "[[accounts]]\nname = \"g\"\nprovider = \"greenapi\"\nid_instance = 1\napi_token = \"t\"\n\
         webhook_token = \"w\"\n",
    );
    let unknown = media_archiver()
        .args([
            "backfill",
            "--account",
            "other",
            "--input",
            "refs.jsonl",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("accounts: g"));
}
