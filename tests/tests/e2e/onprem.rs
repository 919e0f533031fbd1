//! WhatsApp Business On-Premises API end to end: the real daemon, the fake
//! On-Prem client (login, asynchronous store, store callbacks posted to the
//! daemon), and the real archive (a folder, or Garage over S3).

use std::time::Duration;

use e2e::accounts::ONPREM_WEBHOOK_TOKEN as WEBHOOK_TOKEN;
use e2e::{Stage, StoreUnderTest, accounts, bytes, now, sha256_hex};
use serde_json::json;
use test_support::garage::Garage;
use test_support::meta::{FakeOnPrem, HashEncoding, StoreCallback};

const ACCOUNT: &str = "onprem";
const WAIT: Duration = Duration::from_secs(30);

type Setup = Stage<FakeOnPrem>;

/// The fake, the daemon, and the fake told where to post (the Coreapp's
/// `webhooks.url`, with the token in the query as the README says).
async fn setup(store: StoreUnderTest, store_callback_timeout: &str) -> Setup {
    let fake = FakeOnPrem::start().await;
    let accounts = accounts::onprem(&fake, store_callback_timeout);
    let s = Stage::start(fake, &store, &accounts);
    s.fake
        .set_webhook_url(&accounts::onprem_webhook_url(&s.daemon.base_url));
    s
}

/// Registers a file with the fake, lets the fake post its webhook, and
/// returns the bytes, the media id and the job id.
async fn announce(
    s: &Setup,
    kind: &str,
    mime: &str,
    message_id: &str,
    len: usize,
    auto_download: bool,
) -> (Vec<u8>, String, String) {
    let content = bytes(len, message_id.len() as u64 * 31 + len as u64);
    let media = s.fake.add_media(kind, content.clone(), mime, auto_download);
    let hook = s
        .fake
        .message_webhook(&media, message_id, now(), HashEncoding::Hex);
    let status = s.fake.deliver(&hook).await;
    assert_eq!(status, 200, "{}", s.daemon.logs());
    let job_id = format!("{ACCOUNT}:{media}");
    (content, media, job_id)
}

/// The blob and manifest of one message in the archive.
async fn assert_archived(s: &Setup, message_id: &str, media: &str, content: &[u8], ext: &str) {
    let manifest = s
        .archive
        .assert_archived(ACCOUNT, message_id, content, ext)
        .await;
    assert_eq!(manifest["provider"], "onprem");
    assert_eq!(manifest["media_id"], media);
    assert_eq!(manifest["provider_sha256"], sha256_hex(content));
    assert_eq!(manifest["verification"], "provider-sha256");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_s3_an_image_and_a_document_are_archived_through_the_store_and_its_callback() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let s = setup(StoreUnderTest::garage(&garage), "10m").await;
    let (image, image_media, image_job) =
        announce(&s, "image", "image/jpeg", "wamid.IMAGE1", 300_000, false).await;
    let (document, doc_media, doc_job) = announce(
        &s,
        "document",
        "application/pdf",
        "wamid.DOCUMENT1",
        120_000,
        false,
    )
    .await;
    for job_id in [&image_job, &doc_job] {
        let job = s.daemon.wait_for_job(job_id, "done", WAIT).await;
        // One attempt asked the store and parked; the callback woke the
        // second, which fetched.
        assert_eq!(job["attempts"], 2, "{job}");
    }
    for media in [&image_media, &doc_media] {
        assert_eq!(s.fake.store_requests(media), 1);
        assert_eq!(s.fake.media_gets(media), 1);
        assert!(
            s.fake
                .callback_deliveries()
                .iter()
                .any(|(id, status)| id == media && *status == 200),
            "{:?}",
            s.fake.callback_deliveries()
        );
    }
    assert_eq!(s.fake.logins(), 1, "the token is cached");

    for (content, ext, message_id, media) in [
        (&image, ".jpg", "wamid.IMAGE1", &image_media),
        (&document, ".pdf", "wamid.DOCUMENT1", &doc_media),
    ] {
        assert_archived(&s, message_id, media, content, ext).await;
    }

    // Neither the password nor any bearer token reached the logs.
    let logs = s.daemon.logs();
    assert!(!logs.contains(s.fake.password()), "password in the logs");
    for token in s.fake.issued_tokens() {
        assert!(!logs.contains(&token), "bearer token in the logs");
    }
    assert!(!logs.contains(WEBHOOK_TOKEN), "webhook token in the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auto_downloaded_file_is_fetched_without_asking_the_store() {
    let s = setup(StoreUnderTest::Fs, "10m").await;
    let (content, media, job_id) = announce(
        &s,
        "voice",
        "audio/ogg; codecs=opus",
        "wamid.VOICE1",
        40_000,
        true,
    )
    .await;
    let job = s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(s.fake.store_requests(&media), 0);
    assert_archived(&s, "wamid.VOICE1", &media, &content, ".ogg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_that_do_not_match_the_sha256_are_never_archived_and_the_job_dies_naming_it() {
    let s = setup(StoreUnderTest::Fs, "10m").await;
    let content = bytes(50_000, 7);
    let media = s.fake.add_media("image", content, "image/jpeg", false);
    s.fake.corrupt(&media);
    let hook = s
        .fake
        .message_webhook(&media, "wamid.BAD1", now(), HashEncoding::Hex);
    assert_eq!(s.fake.deliver(&hook).await, 200);
    let job = s
        .daemon
        .wait_for_job(&format!("{ACCOUNT}:{media}"), "dead", WAIT)
        .await;
    let reason = job["last_error"].as_str().unwrap();
    assert!(reason.contains("sha256 mismatch"), "{reason}");
    assert!(
        s.fake.media_gets(&media) >= 2,
        "retried before giving up: {job}"
    );
    assert!(s.archive.keys("blobs/").await.is_empty());
    assert!(s.archive.manifest(ACCOUNT, "wamid.BAD1").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_that_never_comes_or_comes_late_times_out_and_the_store_is_asked_again() {
    let s = setup(StoreUnderTest::Fs, "1s").await;

    // Never: the first store request is lost; after the timeout the store
    // is asked again, and that one calls back.
    s.fake.set_store_callbacks(vec![StoreCallback::Never]);
    let (content, media, job_id) =
        announce(&s, "image", "image/png", "wamid.NEVER1", 20_000, false).await;
    s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    assert_eq!(s.fake.store_requests(&media), 2);
    assert_archived(&s, "wamid.NEVER1", &media, &content, ".png").await;

    // Late: the first callback arrives after the timeout, the second in
    // time; the late one then finds the job done, and is still answered 200.
    s.fake
        .set_store_callbacks(vec![StoreCallback::After(Duration::from_secs(3))]);
    let (content, media, job_id) =
        announce(&s, "video", "video/mp4", "wamid.LATE1", 60_000, false).await;
    s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    assert_eq!(s.fake.store_requests(&media), 2);
    assert_archived(&s, "wamid.LATE1", &media, &content, ".mp4").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let late: Vec<_> = s
            .fake
            .callback_deliveries()
            .into_iter()
            .filter(|(id, _)| *id == media)
            .collect();
        if late.len() == 2 {
            assert!(late.iter().all(|(_, status)| *status == 200), "{late:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{late:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The late callback is recorded.
    s.daemon.wait_for_log(&media).await;
    s.daemon.wait_for_log("matched no waiting job").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_store_is_asked_once_more_then_the_job_dies_with_the_stores_reason() {
    let s = setup(StoreUnderTest::Fs, "10m").await;

    // Fails once, then works.
    s.fake
        .set_store_callbacks(vec![StoreCallback::Error(Duration::ZERO)]);
    let (content, media, job_id) =
        announce(&s, "sticker", "image/webp", "wamid.ONCE1", 10_000, false).await;
    s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    assert_eq!(s.fake.store_requests(&media), 2);
    assert_archived(&s, "wamid.ONCE1", &media, &content, ".webp").await;

    // Fails twice: permanent.
    s.fake.set_store_callbacks(vec![
        StoreCallback::Error(Duration::ZERO),
        StoreCallback::Error(Duration::ZERO),
    ]);
    let (_, media, job_id) =
        announce(&s, "audio", "audio/mpeg", "wamid.TWICE1", 10_000, false).await;
    let job = s.daemon.wait_for_job(&job_id, "dead", WAIT).await;
    let reason = job["last_error"].as_str().unwrap();
    assert!(
        reason.contains("Media not found in the datastore"),
        "{reason}"
    );
    assert_eq!(s.fake.store_requests(&media), 2);
    assert_eq!(s.fake.media_gets(&media), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_renewed_by_logging_in_again() {
    let s = setup(StoreUnderTest::Fs, "10m").await;
    let (_, _, job_id) = announce(&s, "image", "image/jpeg", "wamid.TOK1", 5_000, false).await;
    s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    assert_eq!(s.fake.logins(), 1);

    s.fake.expire_tokens();
    let (content, media, job_id) = announce(
        &s,
        "document",
        "application/pdf",
        "wamid.TOK2",
        5_000,
        false,
    )
    .await;
    let job = s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    assert_eq!(job["attempts"], 2, "the 401 cost no attempt: {job}");
    assert_eq!(s.fake.logins(), 2);
    assert_archived(&s, "wamid.TOK2", &media, &content, ".pdf").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_for_unknown_media_and_unauthenticated_webhooks() {
    let s = setup(StoreUnderTest::Fs, "10m").await;
    // A store callback nobody waits for: 200, nothing accepted, recorded.
    let callback =
        s.fake
            .store_callback_body("00000000-dead-beef-0000-000000000000", "image", false);
    let (status, answer) = s.daemon.webhook(ACCOUNT, &callback, WEBHOOK_TOKEN).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 0, "ignored": 1})
    );
    s.daemon
        .wait_for_log("00000000-dead-beef-0000-000000000000")
        .await;

    // No token, a wrong bearer token, a wrong query token: 401, nothing queued.
    let media = s
        .fake
        .add_media("image", vec![1, 2, 3], "image/jpeg", false);
    let hook = s
        .fake
        .message_webhook(&media, "wamid.X", now(), HashEncoding::Hex);
    let body = serde_json::to_vec(&hook).unwrap();
    let (status, _) = s.daemon.post_raw(ACCOUNT, body.clone(), &[]).await;
    assert_eq!(status, 401);
    let (status, _) = s.daemon.webhook(ACCOUNT, &hook, "wrong-token").await;
    assert_eq!(status, 401);
    let response = reqwest::Client::new()
        .post(s.daemon.url(&format!("/webhooks/{ACCOUNT}?token=wrong")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let (_, jobs) = s
        .daemon
        .admin_get(&format!("/api/v1/jobs?account={ACCOUNT}"))
        .await;
    assert_eq!(jobs["jobs"], json!([]));
    assert_eq!(s.fake.store_requests(&media), 0);

    // A malformed webhook names the field.
    let mut bad = hook.clone();
    bad["messages"][0]["image"]["sha256"] = json!("not-a-hash");
    let (status, answer) = s.daemon.webhook(ACCOUNT, &bad, WEBHOOK_TOKEN).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("messages[0].image.sha256"),
        "{answer}"
    );
    // On-Prem has no subscription check.
    let response = reqwest::get(s.daemon.url(&format!("/webhooks/{ACCOUNT}")))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
}
