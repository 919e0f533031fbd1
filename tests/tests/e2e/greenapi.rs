//! Green API end to end: the real daemon, the fake Green API, and the real
//! archive (a folder, or Garage over S3).

use std::time::Duration;

use e2e::accounts::GREEN_WEBHOOK_TOKEN;
use e2e::{Stage, StoreUnderTest, accounts, blob_key, bytes, now, sha256_hex};
use serde_json::{Value, json};
use test_support::garage::Garage;
use test_support::green_api::{FakeGreenApi, FileFault};

const CHAT: &str = "79001234568@c.us";
const WAIT: Duration = Duration::from_secs(30);

type Setup = Stage<FakeGreenApi>;

async fn setup(store: StoreUnderTest) -> Setup {
    let fake = FakeGreenApi::start().await;
    let accounts = accounts::green_api(&fake);
    Stage::start(fake, &store, &accounts)
}

/// The `incomingMessageReceived` webhook of file `id` at `url`, sent now.
fn incoming(s: &Setup, type_message: &str, id: &str, url: &str) -> Value {
    s.fake.file_webhook(
        "incomingMessageReceived",
        type_message,
        CHAT,
        id,
        url,
        now(),
    )
}

/// Posts `hook` with the account's webhook token.
async fn post(s: &Setup, hook: &Value) -> (u16, Value) {
    s.daemon.webhook("green", hook, GREEN_WEBHOOK_TOKEN).await
}

/// Registers a file with the fake, posts its webhook, and returns the bytes
/// and the webhook's answer.
async fn announce(
    s: &Setup,
    id: &str,
    type_webhook: &str,
    type_message: &str,
    mime: &str,
    name: &str,
    len: usize,
) -> (Vec<u8>, Value) {
    let content = bytes(len, id.len() as u64 + len as u64);
    let url = s.fake.add_file(CHAT, id, content.clone(), mime, name);
    let hook = s
        .fake
        .file_webhook(type_webhook, type_message, CHAT, id, &url, now());
    let (status, answer) = post(s, &hook).await;
    assert_eq!(status, 200, "{answer}");
    (content, answer)
}

/// Checks the archived blob and manifest of one message.
async fn assert_archived(s: &Setup, id: &str, content: &[u8], ext: &str, mime: &str) -> Value {
    let manifest = s.archive.assert_archived("green", id, content, ext).await;
    assert_eq!(
        manifest["verification"], "computed-only",
        "Green API vouches no hash"
    );
    assert_eq!(manifest["provider"], "greenapi");
    assert_eq!(manifest["chat_id"], CHAT);
    assert_eq!(manifest["mime_type"], mime);
    manifest
}

#[tokio::test(flavor = "multi_thread")]
async fn incoming_image_document_sticker_and_outgoing_video_are_archived_verbatim() {
    let s = setup(StoreUnderTest::Fs).await;
    let cases = [
        (
            "IMG00000000000000000000000000001",
            "incomingMessageReceived",
            "imageMessage",
            "image/jpeg",
            "a.jpg",
            ".jpg",
        ),
        (
            "DOC00000000000000000000000000001",
            "incomingMessageReceived",
            "documentMessage",
            "application/pdf",
            "report.pdf",
            ".pdf",
        ),
        (
            "STK00000000000000000000000000001",
            "incomingMessageReceived",
            "stickerMessage",
            "image/webp",
            "s.webp",
            ".webp",
        ),
        (
            "VID00000000000000000000000000001",
            "outgoingMessageReceived",
            "videoMessage",
            "video/mp4",
            "v.mp4",
            ".mp4",
        ),
        (
            "AUD00000000000000000000000000001",
            "outgoingAPIMessageReceived",
            "audioMessage",
            "audio/ogg; codecs=opus",
            "v.ogg",
            ".ogg",
        ),
    ];
    let mut sent = Vec::new();
    for (id, type_webhook, type_message, mime, name, _) in cases {
        let (content, answer) =
            announce(&s, id, type_webhook, type_message, mime, name, 150_000).await;
        assert_eq!(
            answer,
            json!({"accepted": 1, "duplicates": 0, "ignored": 0})
        );
        sent.push(content);
    }
    for ((id, .., mime, name, ext), content) in cases.iter().zip(&sent) {
        s.daemon
            .wait_for_job(&format!("green:{id}"), "done", WAIT)
            .await;
        let manifest = assert_archived(&s, id, content, ext, mime).await;
        assert_eq!(manifest["file_name"], *name);
    }
    assert_eq!(s.archive.keys("blobs/").await.len(), cases.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_webhook_is_a_duplicate_and_stores_one_blob() {
    let s = setup(StoreUnderTest::Fs).await;
    let id = "DUP00000000000000000000000000001";
    let content = bytes(10_000, 7);
    let url = s
        .fake
        .add_file(CHAT, id, content.clone(), "image/png", "p.png");
    let hook = incoming(&s, "imageMessage", id, &url);
    let (_, first) = post(&s, &hook).await;
    let (_, second) = post(&s, &hook).await;
    assert_eq!(first["accepted"], 1);
    assert_eq!(
        second,
        json!({"accepted": 0, "duplicates": 1, "ignored": 0})
    );
    s.daemon
        .wait_for_job(&format!("green:{id}"), "done", WAIT)
        .await;
    let (_, third) = post(&s, &hook).await;
    assert_eq!(third["duplicates"], 1, "a done job is not archived again");
    assert_eq!(s.archive.keys("blobs/").await.len(), 1);
    assert_eq!(s.fake.file_hits(&url), 1, "the file was downloaded once");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_link_is_replaced_through_download_file() {
    let s = setup(StoreUnderTest::Fs).await;
    let id = "EXP00000000000000000000000000001";
    let content = bytes(50_000, 3);
    let url = s
        .fake
        .add_file(CHAT, id, content.clone(), "image/jpeg", "e.jpg");
    s.fake.inject_file_faults(&url, vec![FileFault::Gone]);
    let hook = incoming(&s, "imageMessage", id, &url);
    assert_eq!(post(&s, &hook).await.0, 200);
    let job = s
        .daemon
        .wait_for_job(&format!("green:{id}"), "done", WAIT)
        .await;
    assert_eq!(
        job["attempts"], 1,
        "the fresh link is fetched in the same attempt"
    );
    assert_eq!(s.fake.download_file_calls(), 1);
    assert_archived(&s, id, &content, ".jpg", "image/jpeg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_without_download_url_uses_download_file() {
    let s = setup(StoreUnderTest::Fs).await;
    let id = "NOURL000000000000000000000000001";
    let content = bytes(20_000, 4);
    let url = s
        .fake
        .add_file(CHAT, id, content.clone(), "application/pdf", "n.pdf");
    let mut hook = incoming(&s, "documentMessage", id, &url);
    hook["messageData"]["fileMessageData"]
        .as_object_mut()
        .unwrap()
        .remove("downloadUrl");
    assert_eq!(post(&s, &hook).await.0, 200);
    s.daemon
        .wait_for_job(&format!("green:{id}"), "done", WAIT)
        .await;
    assert_eq!(s.fake.download_file_calls(), 1);
    assert_archived(&s, id, &content, ".pdf", "application/pdf").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn swe002_is_dead_at_once_with_a_reason() {
    let s = setup(StoreUnderTest::Fs).await;
    let id = "BIG00000000000000000000000000001";
    let url = s
        .fake
        .add_file(CHAT, id, vec![1, 2, 3], "video/mp4", "big.mp4");
    let mut hook = incoming(&s, "videoMessage", id, &url);
    hook["messageData"]["fileMessageData"]["downloadUrl"] = json!("{{SWE002}}");
    assert_eq!(post(&s, &hook).await.0, 200);
    let job = s
        .daemon
        .wait_for_job(&format!("green:{id}"), "dead", WAIT)
        .await;
    assert_eq!(job["attempts"], 1);
    assert!(
        job["last_error"].as_str().unwrap().contains("SWE002"),
        "{job}"
    );
    assert_eq!(s.fake.file_hits(&url), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_faults_are_retried_until_the_file_is_archived() {
    let s = setup(StoreUnderTest::Fs).await;
    let id = "FLT00000000000000000000000000001";
    let content = bytes(300_000, 5);
    let url = s
        .fake
        .add_file(CHAT, id, content.clone(), "image/jpeg", "f.jpg");
    s.fake.inject_file_faults(
        &url,
        vec![
            FileFault::Status(503),
            FileFault::TooManyRequests {
                retry_after_secs: 1,
            },
            FileFault::Truncate(1000),
            FileFault::Stall(Duration::from_secs(5)),
            FileFault::Status(500),
        ],
    );
    let hook = incoming(&s, "imageMessage", id, &url);
    assert_eq!(post(&s, &hook).await.0, 200);
    let job = s
        .daemon
        .wait_for_job(&format!("green:{id}"), "done", Duration::from_secs(60))
        .await;
    assert_eq!(job["attempts"], 6, "five faults, then success: {job}");
    assert_eq!(s.fake.file_hits(&url), 6);
    assert_archived(&s, id, &content, ".jpg", "image/jpeg").await;
    assert_eq!(
        s.archive.keys("blobs/").await.len(),
        1,
        "no partial file was archived"
    );
    assert!(
        e2e::files_under(&s.daemon.workdir.join("data/spool")).is_empty(),
        "spool files are cleaned up"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_4xx_answers_and_the_daemon_stays_healthy() {
    let s = setup(StoreUnderTest::Fs).await;
    let d = &s.daemon;
    let auth = format!("Bearer {GREEN_WEBHOOK_TOKEN}");
    let with_auth = [("authorization", auth.as_str())];

    let (status, body) = d.post_raw("green", b"{not json".to_vec(), &with_auth).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );

    let (status, body) = d.post_raw("green", br#"{"typeWebhook":"incomingMessageReceived","messageData":{"typeMessage":"imageMessage"}}"#.to_vec(), &with_auth).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("idMessage"),
        "names the field: {body}"
    );

    let (status, body) = d
        .post_raw(
            "green",
            b"{}".to_vec(),
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = d.post_raw("green", b"{}".to_vec(), &[]).await;
    assert_eq!(status, 401);

    let (status, body) = d.post_raw("green", vec![b' '; 100_000], &with_auth).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_body_bytes"));

    let (status, body) = d.post_raw("nobody", b"{}".to_vec(), &with_auth).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("unknown account"));

    let client = reqwest::Client::new();
    let status = client
        .get(d.url("/webhooks/green"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 405);
    let status = client.get(d.url("/healthz")).send().await.unwrap().status();
    assert_eq!(status.as_u16(), 200);
    let status = client.get(d.url("/readyz")).send().await.unwrap().status();
    assert_eq!(status.as_u16(), 200);

    // Statuses and texts are ignored, not errors.
    let (status, body) = d
        .webhook(
            "green",
            &json!({"typeWebhook": "outgoingMessageStatus", "idMessage": "X", "status": "read"}),
            GREEN_WEBHOOK_TOKEN,
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 0, "duplicates": 0, "ignored": 1}))
    );

    // And the daemon still archives.
    let (content, _) = announce(
        &s,
        "OK000000000000000000000000000001",
        "incomingMessageReceived",
        "imageMessage",
        "image/jpeg",
        "ok.jpg",
        1000,
    )
    .await;
    d.wait_for_job("green:OK000000000000000000000000000001", "done", WAIT)
        .await;
    assert_archived(
        &s,
        "OK000000000000000000000000000001",
        &content,
        ".jpg",
        "image/jpeg",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_token_never_reaches_the_logs() {
    let s = setup(StoreUnderTest::Fs).await;
    let id = "TOK00000000000000000000000000001";
    let url = s
        .fake
        .add_file(CHAT, id, bytes(1000, 9), "image/jpeg", "t.jpg");
    s.fake.inject_file_faults(&url, vec![FileFault::Gone]);
    s.fake.inject_api_faults(vec![FileFault::Status(500)]);
    let hook = incoming(&s, "imageMessage", id, &url);
    assert_eq!(post(&s, &hook).await.0, 200);
    s.daemon
        .wait_for_job(&format!("green:{id}"), "done", WAIT)
        .await;
    let logs = s.daemon.logs();
    assert!(
        logs.contains("downloadFile"),
        "the failed API call was logged: {logs}"
    );
    assert!(
        !logs.contains(s.fake.api_token()),
        "API token leaked into the logs"
    );
    assert!(
        !logs.contains(GREEN_WEBHOOK_TOKEN),
        "webhook token leaked into the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_zero() {
    let mut s = setup(StoreUnderTest::Fs).await;
    let status = s.daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(s.daemon.logs().contains("stopped"));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_s3_an_image_and_a_40_mib_video_are_archived_intact_in_garage() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let s = setup(StoreUnderTest::garage(&garage)).await;
    let (image, ..) = announce(
        &s,
        "S3IMG000000000000000000000000001",
        "incomingMessageReceived",
        "imageMessage",
        "image/jpeg",
        "i.jpg",
        200_000,
    )
    .await;
    let (video, ..) = announce(
        &s,
        "S3VID000000000000000000000000001",
        "incomingMessageReceived",
        "videoMessage",
        "video/mp4",
        "v.mp4",
        40 * 1024 * 1024,
    )
    .await;
    s.daemon
        .wait_for_job("green:S3IMG000000000000000000000000001", "done", WAIT)
        .await;
    s.daemon
        .wait_for_job(
            "green:S3VID000000000000000000000000001",
            "done",
            Duration::from_secs(120),
        )
        .await;

    for (content, ext, id) in [
        (&image, ".jpg", "S3IMG000000000000000000000000001"),
        (&video, ".mp4", "S3VID000000000000000000000000001"),
    ] {
        let key = blob_key(content, ext);
        let metadata = s.archive.user_metadata(&key).await;
        assert_eq!(
            metadata.get("sha256").map(String::as_str),
            Some(sha256_hex(content).as_str())
        );
        let manifest = s.archive.assert_archived("green", id, content, ext).await;
        assert_eq!(manifest["verification"], "computed-only");
    }
}
