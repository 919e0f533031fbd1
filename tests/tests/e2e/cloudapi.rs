//! Meta WhatsApp Cloud API end to end: the real daemon, the fake Graph API
//! and lookaside host, and the real archive (a folder, or Garage over S3).

use std::time::Duration;

use e2e::accounts::CLOUD_VERIFY_TOKEN as VERIFY_TOKEN;
use e2e::{Stage, StoreUnderTest, accounts, bytes, now, sha256_hex};
use serde_json::{Value, json};
use test_support::garage::Garage;
use test_support::meta::{FakeCloudApi, GraphFault, HashEncoding};

const ACCOUNT: &str = "cloud";
const WAIT: Duration = Duration::from_secs(30);

type Setup = Stage<FakeCloudApi>;

async fn setup(store: StoreUnderTest) -> Setup {
    let fake = FakeCloudApi::start().await;
    let accounts = accounts::cloud_api(&fake);
    Stage::start(fake, &store, &accounts)
}

/// POSTs `body` signed as Meta signs it.
async fn post_signed(s: &Setup, body: &Value) -> (u16, Value) {
    let raw = serde_json::to_vec(body).unwrap();
    let signature = s.fake.sign(&raw);
    s.daemon
        .post_raw(
            ACCOUNT,
            raw,
            &[
                ("content-type", "application/json"),
                ("x-hub-signature-256", &signature),
            ],
        )
        .await
}

/// Registers a file with the fake and posts its signed webhook; returns the
/// bytes, the media id and the job id.
async fn announce(
    s: &Setup,
    kind: &str,
    mime: &str,
    message_id: &str,
    len: usize,
    hash: HashEncoding,
) -> (Vec<u8>, String, String) {
    let content = bytes(len, message_id.len() as u64 * 17 + len as u64);
    let media = s.fake.add_media(kind, content.clone(), mime);
    let hook = s.fake.message_webhook(&media, message_id, now(), hash);
    let (status, answer) = post_signed(s, &hook).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 1, "duplicates": 0, "ignored": 0})
    );
    (content, media.clone(), format!("{ACCOUNT}:{media}"))
}

/// The blob and manifest of one message in the archive; the manifest.
async fn assert_archived(
    s: &Setup,
    message_id: &str,
    media: &str,
    content: &[u8],
    ext: &str,
) -> Value {
    let manifest = s
        .archive
        .assert_archived(ACCOUNT, message_id, content, ext)
        .await;
    assert_eq!(manifest["provider"], "cloudapi");
    assert_eq!(manifest["media_id"], media);
    assert_eq!(manifest["provider_sha256"], sha256_hex(content));
    assert_eq!(manifest["verification"], "provider-sha256");
    manifest
}

#[tokio::test(flavor = "multi_thread")]
async fn with_s3_an_image_with_a_base64_sha256_and_a_document_with_a_hex_sha256_are_archived() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let s = setup(StoreUnderTest::garage(&garage)).await;
    let image_id = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQUIMAGE1AA==";
    let doc_id = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQURPQ1VNRU5UMQA=";
    let (image, image_media, image_job) = announce(
        &s,
        "image",
        "image/jpeg",
        image_id,
        250_000,
        HashEncoding::Base64,
    )
    .await;
    let (document, doc_media, doc_job) = announce(
        &s,
        "document",
        "application/pdf",
        doc_id,
        90_000,
        HashEncoding::Hex,
    )
    .await;
    for job_id in [&image_job, &doc_job] {
        let job = s.daemon.wait_for_job(job_id, "done", WAIT).await;
        assert_eq!(job["attempts"], 1, "{job}");
    }
    for media in [&image_media, &doc_media] {
        assert_eq!(s.fake.media_info_calls(media), 1);
        assert_eq!(s.fake.downloads(media), 1);
    }

    for (content, ext, message_id, media) in [
        (&image, ".jpg", image_id, &image_media),
        (&document, ".pdf", doc_id, &doc_media),
    ] {
        let manifest = assert_archived(&s, message_id, media, content, ext).await;
        assert_eq!(manifest["sender"], test_support::meta::CLOUD_SENDER);
    }
    let logs = s.daemon.logs();
    assert!(
        !logs.contains(s.fake.access_token()),
        "access token in the logs"
    );
    assert!(
        !logs.contains(s.fake.app_secret()),
        "app secret in the logs"
    );
}

/// A video of several parts, its hash vouched for in the webhook, streams
/// through to Garage (no spool file) and is archived whole.
#[tokio::test(flavor = "multi_thread")]
async fn with_s3_a_video_of_several_parts_streams_through_and_is_archived_whole() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let s = setup(StoreUnderTest::garage(&garage)).await;
    let message_id = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQVNUUkVBTTEA";
    let (video, media, job_id) = announce(
        &s,
        "video",
        "video/mp4",
        message_id,
        21 * 1024 * 1024 + 5,
        HashEncoding::Base64,
    )
    .await;
    let job = s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(s.fake.downloads(&media), 1);
    assert_archived(&s, message_id, &media, &video, ".mp4").await;
    // Counted right after the job is marked done.
    let mut streamed = 0.0;
    for _ in 0..100 {
        streamed = s
            .daemon
            .metric(r#"media_archiver_streamed_total{account="cloud"}"#)
            .await;
        if streamed > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = s.daemon.metrics().await;
    assert_eq!(streamed, 1.0, "streamed through, not staged:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_signature_is_401_and_nothing_is_enqueued() {
    let s = setup(StoreUnderTest::Fs).await;
    let media = s.fake.add_media("image", bytes(1000, 1), "image/jpeg");
    let hook = s
        .fake
        .message_webhook(&media, "wamid.SIG1", now(), HashEncoding::Base64);
    let raw = serde_json::to_vec(&hook).unwrap();
    let good = s.fake.sign(&raw);
    let other_secret = test_support::meta::sign("not the app secret", &raw);
    let mut tampered = raw.clone();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'1' { b'2' } else { b'1' };
    for (body, signature) in [
        (raw.clone(), None),
        (raw.clone(), Some(other_secret.as_str())),
        (raw.clone(), Some("sha256=00")),
        (tampered, Some(good.as_str())),
    ] {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(sig) = signature {
            headers.push(("x-hub-signature-256", sig));
        }
        let (status, answer) = s.daemon.post_raw(ACCOUNT, body, &headers).await;
        assert_eq!(status, 401, "{signature:?}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("X-Hub-Signature-256")
        );
    }
    let (_, jobs) = s
        .daemon
        .admin_get(&format!("/api/v1/jobs?account={ACCOUNT}"))
        .await;
    assert_eq!(jobs["jobs"], json!([]));
    assert_eq!(s.fake.media_info_calls(&media), 0);

    // The same body correctly signed is accepted.
    let (status, _) = s
        .daemon
        .post_raw(
            ACCOUNT,
            raw,
            &[
                ("content-type", "application/json"),
                ("x-hub-signature-256", &good),
            ],
        )
        .await;
    assert_eq!(status, 200);
    s.daemon
        .wait_for_job(&format!("{ACCOUNT}:{media}"), "done", WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subscription_check_echoes_the_challenge_or_answers_403() {
    let s = setup(StoreUnderTest::Fs).await;
    let http = reqwest::Client::new();
    let check = |query: String| {
        let http = http.clone();
        let url = s.daemon.url(&format!("/webhooks/{ACCOUNT}?{query}"));
        async move { http.get(url).send().await.unwrap() }
    };
    let ok = check(format!(
        "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"
    ))
    .await;
    assert_eq!(ok.status().as_u16(), 200);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(ok.text().await.unwrap(), "1158201444");

    for query in [
        "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=wrong".to_owned(),
        "hub.mode=subscribe&hub.challenge=1158201444".to_owned(),
        format!("hub.mode=unsubscribe&hub.challenge=1&hub.verify_token={VERIFY_TOKEN}"),
    ] {
        let refused = check(query.clone()).await;
        assert_eq!(refused.status().as_u16(), 403, "{query}");
        let body: Value = refused.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(!error.is_empty() && !error.contains(VERIFY_TOKEN), "{body}");
    }
    let unknown = http
        .get(s.daemon.url("/webhooks/nobody?hub.mode=subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    assert!(!s.daemon.logs().contains(VERIFY_TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_that_expired_before_the_download_is_replaced_by_a_fresh_one() {
    let s = setup(StoreUnderTest::Fs).await;
    s.fake.expire_next_links(1);
    let (content, media, job_id) = announce(
        &s,
        "video",
        "video/mp4",
        "wamid.EXPIRED1",
        80_000,
        HashEncoding::Base64,
    )
    .await;
    let job = s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    assert_eq!(job["attempts"], 1, "re-resolved within the attempt: {job}");
    assert_eq!(
        s.fake.media_info_calls(&media),
        2,
        "a fresh URL was asked for"
    );
    assert_eq!(
        s.fake.downloads(&media),
        2,
        "the expired one, then the fresh one"
    );
    assert_archived(&s, "wamid.EXPIRED1", &media, &content, ".mp4").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn statuses_and_texts_are_ignored_and_answered_200() {
    let s = setup(StoreUnderTest::Fs).await;
    let hook = s.fake.text_and_status_webhook(now());
    let (status, answer) = post_signed(&s, &hook).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 0, "ignored": 2})
    );
    // A duplicate delivery of a media webhook is one job.
    let media = s.fake.add_media("sticker", bytes(3000, 9), "image/webp");
    let hook = s
        .fake
        .message_webhook(&media, "wamid.DUP1", now(), HashEncoding::Hex);
    assert_eq!(post_signed(&s, &hook).await.0, 200);
    let (status, answer) = post_signed(&s, &hook).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 1, "ignored": 0})
    );
    // A malformed media message names the field.
    let mut bad = hook.clone();
    bad["entry"][0]["changes"][0]["value"]["messages"][0]["sticker"]["id"] = Value::Null;
    let (status, answer) = post_signed(&s, &bad).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("entry[0].changes[0].value.messages[0].sticker.id"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_that_do_not_match_the_sha256_are_never_archived_and_the_job_dies_naming_it() {
    let s = setup(StoreUnderTest::Fs).await;
    let media = s.fake.add_media("image", bytes(20_000, 3), "image/png");
    s.fake.corrupt(&media);
    let hook = s
        .fake
        .message_webhook(&media, "wamid.BAD1", now(), HashEncoding::Base64);
    assert_eq!(post_signed(&s, &hook).await.0, 200);
    let job = s
        .daemon
        .wait_for_job(&format!("{ACCOUNT}:{media}"), "dead", WAIT)
        .await;
    let reason = job["last_error"].as_str().unwrap();
    assert!(reason.contains("sha256 mismatch"), "{reason}");
    assert!(
        job["attempts"].as_u64().unwrap() >= 2,
        "retried first: {job}"
    );
    assert!(s.archive.keys("blobs/").await.is_empty());
    assert!(s.archive.manifest(ACCOUNT, "wamid.BAD1").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_access_token_is_retried_slowly_and_the_job_says_why() {
    let s = setup(StoreUnderTest::Fs).await;
    s.fake.inject_graph_faults(vec![GraphFault::Status(401)]);
    let media = s.fake.add_media("audio", bytes(2000, 5), "audio/ogg");
    let hook = s
        .fake
        .message_webhook(&media, "wamid.AUTH1", now(), HashEncoding::Hex);
    assert_eq!(post_signed(&s, &hook).await.0, 200);
    let job_id = format!("{ACCOUNT}:{media}");
    let started = std::time::Instant::now();
    let job = loop {
        let (_, job) = s.daemon.job(&job_id).await;
        if job["state"] == "pending" && !job["last_error"].is_null() {
            break job;
        }
        assert!(started.elapsed() < WAIT, "{job}\n{}", s.daemon.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = job["last_error"].as_str().unwrap();
    assert!(error.contains("access_token"), "{error}");
    let next: i64 = unix_seconds_of(job["next_attempt_at"].as_str().unwrap());
    assert!(
        next - now() >= 4 * 60,
        "retried in minutes, not seconds: {job}"
    );
    assert!(!s.daemon.logs().contains(s.fake.access_token()));
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-11-22T01:02:03Z`).
fn unix_seconds_of(text: &str) -> i64 {
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<i64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]
}
