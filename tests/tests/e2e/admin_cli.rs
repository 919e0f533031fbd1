//! `media-archiver jobs ...` and `notifications ...` against a running
//! daemon, as an operator uses them: tables for people, `--json` for
//! scripts, exit codes 0 / 1 / 2.

use std::process::{Command, Output};
use std::time::Duration;

use e2e::accounts::GREEN_WEBHOOK_TOKEN as TOKEN;
use e2e::{
    ADMIN_TOKEN, Daemon, StoreUnderTest, accounts, binary, bytes, config, free_port, notify_target,
    now,
};
use serde_json::{Value, json};
use test_support::green_api::FakeGreenApi;

const CHAT: &str = "79001234568@c.us";
const GOOD: &str = "CLIGOOD0000000000000000000000001";
const BAD: &str = "CLIBAD00000000000000000000000001";

/// Runs `media-archiver jobs <args> --url <daemon>` with the admin token.
fn jobs(daemon: &Daemon, args: &[&str]) -> Output {
    verb(daemon, "jobs", args)
}

/// Runs `media-archiver <verb> <args> --url <daemon>` with the admin token.
fn verb(daemon: &Daemon, verb: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .arg(verb)
        .args(args)
        .args(["--url", &daemon.base_url])
        .env("MEDIA_ARCHIVER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run media-archiver jobs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_list_show_retry_and_stats_through_the_admin_api() {
    let fake = FakeGreenApi::start().await;
    let daemon =
        Daemon::start_in_temp_dir(&config(&StoreUnderTest::Fs, &accounts::green_api(&fake)));
    for (id, url) in [
        (
            GOOD,
            fake.add_file(CHAT, GOOD, bytes(3000, 1), "image/jpeg", "a.jpg"),
        ),
        // SWE002 ("file too large") is permanent: dead at once.
        (BAD, "{{SWE002}}".to_owned()),
    ] {
        let hook = fake.file_webhook(
            "incomingMessageReceived",
            "imageMessage",
            CHAT,
            id,
            &url,
            now(),
        );
        assert_eq!(daemon.webhook("green", &hook, TOKEN).await.0, 200);
    }
    let wait = Duration::from_secs(30);
    daemon
        .wait_for_job(&format!("green:{GOOD}"), "done", wait)
        .await;
    daemon
        .wait_for_job(&format!("green:{BAD}"), "dead", wait)
        .await;

    // A table with a header, one row per job, and a count.
    let table = ok(jobs(&daemon, &["list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(lines[0].contains("STATE") && lines[0].contains("LAST ERROR"));
    assert!(
        lines.iter().any(|l| l.contains(GOOD) && l.contains("done")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(BAD) && l.contains("dead") && l.contains("over 100 MB")),
        "{table}"
    );
    assert_eq!(lines.last(), Some(&"2 jobs"));

    // Filters, and JSON for scripts: the API's own answer.
    let dead: Value = serde_json::from_str(&ok(jobs(
        &daemon,
        &["list", "--state", "dead", "--account", "green", "--json"],
    )))
    .unwrap();
    let listed = dead["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{dead}");
    assert_eq!(listed[0]["id"], format!("green:{BAD}"));
    assert_eq!(
        ok(jobs(&daemon, &["list", "--account", "nobody"])),
        "no jobs\n"
    );

    let shown = ok(jobs(&daemon, &["show", &format!("green:{BAD}")]));
    assert!(
        shown.contains("state:") && shown.contains("dead"),
        "{shown}"
    );
    assert!(shown.contains("last_error:"), "{shown}");
    assert!(shown.contains("SWE002"), "{shown}");

    let stats = ok(jobs(&daemon, &["stats"]));
    assert!(stats.starts_with("ACCOUNT"), "{stats}");
    assert!(stats.contains("green"), "{stats}");
    assert!(stats.contains("at risk"), "{stats}");

    // Requeue: one job by id, then every dead job.
    let retried = ok(jobs(&daemon, &["retry", &format!("green:{BAD}")]));
    assert_eq!(retried, format!("requeued green:{BAD}\n"));
    daemon
        .wait_for_job(&format!("green:{BAD}"), "dead", wait)
        .await;
    let all: Value =
        serde_json::from_str(&ok(jobs(&daemon, &["retry", "--state", "dead", "--json"]))).unwrap();
    assert_eq!(all, json!({"requeued": 1}));

    // A done job cannot be retried: the daemon says why, exit 1.
    let refused = jobs(&daemon, &["retry", &format!("green:{GOOD}")]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("done"),
        "{stderr}"
    );

    // An unknown job: exit 1 with the daemon's message.
    let missing = jobs(&daemon, &["show", "green:NOPE"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_exits_2_on_usage_errors_and_1_when_the_daemon_refuses() {
    let fake = FakeGreenApi::start().await;
    let daemon =
        Daemon::start_in_temp_dir(&config(&StoreUnderTest::Fs, &accounts::green_api(&fake)));

    // No token in the environment: usage error, no request sent.
    let output = Command::new(binary())
        .args(["jobs", "list", "--url", &daemon.base_url])
        .env_remove("MEDIA_ARCHIVER_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("MEDIA_ARCHIVER_ADMIN_TOKEN"));

    // Bad arguments.
    for args in [
        &["list", "--state", "sleeping"][..],
        &["retry"],
        &["retry", "green:1", "--state", "dead"],
    ] {
        assert_eq!(jobs(&daemon, args).status.code(), Some(2), "{args:?}");
    }

    // A wrong token: the daemon answers 401, exit 1.
    let output = Command::new(binary())
        .args(["jobs", "list", "--url", &daemon.base_url])
        .env("MEDIA_ARCHIVER_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));

    // Nobody listening: exit 1, naming the URL.
    let output = Command::new(binary())
        .args(["jobs", "stats", "--url", "http://127.0.0.1:1"])
        .env("MEDIA_ARCHIVER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("127.0.0.1:1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_list_and_retry_through_the_admin_api() {
    let fake = FakeGreenApi::start().await;
    // An app that is down: the event dies after a second.
    let down = format!("http://127.0.0.1:{}/hooks", free_port());
    let daemon = Daemon::start_in_temp_dir(
        &(config(&StoreUnderTest::Fs, &accounts::green_api(&fake))
            + &notify_target("crm", &down, "max_age = \"1s\"")),
    );
    let url = fake.add_file(CHAT, GOOD, bytes(3000, 1), "image/jpeg", "a.jpg");
    let hook = fake.file_webhook(
        "incomingMessageReceived",
        "imageMessage",
        CHAT,
        GOOD,
        &url,
        now(),
    );
    assert_eq!(daemon.webhook("green", &hook, TOKEN).await.0, 200);
    let id = format!("crm:green:{GOOD}:media.archived");
    daemon
        .wait_for_notification(
            &id,
            |n| n["id"] == id.as_str() && n["state"] == "dead",
            Duration::from_secs(30),
        )
        .await;

    let table = ok(verb(&daemon, "notifications", &["list", "--state", "dead"]));
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with(&format!("{id}  dead")), "{table}");
    assert!(row.contains("expired:"), "the reason is shown: {table}");
    assert!(table.ends_with("1 notification\n"), "{table}");
    let listed: Value = serde_json::from_str(&ok(verb(
        &daemon,
        "notifications",
        &["list", "--target", "crm", "--json"],
    )))
    .expect("--json prints the API's JSON");
    assert_eq!(listed["notifications"][0]["id"], id.as_str());

    assert_eq!(
        ok(verb(&daemon, "notifications", &["retry", &id])),
        format!("requeued {id}\n")
    );
    let pending = ok(verb(
        &daemon,
        "notifications",
        &["list", "--state", "pending"],
    ));
    assert!(pending.contains(&id), "{pending}");
    let unknown = verb(
        &daemon,
        "notifications",
        &["retry", "crm:green:NOPE:media.archived"],
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("404: no notification"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
