//! Events to the user's app (PRODUCT.md section 11), end to end: the real
//! daemon archives from the Cloud API fake and tells a fake app, which
//! records every POST; signatures are checked with our own code and with
//! the Standard Webhooks reference library.

use std::time::Duration;

use e2e::{
    Daemon, NOTIFY_SECRET as SECRET, Stage, StoreUnderTest, accounts, bytes, config, free_port,
    notify_target, now, postgres_queue, sha256_hex,
};
use media_notify::sign::SigningKey;
use retry_queue::conformance::pg::PgTestDatabase;
use serde_json::Value;
use test_support::app::{AppSink, Received};
use test_support::garage::Garage;
use test_support::green_api::FakeGreenApi;
use test_support::meta::{FakeCloudApi, HashEncoding};

const ACCOUNT: &str = "cloud";
const WAIT: Duration = Duration::from_secs(30);

/// The `crm` target at `url`.
fn notify(url: &str, extra: &str) -> String {
    notify_target("crm", url, extra)
}

/// Announces an image of `len` bytes by a signed Cloud API webhook; its
/// bytes and job id.
async fn announce(daemon: &Daemon, fake: &FakeCloudApi, message_id: &str) -> (Vec<u8>, String) {
    let content = bytes(40_000, message_id.len() as u64);
    let media = fake.add_media("image", content.clone(), "image/jpeg");
    post(daemon, fake, &media, message_id).await;
    (content, format!("{ACCOUNT}:{media}"))
}

async fn post(daemon: &Daemon, fake: &FakeCloudApi, media: &str, message_id: &str) {
    let hook = fake.message_webhook(media, message_id, now(), HashEncoding::Base64);
    let raw = serde_json::to_vec(&hook).unwrap();
    let signature = fake.sign(&raw);
    let (status, answer) = daemon
        .post_raw(
            ACCOUNT,
            raw,
            &[
                ("content-type", "application/json"),
                ("x-hub-signature-256", &signature),
            ],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}

/// Signed as Standard Webhooks says: by our own check, and by the
/// reference library where it is installed (required in CI).
fn assert_signed(received: &Received) {
    let timestamp: i64 = received.timestamp.parse().expect("unix seconds");
    assert!(
        (now() - timestamp).abs() < 120,
        "webhook-timestamp {timestamp} is not now"
    );
    let key = SigningKey::from_secret(SECRET).unwrap();
    assert!(
        key.verify(&received.id, timestamp, &received.body, &received.signature),
        "signature {} does not verify",
        received.signature
    );
    if let Some(verified) = e2e::standard_webhooks::verify(SECRET, received) {
        assert!(verified, "the reference library refused {received:?}");
    }
    assert_eq!(received.content_type, "application/json");
}

/// The first notification in `state`, once there is one.
async fn wait_for_notification(daemon: &Daemon, state: &str) -> Value {
    daemon
        .wait_for_notification(state, |n| n["state"] == state, WAIT)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn with_s3_an_archived_image_is_told_once_signed_with_its_manifest_and_a_working_url() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let app = AppSink::start(&[]).await;
    let fake = FakeCloudApi::start().await;
    let store = StoreUnderTest::garage(&garage);
    let config =
        config(&store, &accounts::cloud_api(&fake)) + &notify(&app.url(), "include_url = true");
    let s = Stage::new(fake, &store, &config, Some(garage));
    let message_id = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQU5PVElGWTEA";
    let (content, job_id) = announce(&s.daemon, &s.fake, message_id).await;
    s.daemon.wait_for_job(&job_id, "done", WAIT).await;

    let received = app.wait_for(1, WAIT).await;
    let post = &received[0];
    assert_eq!(post.id, format!("crm:{job_id}:media.archived"));
    assert_signed(post);
    let event = post.json();
    assert_eq!(event["type"], "media.archived");
    let data = &event["data"];
    let manifest = s
        .archive
        .manifest(ACCOUNT, message_id)
        .await
        .expect("manifest");
    for field in [
        "sha256",
        "blob_key",
        "message_id",
        "account",
        "provider",
        "size",
    ] {
        assert_eq!(data[field], manifest[field], "{field}: {data}");
    }
    assert_eq!(data["sha256"], sha256_hex(&content));
    let manifest_key = data["manifest_key"].as_str().expect("manifest_key");
    assert!(manifest_key.ends_with(".json"), "{manifest_key}");
    let url = data["url"].as_str().expect("a presigned url");
    let fetched = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert!(
        fetched == content,
        "the presigned URL serves the archived bytes"
    );

    let delivered = wait_for_notification(&s.daemon, "delivered").await;
    assert_eq!(delivered["attempts"], 1, "{delivered}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.received().len(), 1, "exactly one delivery");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_answers_500_three_times_gets_the_same_webhook_id_four_times() {
    let app = AppSink::start(&[500, 500, 500]).await;
    let fake = FakeCloudApi::start().await;
    let config = config(&StoreUnderTest::Fs, &accounts::cloud_api(&fake)) + &notify(&app.url(), "");
    let s = Stage::new(fake, &StoreUnderTest::Fs, &config, None);
    let (_, job_id) = announce(&s.daemon, &s.fake, "wamid.RETRY1").await;

    let received = app.wait_for(4, WAIT).await;
    let id = format!("crm:{job_id}:media.archived");
    assert!(received.iter().all(|r| r.id == id), "{received:?}");
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 500, 200]
    );
    for post in &received {
        assert_signed(post);
    }
    let delivered = wait_for_notification(&s.daemon, "delivered").await;
    assert_eq!(delivered["id"], id.as_str());
    assert_eq!(delivered["attempts"], 4, "{delivered}");
    let metric = |outcome: &str| {
        format!(r#"media_archiver_notifications_total{{target="crm",outcome="{outcome}"}}"#)
    };
    s.daemon
        .wait_for_metric(&metric("delivered"), 1.0, WAIT)
        .await;
    assert_eq!(s.daemon.metric(&metric("failed")).await, 3.0);
}

/// On the PostgreSQL queue the outbox is the same: one event per archived
/// job, committed by the database with the job's transition.
#[tokio::test(flavor = "multi_thread")]
async fn with_postgres_an_archived_image_is_told_once() {
    let Some(db) = PgTestDatabase::create() else {
        return;
    };
    let app = AppSink::start(&[500]).await;
    let fake = FakeCloudApi::start().await;
    let config = config(
        &StoreUnderTest::Fs,
        &(accounts::cloud_api(&fake) + &postgres_queue(&db)),
    ) + &notify(&app.url(), "");
    let s = Stage::new(fake, &StoreUnderTest::Fs, &config, None);
    let (_, job_id) = announce(&s.daemon, &s.fake, "wamid.POSTGRES1").await;
    s.daemon.wait_for_job(&job_id, "done", WAIT).await;

    let received = app.wait_for(2, WAIT).await;
    let id = format!("crm:{job_id}:media.archived");
    assert!(received.iter().all(|r| r.id == id), "{received:?}");
    for post in &received {
        assert_signed(post);
    }
    let delivered = wait_for_notification(&s.daemon, "delivered").await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.received().len(), 2, "nothing after the 200");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_job_is_told_as_media_dead_with_its_reason() {
    let app = AppSink::start(&[]).await;
    let fake = FakeCloudApi::start().await;
    let config = config(&StoreUnderTest::Fs, &accounts::cloud_api(&fake))
        + &notify(&app.url(), "events = [\"media.dead\"]");
    let s = Stage::new(fake, &StoreUnderTest::Fs, &config, None);
    let (_, archived_job) = announce(&s.daemon, &s.fake, "wamid.FINE1").await;
    let media = s.fake.add_media("image", bytes(20_000, 3), "image/png");
    s.fake.corrupt(&media);
    post(&s.daemon, &s.fake, &media, "wamid.BAD1").await;
    let dead_job = format!("{ACCOUNT}:{media}");
    s.daemon.wait_for_job(&dead_job, "dead", WAIT).await;
    s.daemon.wait_for_job(&archived_job, "done", WAIT).await;

    let received = app.wait_for(1, WAIT).await;
    assert_eq!(received[0].id, format!("crm:{dead_job}:media.dead"));
    assert_signed(&received[0]);
    let event = received[0].json();
    assert_eq!(event["type"], "media.dead");
    assert_eq!(event["data"]["id"], dead_job.as_str());
    assert_eq!(event["data"]["state"], "dead");
    let reason = event["data"]["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains("sha256 mismatch"), "{event}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.received().len(), 1, "media.archived was not asked for");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_before_it_could_deliver_delivers_after_restart() {
    // The app is down: nothing listens on its port yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/media");
    let fake = FakeCloudApi::start().await;
    let config = config(&StoreUnderTest::Fs, &accounts::cloud_api(&fake)) + &notify(&url, "");
    let workdir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&config, workdir.path());
    let (_, job_id) = announce(&daemon, &fake, "wamid.RESTART1").await;
    daemon.wait_for_job(&job_id, "done", WAIT).await;
    let failing = daemon
        .wait_for_notification("that failed", |n| n["last_error"].is_string(), WAIT)
        .await;
    assert_eq!(failing["state"], "pending", "{failing}");
    daemon.kill();

    let app = AppSink::start_on(&format!("127.0.0.1:{port}"), &[])
        .await
        .expect("the app comes up on its port");
    let daemon = Daemon::start(&config, workdir.path());
    // A send cut by the kill is claimed again after timeout + 60 s.
    let received = app.wait_for(1, Duration::from_secs(90)).await;
    assert_eq!(received[0].id, format!("crm:{job_id}:media.archived"));
    assert_signed(&received[0]);
    wait_for_notification(&daemon, "delivered").await;
}

/// Many jobs, an app that refuses every third request, and a `kill -9` in
/// the middle: every archived job is told, none is lost, and after the
/// restart nothing is left pending. (Jobs leased at the kill wait out their
/// 30 s lease: this test takes about that long.)
#[tokio::test(flavor = "multi_thread")]
async fn every_archived_job_is_told_through_a_flaky_app_and_a_crash() {
    const N: usize = 60;
    const CHAT: &str = "79001234568@c.us";
    let script: Vec<u16> = (0..3 * N)
        .map(|i| if i % 3 == 0 { 500 } else { 200 })
        .collect();
    let app = AppSink::start(&script).await;
    let fake = FakeGreenApi::start().await;
    let config = config(&StoreUnderTest::Fs, &accounts::green_api(&fake)) + &notify(&app.url(), "");
    let workdir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&config, workdir.path());
    let mut jobs = Vec::new();
    for i in 0..N {
        let id = format!("FLAKY{i:0>27}");
        let url = fake.add_file(CHAT, &id, bytes(1500 + i, i as u64), "image/jpeg", "f.jpg");
        let hook = fake.file_webhook(
            "incomingMessageReceived",
            "imageMessage",
            CHAT,
            &id,
            &url,
            now(),
        );
        let (status, answer) = daemon
            .webhook("green", &hook, e2e::accounts::GREEN_WEBHOOK_TOKEN)
            .await;
        assert_eq!(status, 200, "{answer}");
        jobs.push(format!("green:{id}"));
        if i == N / 2 {
            daemon.kill();
            daemon = Daemon::start(&config, workdir.path());
        }
    }
    for job in &jobs {
        daemon.wait_for_job(job, "done", WAIT).await;
    }

    let expected: std::collections::BTreeSet<String> = jobs
        .iter()
        .map(|job| format!("crm:{job}:media.archived"))
        .collect();
    let start = std::time::Instant::now();
    loop {
        let accepted: std::collections::BTreeSet<String> = app
            .received()
            .into_iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.id)
            .collect();
        if accepted == expected {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{} of {N} events accepted; missing {:?}",
            accepted.len(),
            expected.difference(&accepted).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for post in app.received().iter().take(5) {
        assert_signed(post);
    }
    let start = std::time::Instant::now();
    while !daemon.notifications("state=pending").await.is_empty() {
        assert!(start.elapsed() < WAIT, "notifications left pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = daemon.notifications("state=delivered&limit=1000").await;
    assert_eq!(delivered.len(), N, "one notification per job");
}
