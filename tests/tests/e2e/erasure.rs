//! Erasure (PRODUCT.md section 10) end to end: the real daemon archives a
//! file forwarded to two chats and one of a single chat, then erases one
//! chat and the other, through the admin API and the CLI.
//!
//! The two orders of an erasure racing an archive of another message with
//! the same blob are forced in the queue's conformance suite
//! (`retry_queue::conformance`, both backends): there the order is
//! exact, which a daemon running its own workers cannot promise here.

use std::time::Duration;

use e2e::accounts::GREEN_WEBHOOK_TOKEN as TOKEN;
use e2e::{Daemon, Stage, StoreUnderTest, accounts, blob_key, bytes, config, now};
use serde_json::{Value, json};
use test_support::garage::Garage;
use test_support::green_api::FakeGreenApi;

const CHAT_A: &str = "79001110001@c.us";
const CHAT_B: &str = "79001110002@c.us";
const WAIT: Duration = Duration::from_secs(30);

/// Announces `content` as message `id` in `chat`; the webhook body.
async fn announce(s: &Stage<FakeGreenApi>, chat: &str, id: &str, content: &[u8]) -> Value {
    let url = s
        .fake
        .add_file(chat, id, content.to_vec(), "image/jpeg", "p.jpg");
    let hook = s.fake.file_webhook(
        "incomingMessageReceived",
        "imageMessage",
        chat,
        id,
        &url,
        now(),
    );
    let (status, answer) = s.daemon.webhook("green", &hook, TOKEN).await;
    assert_eq!(status, 200, "{answer}");
    hook
}

async fn erase(daemon: &Daemon, body: Value) -> (u16, Value) {
    daemon.admin_post("/api/v1/erasures", &body).await
}

async fn blobs(s: &Stage<FakeGreenApi>) -> Vec<String> {
    s.archive.keys("blobs/").await
}

async fn shared_blob_survives_one_chat_and_goes_with_the_second(
    store: StoreUnderTest,
    garage: Option<Garage>,
) {
    let fake = FakeGreenApi::start().await;
    let config = config(&store, &accounts::green_api(&fake));
    let s = Stage::new(fake, &store, &config, garage);
    let (forwarded, own) = (bytes(30_000, 7), bytes(20_000, 8));
    let a1 = announce(&s, CHAT_A, "ERASEA100000000000000000000000001", &forwarded).await;
    announce(&s, CHAT_A, "ERASEA200000000000000000000000002", &own).await;
    announce(&s, CHAT_B, "ERASEB100000000000000000000000001", &forwarded).await;
    // A message of chat A that the gateway refuses for good: a dead job.
    let dead_url = "{{SWE002}}";
    let dead_hook = s.fake.file_webhook(
        "incomingMessageReceived",
        "imageMessage",
        CHAT_A,
        "ERASEA300000000000000000000000003",
        dead_url,
        now(),
    );
    assert_eq!(s.daemon.webhook("green", &dead_hook, TOKEN).await.0, 200);
    for id in [
        "ERASEA100000000000000000000000001",
        "ERASEA200000000000000000000000002",
        "ERASEB100000000000000000000000001",
    ] {
        s.daemon
            .wait_for_job(&format!("green:{id}"), "done", WAIT)
            .await;
    }
    s.daemon
        .wait_for_job("green:ERASEA300000000000000000000000003", "dead", WAIT)
        .await;
    let (shared, only_a) = (blob_key(&forwarded, ".jpg"), blob_key(&own, ".jpg"));
    assert_eq!(blobs(&s).await.len(), 2, "one blob for the forwarded file");

    let chat_a = json!({"account": "green", "chat_id": CHAT_A});
    let (status, dry) = erase(
        &s.daemon,
        json!({"account": "green", "chat_id": CHAT_A, "dry_run": true}),
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        dry,
        json!({"manifests": 2, "blobs_deleted": 1, "blobs_kept_shared": 1, "jobs_erased": 1, "dry_run": true})
    );
    assert!(
        s.archive
            .manifest("green", "ERASEA100000000000000000000000001")
            .await
            .is_some(),
        "a dry run deletes nothing"
    );
    assert_eq!(blobs(&s).await.len(), 2);

    let (status, done) = erase(&s.daemon, chat_a.clone()).await;
    assert_eq!(status, 200, "{done}");
    let mut expected = dry.clone();
    expected["dry_run"] = json!(false);
    assert_eq!(done, expected, "the real run does what the dry run counted");
    for id in [
        "ERASEA100000000000000000000000001",
        "ERASEA200000000000000000000000002",
    ] {
        assert!(
            s.archive.manifest("green", id).await.is_none(),
            "{id}'s manifest is gone"
        );
    }
    assert!(
        s.archive
            .manifest("green", "ERASEB100000000000000000000000001")
            .await
            .is_some()
    );
    assert_eq!(
        blobs(&s).await,
        [shared],
        "{only_a} gone, the shared blob kept"
    );
    let (_, dead) = s
        .daemon
        .job("green:ERASEA300000000000000000000000003")
        .await;
    assert_eq!(dead["state"], "erased", "{dead}");

    // Redelivered, the erased messages stay erased: no job runs again.
    for hook in [&a1, &dead_hook] {
        let (status, answer) = s.daemon.webhook("green", hook, TOKEN).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["duplicates"], 1, "{answer}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        s.archive
            .manifest("green", "ERASEA100000000000000000000000001")
            .await
            .is_none()
    );
    let (_, dead) = s
        .daemon
        .job("green:ERASEA300000000000000000000000003")
        .await;
    assert_eq!(
        dead["state"], "erased",
        "not revived by the redelivery: {dead}"
    );
    let (status, answer) = s
        .daemon
        .call(
            reqwest::Method::POST,
            "/api/v1/jobs/green%3AERASEA300000000000000000000000003/retry",
            Some(e2e::ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 400, "erased is terminal: {answer}");

    // The second chat: the last message naming the shared blob goes.
    let (status, done) = erase(&s.daemon, json!({"account": "green", "chat_id": CHAT_B})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["manifests"], 1);
    assert_eq!(done["blobs_deleted"], 1);
    assert!(blobs(&s).await.is_empty(), "nothing of either chat is left");
    // Log lines may trail the answers by a moment.
    let audited = || s.daemon.logs().matches("\"audit\":\"erasure\"").count();
    let started = std::time::Instant::now();
    while audited() < 3 {
        assert!(
            started.elapsed() < WAIT,
            "one audit event per erasure:\n{}",
            s.daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(audited(), 3, "one audit event per erasure, no more");
    s.daemon
        .wait_for_metric(
            r#"media_archiver_erasures_total{outcome="done"}"#,
            3.0,
            WAIT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_blob_survives_erasing_one_chat_and_goes_with_the_second() {
    shared_blob_survives_one_chat_and_goes_with_the_second(StoreUnderTest::Fs, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_s3_a_shared_blob_survives_erasing_one_chat_and_goes_with_the_second() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let store = StoreUnderTest::garage(&garage);
    shared_blob_survives_one_chat_and_goes_with_the_second(store, Some(garage)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_erasure_requests_are_400_and_object_lock_is_409_with_nothing_deleted() {
    let fake = FakeGreenApi::start().await;
    // The account's own store is locked; nothing ever reaches it here.
    let locked = format!(
        "{}\n[accounts.storage]\nbackend = \"s3\"\n[accounts.storage.s3]\nbucket = \"locked\"\n\
         region = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\nforce_path_style = true\n\
         access_key_id = \"k\"\nsecret_access_key = \"s\"\nobject_lock_mode = \"COMPLIANCE\"\n\
         object_lock_days = 365\n",
        accounts::green_api(&fake)
    );
    let daemon = Daemon::start_in_temp_dir(&config(&StoreUnderTest::Fs, &locked));
    for (body, expected) in [
        (
            json!({"account": "green"}),
            "give chat_id, message_ids, or both",
        ),
        (
            json!({"account": "nobody", "chat_id": CHAT_A}),
            "account \"nobody\" is not configured",
        ),
        (
            json!({"account": "green", "chat_id": CHAT_A, "before": "yesterday"}),
            "is not RFC 3339",
        ),
        (
            json!({"account": "green", "chat": CHAT_A}),
            "unknown field `chat`",
        ),
    ] {
        let (status, answer) = erase(&daemon, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(expected),
            "{body}: {answer}"
        );
    }
    let (status, answer) = erase(&daemon, json!({"account": "green", "message_ids": ["M1"]})).await;
    assert_eq!(status, 409, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Object Lock COMPLIANCE") && error.contains("nothing was deleted"),
        "{answer}"
    );
    let (status, _) = daemon
        .call(
            reqwest::Method::GET,
            "/api/v1/erasures",
            Some(e2e::ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 405);
}

/// An archive the blob index does not know (here: a new queue database
/// on an existing archive, as after an upgrade): erasures are refused
/// until `erase --rebuild-index` scanned it; then the CLI erases as the
/// API does, a dry run first.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_rebuilds_the_index_of_an_existing_archive_then_erases_by_message() {
    let fake = FakeGreenApi::start().await;
    let config = config(&StoreUnderTest::Fs, &accounts::green_api(&fake));
    let workdir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&config, workdir.path());
    let content = bytes(10_000, 3);
    let id = "CLIERASE000000000000000000000001";
    let url = fake.add_file(CHAT_A, id, content.clone(), "image/jpeg", "p.jpg");
    let hook = fake.file_webhook(
        "incomingMessageReceived",
        "imageMessage",
        CHAT_A,
        id,
        &url,
        now(),
    );
    assert_eq!(daemon.webhook("green", &hook, TOKEN).await.0, 200);
    daemon
        .wait_for_job(&format!("green:{id}"), "done", WAIT)
        .await;
    assert!(daemon.terminate().success());
    for name in ["queue.db", "queue.db-wal", "queue.db-shm"] {
        let _ = std::fs::remove_file(workdir.path().join("data").join(name));
    }
    let daemon = Daemon::start(&config, workdir.path());
    let (status, answer) = erase(
        &daemon,
        json!({"account": "green", "message_ids": [id], "dry_run": true}),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--rebuild-index"),
        "{answer}"
    );

    let run = |args: &[&str]| e2e::cli::run(workdir.path(), args);
    let rebuilt = run(&["erase", "--config", "config.toml", "--rebuild-index"]);
    let (out, err) = e2e::cli::output_text(&rebuilt);
    assert!(rebuilt.status.success(), "{out}{err}");
    assert!(out.contains("1 manifests indexed"), "{out}");

    let dry = run(&[
        "erase",
        "--config",
        "config.toml",
        "--account",
        "green",
        "--message",
        id,
        "--dry-run",
    ]);
    let (out, err) = e2e::cli::output_text(&dry);
    assert!(dry.status.success(), "{out}{err}");
    assert!(
        out.starts_with("would erase: 1 manifests, 1 blobs deleted"),
        "{out}"
    );
    let archive = e2e::Archive::fs(&workdir.path().join("data/archive"));
    assert!(
        archive.manifest("green", id).await.is_some(),
        "a dry run deletes nothing"
    );

    let done = run(&[
        "erase",
        "--config",
        "config.toml",
        "--account",
        "green",
        "--message",
        id,
    ]);
    let (out, err) = e2e::cli::output_text(&done);
    assert!(done.status.success(), "{out}{err}");
    assert!(
        out.starts_with("erased: 1 manifests, 1 blobs deleted"),
        "{out}"
    );
    assert!(archive.manifest("green", id).await.is_none());
    assert!(archive.keys("blobs/").await.is_empty());

    let usage = run(&["erase", "--config", "config.toml", "--account", "green"]);
    assert_eq!(usage.status.code(), Some(2));
    drop(daemon);
}
