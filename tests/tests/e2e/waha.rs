//! WAHA end to end: the real daemon, the fake WAHA, and the real archive
//! (a folder, or Garage over S3). Every daemon here runs with the SSRF
//! guard's address check on (`guarded_config`): the fake listens on
//! 127.0.0.1 and is reached only because it is the account's own
//! `api_url`.

use std::time::Duration;

use e2e::{Stage, StoreUnderTest, accounts, bytes, guarded_config, sha256_hex};
use serde_json::{Value, json};
use test_support::garage::Garage;
use test_support::waha::{DEFAULT_FILES_LIFETIME, Engine, FakeWaha, ME, MediaShape};

const ACCOUNT: &str = "waha";
const CHAT: &str = "11111111111@c.us";
const WAIT: Duration = Duration::from_secs(30);

type Setup = Stage<FakeWaha>;

/// A fake WAHA and a guarded daemon with account `waha` on it (plus
/// `extra` keys for that account).
async fn setup_with(store: StoreUnderTest, garage: Option<Garage>, extra: &str) -> Setup {
    let fake = FakeWaha::start().await;
    let accounts = accounts::waha(&fake) + extra;
    Stage::new(fake, &store, &guarded_config(&store, &accounts), garage)
}

async fn setup() -> Setup {
    setup_with(StoreUnderTest::Fs, None, "").await
}

/// POSTs `hook` with the headers WAHA sends (signed with its HMAC key).
async fn post(s: &Setup, hook: &Value) -> (u16, Value) {
    let raw = serde_json::to_vec(hook).unwrap();
    let headers = s.fake.webhook_headers(&raw);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    s.daemon.post_raw(ACCOUNT, raw, &headers).await
}

/// A message through `engine` whose `message` webhook has `media` as
/// `shape` says, posted and accepted; returns the bytes, the message id
/// and the job id.
async fn announce(
    s: &Setup,
    engine: Engine,
    mime: &str,
    file_name: Option<&str>,
    shape: MediaShape,
) -> (Vec<u8>, String, String) {
    let content = bytes(40_000 + mime.len() * 1000, mime.len() as u64);
    let id = s
        .fake
        .add_message(engine, CHAT, false, content.clone(), mime, file_name);
    let (status, answer) = post(s, &s.fake.webhook(&id, "message", shape)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 1, "duplicates": 0, "ignored": 0})
    );
    let job_id = format!("{ACCOUNT}:{id}");
    (content, id, job_id)
}

/// The archive of `message_id`: the bytes under their hash, its manifest
/// (returned) from WAHA.
async fn assert_archived(s: &Setup, message_id: &str, content: &[u8], ext: &str) -> Value {
    let manifest = s
        .archive
        .assert_archived(ACCOUNT, message_id, content, ext)
        .await;
    assert_eq!(manifest["provider"], "waha");
    assert_eq!(manifest["chat_id"], CHAT);
    manifest
}

async fn redownloads(s: &Setup, reason: &str) -> f64 {
    s.daemon
        .metric(&format!(
            r#"media_archiver_redownloads_total{{account="{ACCOUNT}",reason="{reason}"}}"#
        ))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn with_s3_a_webjs_image_and_a_noweb_document_are_archived_from_waha_on_a_private_address() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let s = setup_with(StoreUnderTest::garage(&garage), Some(garage), "").await;
    let (image, image_id, image_job) = announce(
        &s,
        Engine::Webjs,
        "image/jpeg",
        None,
        MediaShape::Downloaded,
    )
    .await;
    let (document, doc_id, doc_job) = announce(
        &s,
        Engine::Noweb,
        "application/pdf",
        Some("invoice.pdf"),
        MediaShape::Downloaded,
    )
    .await;
    for job_id in [&image_job, &doc_job] {
        let job = s.daemon.wait_for_job(job_id, "done", WAIT).await;
        assert_eq!(job["attempts"], 1, "{job}");
        assert_eq!(job["provider"], "waha");
    }
    let manifest = assert_archived(&s, &image_id, &image, ".jpg").await;
    assert_eq!(manifest["verification"], "computed-only", "{manifest}");
    assert_eq!(manifest["provider_sha256"], Value::Null);
    assert_eq!(manifest["sender"], CHAT);
    assert_eq!(manifest["caption"], "a image");
    let manifest = assert_archived(&s, &doc_id, &document, ".pdf").await;
    assert_eq!(manifest["verification"], "provider-sha256", "{manifest}");
    assert_eq!(manifest["provider_sha256"], sha256_hex(&document));
    assert_eq!(manifest["file_name"], "invoice.pdf");

    assert_eq!(s.fake.file_gets(), 2, "each file fetched once");
    assert_eq!(s.fake.message_calls(), 0, "nothing downloaded again");
    assert_eq!(redownloads(&s, "gone").await, 0.0);
    let logs = s.daemon.logs();
    assert!(!logs.contains(s.fake.api_key()), "API key in the logs");
    assert!(!logs.contains(s.fake.hmac_key()), "HMAC key in the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_noweb_document_whose_bytes_do_not_match_its_file_sha256_ends_dead() {
    let s = setup().await;
    let content = bytes(30_000, 9);
    let id = s.fake.add_message(
        Engine::Noweb,
        CHAT,
        false,
        content,
        "application/pdf",
        Some("a.pdf"),
    );
    s.fake.lie_about_sha256(&id);
    let (status, _) = post(&s, &s.fake.webhook(&id, "message", MediaShape::Downloaded)).await;
    assert_eq!(status, 200);
    let job = s
        .daemon
        .wait_for_job(&format!("{ACCOUNT}:{id}"), "dead", WAIT)
        .await;
    let error = job["last_error"].as_str().unwrap();
    assert!(error.contains("sha256 mismatch"), "{job}");
    assert!(s.archive.manifest(ACCOUNT, &id).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gows_image_whose_media_is_null_is_downloaded_through_the_message_endpoint() {
    let s = setup().await;
    let (content, id, job_id) =
        announce(&s, Engine::Gows, "image/jpeg", None, MediaShape::Null).await;
    let job = s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    assert_eq!(job["attempts"], 1, "{job}");
    let manifest = assert_archived(&s, &id, &content, ".jpg").await;
    assert_eq!(manifest["verification"], "computed-only");
    assert_eq!((s.fake.message_calls(), s.fake.downloads(&id)), (1, 1));
    assert_eq!(redownloads(&s, "not-downloaded").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_expired_before_the_fetch_is_downloaded_again() {
    let s = setup().await;
    // WAHA downloaded the file when the message arrived; it had expired by
    // the time the webhook reached the daemon.
    s.fake.set_files_lifetime(Duration::ZERO);
    let content = bytes(50_000, 3);
    let id = s.fake.add_message(
        Engine::Webjs,
        CHAT,
        false,
        content.clone(),
        "video/mp4",
        None,
    );
    let hook = s.fake.webhook(&id, "message", MediaShape::Downloaded);
    s.fake.set_files_lifetime(DEFAULT_FILES_LIFETIME);
    let expired = s.fake.media_url(&id).unwrap();
    assert_eq!(post(&s, &hook).await.0, 200);
    let job = s
        .daemon
        .wait_for_job(&format!("{ACCOUNT}:{id}"), "done", WAIT)
        .await;
    assert_eq!(job["attempts"], 1, "a fresh file within the attempt: {job}");
    assert_archived(&s, &id, &content, ".mp4").await;
    assert_eq!(s.fake.downloads(&id), 2);
    assert_ne!(s.fake.media_url(&id).unwrap(), expired);
    assert_eq!(redownloads(&s, "gone").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waha_restart_between_webhook_and_fetch_is_survived() {
    let s = setup().await;
    let content = bytes(20_000, 4);
    let id = s.fake.add_message(
        Engine::Noweb,
        CHAT,
        false,
        content.clone(),
        "audio/ogg",
        None,
    );
    let hook = s.fake.webhook(&id, "message", MediaShape::Downloaded);
    // WAHA restarts: its files folder is empty, and its session answers
    // 422 while it starts.
    s.fake.restart();
    s.fake.inject_message_faults(vec![422]);
    assert_eq!(post(&s, &hook).await.0, 200);
    let job = s
        .daemon
        .wait_for_job(&format!("{ACCOUNT}:{id}"), "done", WAIT)
        .await;
    assert_eq!(
        job["attempts"], 2,
        "the starting session was retried: {job}"
    );
    let manifest = assert_archived(&s, &id, &content, ".ogg").await;
    assert_eq!(manifest["verification"], "provider-sha256");
    assert_eq!(s.fake.downloads(&id), 2, "the webhook's, then one again");
    // Asked twice: refused once while the session started, then answered.
    assert_eq!(redownloads(&s, "gone").await, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_missing_hmac_is_401_and_makes_no_job() {
    let s = setup().await;
    let id = s.fake.add_message(
        Engine::Webjs,
        CHAT,
        false,
        bytes(1000, 5),
        "image/jpeg",
        None,
    );
    let hook = s.fake.webhook(&id, "message", MediaShape::Downloaded);
    // WAHA retries a refused delivery; every retry is refused too.
    let statuses = s
        .fake
        .deliver(&s.daemon.url("/webhooks/waha"), &hook, "not the hmac key")
        .await;
    assert_eq!(statuses, [401, 401, 401]);
    let unsigned = serde_json::to_vec(&hook).unwrap();
    let (status, answer) = s
        .daemon
        .post_raw(ACCOUNT, unsigned, &[("content-type", "application/json")])
        .await;
    assert_eq!(status, 401);
    assert!(
        answer["error"].as_str().unwrap().contains("X-Webhook-Hmac"),
        "{answer}"
    );
    let (_, jobs) = s
        .daemon
        .admin_get(&format!("/api/v1/jobs?account={ACCOUNT}"))
        .await;
    assert_eq!(jobs["jobs"], json!([]));
    assert_eq!(s.fake.file_gets(), 0);

    // Signed with the right key, the same event is accepted.
    let statuses = s
        .fake
        .deliver(&s.daemon.url("/webhooks/waha"), &hook, s.fake.hmac_key())
        .await;
    assert_eq!(statuses, [200]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_event_is_a_duplicate_and_a_text_is_ignored() {
    let s = setup().await;
    let (content, id, job_id) = announce(
        &s,
        Engine::Webjs,
        "image/jpeg",
        None,
        MediaShape::Downloaded,
    )
    .await;
    s.daemon.wait_for_job(&job_id, "done", WAIT).await;
    // WAHA's retry of the same event, and `message.any` of the same message.
    let again = s.fake.webhook(&id, "message", MediaShape::Downloaded);
    let any = s.fake.webhook(&id, "message.any", MediaShape::Downloaded);
    for hook in [again, any] {
        let (status, answer) = post(&s, &hook).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({"accepted": 0, "duplicates": 1, "ignored": 0})
        );
    }
    let mut text = s.fake.webhook(&id, "message", MediaShape::Null);
    text["payload"]["id"] = json!(format!("false_{CHAT}_TEXT0001"));
    text["payload"]["hasMedia"] = json!(false);
    let (_, answer) = post(&s, &text).await;
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 0, "ignored": 1})
    );

    let (_, jobs) = s
        .daemon
        .admin_get(&format!("/api/v1/jobs?account={ACCOUNT}"))
        .await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(s.fake.file_gets(), 1, "archived once");
    assert_archived(&s, &id, &content, ".jpg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_own_message_is_archived_as_sent_by_the_session() {
    let s = setup().await;
    let content = bytes(10_000, 6);
    let id = s.fake.add_message(
        Engine::Webjs,
        CHAT,
        true,
        content.clone(),
        "image/jpeg",
        None,
    );
    let (status, _) = post(
        &s,
        &s.fake.webhook(&id, "message.any", MediaShape::Downloaded),
    )
    .await;
    assert_eq!(status, 200);
    s.daemon
        .wait_for_job(&format!("{ACCOUNT}:{id}"), "done", WAIT)
        .await;
    let manifest = assert_archived(&s, &id, &content, ".jpg").await;
    assert_eq!(manifest["sender"], ME);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_gateway_s_own_host_is_exempt_from_the_address_guard() {
    // The account also lists `localhost`: allowed by name, but it resolves
    // to a loopback address, and only `api_url`'s host (127.0.0.1) is exempt.
    let s = setup_with(
        StoreUnderTest::Fs,
        None,
        "allowed_download_hosts = [\"localhost\"]\n",
    )
    .await;
    let id = s.fake.add_message(
        Engine::Webjs,
        CHAT,
        false,
        bytes(1000, 7),
        "image/jpeg",
        None,
    );
    let mut hook = s.fake.webhook(&id, "message", MediaShape::Downloaded);
    let url = hook["payload"]["media"]["url"].as_str().unwrap();
    let by_name = url.replace("127.0.0.1", "localhost");
    hook["payload"]["media"]["url"] = json!(by_name);
    assert_eq!(post(&s, &hook).await.0, 200);
    let job = s
        .daemon
        .wait_for_job(&format!("{ACCOUNT}:{id}"), "dead", WAIT)
        .await;
    let error = job["last_error"].as_str().unwrap();
    assert!(
        error.contains("localhost") && error.contains("loopback"),
        "{job}"
    );
    assert_eq!(s.fake.file_gets(), 0, "never connected");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_backfilled_without_its_webhook_is_archived_and_the_late_webhook_is_a_duplicate()
{
    let s = setup().await;
    let content = bytes(60_000, 8);
    let id = s.fake.add_message(
        Engine::Noweb,
        CHAT,
        false,
        content.clone(),
        "image/jpeg",
        None,
    );
    let stdout = e2e::cli::backfill(
        &s.daemon.workdir,
        ACCOUNT,
        &[json!({"chatId": CHAT, "messageId": id})],
    );
    assert!(stdout.contains("new:        1"), "{stdout}");
    // A message WAHA does not know, and a line without its message id.
    let bad = [
        json!({"chatId": CHAT, "messageId": format!("false_{CHAT}_3EB0NOTKNOWN")}),
        json!({"chatId": CHAT}),
    ];
    let lines: Vec<String> = bad.iter().map(Value::to_string).collect();
    std::fs::write(s.daemon.workdir.join("bad.jsonl"), lines.join("\n")).unwrap();
    let run = e2e::cli::backfill_file(&s.daemon.workdir, ACCOUNT, "bad.jsonl");
    let (out, err) = e2e::cli::output_text(&run);
    assert_eq!(run.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("rejected:   2") && out.contains("404") && out.contains("messageId"),
        "{out}"
    );
    s.daemon
        .wait_for_job(&format!("{ACCOUNT}:{id}"), "done", WAIT)
        .await;
    let manifest = assert_archived(&s, &id, &content, ".jpg").await;
    assert_eq!(manifest["verification"], "provider-sha256");
    assert_eq!(
        s.fake.downloads(&id),
        1,
        "downloaded by the backfill's call"
    );

    let (status, answer) = post(&s, &s.fake.webhook(&id, "message", MediaShape::Null)).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 1, "ignored": 0}),
        "the webhook that arrives after all is the backfilled job"
    );
}
