use super::*;
use crate::testing::{
    AuthenticateBoth as _, SHA_B64, SHA_HEX, a_minute_ago, api, assert_reported, parse, parse_bytes,
};
use archiver_core::Classify as _;
use serde_json::json;
use test_support::waha::{Engine, FakeWaha, MediaShape};

const HMAC_KEY: &str = "waha-hmac-key-0123456789";
const API_KEY: &str = "321c0ffee0ddba11";
const CHAT: &str = "11111111111@c.us";
const ME: &str = "22222222222@c.us";

fn config(extra: &str) -> WahaConfig {
    toml::from_str(&format!(
        r#"
        name = "waha"
        api_url = "http://waha.internal:3000"
        api_key = "{API_KEY}"
        webhook_hmac_key = "{HMAC_KEY}"
        {extra}
        "#
    ))
    .unwrap()
}

fn adapter() -> Waha {
    Waha::new(&config(""), api()).unwrap()
}

fn message_id(from_me: bool) -> String {
    format!("{from_me}_{CHAT}_3EB0C767D26A1D8A3F1B")
}

/// A WEBJS `message` webhook for an image, in the documented envelope.
fn webjs_image() -> Value {
    json!({
        "id": "evt_01jdy2n3b5p8d7ztq8m3c1h6wq",
        "timestamp": a_minute_ago() * 1000,
        "event": "message",
        "session": "default",
        "metadata": {},
        "me": {"id": ME, "pushName": "Shop"},
        "payload": {
            "id": message_id(false),
            "timestamp": a_minute_ago(),
            "from": CHAT,
            "fromMe": false,
            "source": "app",
            "to": ME,
            "body": "a photo",
            "hasMedia": true,
            "media": {
                "url": "http://waha.internal:3000/api/files/default/3EB0C767D26A1D8A3F1B.jpeg",
                "mimetype": "image/jpeg",
                "filename": null,
                "error": null
            },
            "ack": 1,
            "_data": {"id": {"fromMe": false, "remote": CHAT}, "type": "image"}
        },
        "engine": "WEBJS",
        "environment": {"version": "2026.7.1", "engine": "WEBJS", "tier": "CORE"}
    })
}

/// A NOWEB `message.any` webhook for a document whose raw Baileys message
/// carries `fileSha256`.
fn noweb_document(file_sha256: Value) -> Value {
    let mut hook = webjs_image();
    hook["event"] = json!("message.any");
    hook["engine"] = json!("NOWEB");
    hook["environment"]["engine"] = json!("NOWEB");
    hook["payload"]["media"] = json!({
        "url": "http://waha.internal:3000/api/files/default/false_11111111111@c.us_3EB0.pdf",
        "mimetype": "application/pdf",
        "filename": "invoice.pdf",
    });
    hook["payload"]["_data"] = json!({
        "key": {"remoteJid": CHAT, "fromMe": false, "id": "3EB0C767D26A1D8A3F1B"},
        "message": {"documentMessage": {
            "url": "https://mmg.whatsapp.net/v/t62.7119-24/1_n.enc",
            "mimetype": "application/pdf",
            "fileSha256": file_sha256,
            "fileLength": "3",
            "fileName": "invoice.pdf",
        }},
        "messageTimestamp": a_minute_ago(),
    });
    hook
}

/// A GOWS webhook whose image WAHA did not download (`media: null`).
fn gows_image_without_media() -> Value {
    let mut hook = webjs_image();
    hook["engine"] = json!("GOWS");
    hook["payload"]["media"] = Value::Null;
    hook["payload"]["_data"] = json!({"Info": {"Type": "media"}, "Message": {"imageMessage": {}}});
    hook
}

fn signed(signature: Option<&str>) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if let Some(s) = signature {
        h.insert("x-webhook-hmac", s.parse().unwrap());
        h.insert("x-webhook-hmac-algorithm", "sha512".parse().unwrap());
    }
    h
}

fn job_of(hook: &Value) -> JobSpec {
    job_of_adapter(&adapter(), hook)
}

fn stored(job: &JobSpec) -> Payload {
    serde_json::from_value(job.payload.clone()).unwrap()
}

#[test]
fn the_signature_is_hex_hmac_sha512_of_the_exact_body() {
    let adapter = adapter();
    // Independent of our code and of the fake's signer: computed with
    // `printf %s '<body>' | openssl dgst -sha512 -hmac waha-hmac-key-0123456789`.
    let body = br#"{"id":"evt_01","event":"session.status","session":"default","payload":{"status":"WORKING"}}"#;
    let vector = "7bfa79c45d5c088833d01e80dc23f149530c8379aadb4c04c6834c428eb6775aa4a541c26321b843496a589b397ae7be9d552c0d9d10bb25057b4f5482ec8f42";
    let request = |headers: &http::HeaderMap, body: &[u8]| {
        adapter.authenticate(&WebhookRequest {
            headers,
            query: None,
            body,
        })
    };
    assert_eq!(test_support::waha::sign(HMAC_KEY, body), vector);
    assert!(request(&signed(Some(vector)), body).is_ok());
    assert!(
        request(&signed(Some(&vector.to_uppercase())), body).is_ok(),
        "hex in either case"
    );
    let mut tampered = body.to_vec();
    tampered[5] ^= 1;
    let other_key = "0".repeat(128);
    let mut sha256_algorithm = signed(Some(vector));
    sha256_algorithm.insert("x-webhook-hmac-algorithm", "sha256".parse().unwrap());
    for (headers, body, says) in [
        (signed(None), &body[..], "missing X-Webhook-Hmac"),
        (signed(Some("zz")), &body[..], "not hex"),
        (signed(Some(&other_key)), &body[..], "does not match"),
        (signed(Some(&vector[..64])), &body[..], "does not match"),
        (signed(Some(vector)), &tampered[..], "does not match"),
        (sha256_algorithm, &body[..], "sha512"),
    ] {
        let err = request(&headers, body).unwrap_err();
        assert!(matches!(err, ProviderError::Unauthorized(_)), "{err}");
        assert!(err.to_string().contains(says), "{says}: {err}");
        assert!(!err.to_string().contains(vector), "never the expected MAC");
        assert!(!err.to_string().contains(HMAC_KEY));
    }
}

#[test]
fn a_webhook_without_the_hmac_header_is_refused_from_its_head() {
    let err = adapter()
        .authenticate_head(&http::HeaderMap::new(), None)
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unauthorized(_)));
    let unsigned = Waha::new(
        &toml::from_str(&format!(
            r#"
            name = "waha"
            api_url = "http://127.0.0.1:3000"
            api_key = "{API_KEY}"
            allow_unauthenticated_webhooks = true
            "#
        ))
        .unwrap(),
        api(),
    )
    .unwrap();
    assert!(!unsigned.webhook_auth_configured());
    assert!(
        unsigned
            .authenticate(&WebhookRequest {
                headers: &http::HeaderMap::new(),
                query: None,
                body: b"{}",
            })
            .is_ok()
    );
}

#[test]
fn config_needs_its_keys_and_rejects_unknown_ones() {
    let adapter = adapter();
    assert!(adapter.webhook_auth_configured());
    assert_eq!(adapter.session, "default", "the default session");
    assert_eq!(
        adapter.account.retention(),
        Duration::from_secs(14 * 86_400)
    );

    let errors = Waha::new(
        &toml::from_str(
            r#"
            name = "waha"
            api_url = "ftp://waha"
            session = "a/b"
            api_key = ""
            allowed_download_hosts = [""]
            "#,
        )
        .unwrap(),
        api(),
    )
    .unwrap_err();
    assert_reported(
        &errors,
        &[
            "api_url",
            "session",
            "api_key",
            "webhook_hmac_key: required",
            "allowed_download_hosts[0]",
        ],
    );
    for bad in [
        "name = \"w\"\napi_key = \"k\"",
        "name = \"w\"\napi_url = \"http://x\"",
        "name = \"w\"\napi_url = \"http://x\"\napi_key = \"k\"\nwebhook_hmac = \"k\"",
    ] {
        assert!(toml::from_str::<WahaConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_webjs_image_becomes_one_job_keyed_by_the_message_id_with_no_hash() {
    let hook = webjs_image();
    let job = job_of(&hook);
    assert_eq!(job.id, format!("waha:{}", message_id(false)));
    assert_eq!(job.message_id, message_id(false));
    assert_eq!(job.media_id, None);
    assert_eq!(job.provider, ProviderKind::Waha);
    assert_eq!(
        job.message_at,
        a_minute_ago() * 1000,
        "payload.timestamp is seconds"
    );
    let p = stored(&job);
    assert_eq!(
        p.media_url.as_deref(),
        hook["payload"]["media"]["url"].as_str()
    );
    assert_eq!(p.sha256, None, "WEBJS vouches for no hash");
    assert_eq!(p.chat_id, CHAT);
    assert_eq!(p.sender.as_deref(), Some(CHAT));
    assert_eq!(p.caption.as_deref(), Some("a photo"));
    assert_eq!(p.mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(p.direction, Direction::Incoming);
}

#[test]
fn a_noweb_file_sha256_is_what_the_bytes_are_checked_against_in_any_encoding() {
    for encoding in [
        json!(SHA_B64),
        json!(SHA_HEX),
        crate::testing::indexed(SHA_B64),
        json!({"type": "Buffer", "data": archiver_core::decode::bytes(&json!(SHA_B64)).unwrap()}),
    ] {
        let p = stored(&job_of(&noweb_document(encoding.clone())));
        assert_eq!(p.sha256.as_deref(), Some(SHA_HEX), "{encoding}");
        assert_eq!(p.file_name.as_deref(), Some("invoice.pdf"));
    }
    // The same `_data` under another engine is not trusted.
    let mut gows = noweb_document(json!(SHA_B64));
    gows["engine"] = json!("GOWS");
    assert_eq!(stored(&job_of(&gows)).sha256, None);
}

#[test]
fn an_own_message_is_outgoing_in_the_chat_it_was_sent_to() {
    let mut hook = webjs_image();
    hook["event"] = json!("message.any");
    hook["payload"]["id"] = json!(message_id(true));
    hook["payload"]["fromMe"] = json!(true);
    hook["payload"]["from"] = json!(ME);
    hook["payload"]["to"] = json!(CHAT);
    let p = stored(&job_of(&hook));
    assert_eq!(p.direction, Direction::Outgoing);
    assert_eq!(p.chat_id, CHAT);
    assert_eq!(p.sender.as_deref(), Some(ME));
}

#[test]
fn a_message_without_a_downloaded_file_is_a_job_for_the_message_endpoint() {
    let p = stored(&job_of(&gows_image_without_media()));
    assert_eq!(p.media_url, None);
    assert_eq!(p.media_missing.as_deref(), Some("media is null"));

    let mut failed = webjs_image();
    failed["payload"]["media"] = json!({"url": null, "mimetype": "video/mp4",
        "error": {"message": "Media download failed: 410"}});
    let p = stored(&job_of(&failed));
    assert_eq!(p.media_url, None);
    assert!(p.media_missing.unwrap().contains("410"));

    let mut filtered = webjs_image();
    filtered["payload"]["media"] = json!({"url": null, "mimetype": "audio/ogg"});
    let p = stored(&job_of(&filtered));
    assert_eq!(p.media_missing.as_deref(), Some("media.url is null"));
    assert_eq!(p.mime_type.as_deref(), Some("audio/ogg"));
}

#[test]
fn other_events_and_messages_without_media_are_ignored() {
    let adapter = adapter();
    let mut text = webjs_image();
    text["payload"]["hasMedia"] = json!(false);
    text["payload"]["media"] = Value::Null;
    let mut no_flag = webjs_image();
    no_flag["payload"]
        .as_object_mut()
        .unwrap()
        .remove("hasMedia");
    let mut ack = webjs_image();
    ack["event"] = json!("message.ack");
    let status = json!({"event": "session.status", "session": "default",
        "payload": {"status": "WORKING"}});
    for hook in [text, no_flag, ack, status] {
        let parsed = parse(&adapter, &hook).unwrap();
        assert_eq!((parsed.jobs.len(), parsed.ignored), (0, 1), "{hook}");
    }
}

#[test]
fn hostile_payloads_are_refused_naming_the_field() {
    let adapter = adapter();
    let with = |path: &str, value: Value| {
        let mut hook = webjs_image();
        *hook.pointer_mut(path).unwrap() = value;
        hook
    };
    let mut no_payload = webjs_image();
    no_payload.as_object_mut().unwrap().remove("payload");
    let cases = [
        (with("/session", json!("someone-else")), "session"),
        (with("/event", json!(7)), "event"),
        (no_payload, "payload"),
        (with("/payload", json!([1, 2])), "payload"),
        (with("/payload/id", json!("")), "payload.id"),
        (with("/payload/id", json!("x".repeat(300))), "payload.id"),
        (with("/payload/id", json!(12)), "payload.id"),
        (with("/payload/hasMedia", json!("yes")), "payload.hasMedia"),
        (with("/payload/fromMe", json!("false")), "payload.fromMe"),
        (
            with("/payload/timestamp", json!(a_minute_ago() * 1000)),
            "payload.timestamp",
        ),
        (
            with("/payload/timestamp", json!("soon")),
            "payload.timestamp",
        ),
        (
            with("/payload/timestamp", json!(86_400)),
            "payload.timestamp",
        ),
        (with("/payload/from", Value::Null), "payload.from"),
        (with("/payload/media", json!("a file")), "payload.media"),
        (
            with("/payload/media/url", json!("file:///etc/passwd")),
            "payload.media.url",
        ),
        (
            with("/payload/media/url", json!("not a url")),
            "payload.media.url",
        ),
        (
            noweb_document(json!("not a hash")),
            "payload._data.message.documentMessage.fileSha256",
        ),
        (noweb_document(json!([1, 2, 3])), "fileSha256"),
    ];
    for (hook, field) in cases {
        let err = parse(&adapter, &hook).unwrap_err();
        assert!(
            matches!(err, ProviderError::BadPayload(_)),
            "{field}: {err}"
        );
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    for body in [&b"not json"[..], b"[]", b"\"x\"", b"{\"event\":", b""] {
        let err = parse_bytes(&adapter, body).unwrap_err();
        assert!(matches!(err, ProviderError::BadPayload(_)), "{err}");
    }
}

#[test]
fn the_message_endpoint_s_errors_are_classified() {
    let answer = |status, retry_after| ApiResponse {
        status,
        retry_after,
        body: br#"{"statusCode":404,"message":"Message not found"}"#.to_vec(),
    };
    let class =
        |status, retry_after, attempt| api_error(&answer(status, retry_after), attempt).class();
    let wait = Duration::from_secs(9);
    assert_eq!(class(401, None, 1), ErrorClass::Permanent);
    assert_eq!(class(403, None, 1), ErrorClass::Permanent);
    assert_eq!(class(400, None, 1), ErrorClass::Permanent);
    assert_eq!(
        class(422, None, 1),
        ErrorClass::Transient,
        "session starting"
    );
    assert_eq!(class(500, None, 1), ErrorClass::Transient);
    assert_eq!(class(429, Some(wait), 1), ErrorClass::RetryAfter(wait));
    assert_eq!(class(404, None, 1), ErrorClass::Transient);
    assert_eq!(class(404, None, NOT_FOUND_PATIENCE), ErrorClass::Permanent);
    let err = api_error(&answer(401, None), 1).to_string();
    assert!(err.contains("api_key") && err.contains("401"), "{err}");

    let no_file = json!({"id": "x", "hasMedia": true, "media": {"url": null, "error": "boom"}});
    let err = media_of(&no_file, 1).unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(
        media_of(&no_file, DOWNLOAD_PATIENCE).unwrap_err().class(),
        ErrorClass::Permanent
    );
    let gone = media_of(&json!({"hasMedia": false, "media": null}), 1).unwrap_err();
    assert_eq!(gone.class(), ErrorClass::Permanent);
    assert_eq!(
        media_of(
            &json!({"hasMedia": true, "media": {"url": "http://w/api/files/d/a.jpeg"}}),
            1
        )
        .unwrap()["url"],
        "http://w/api/files/d/a.jpeg"
    );
}

fn fake_adapter(fake: &FakeWaha) -> Waha {
    let config: WahaConfig = toml::from_str(&format!(
        r#"
        name = "waha"
        api_url = "{}"
        api_key = "{}"
        webhook_hmac_key = "{}"
        "#,
        fake.base_url(),
        fake.api_key(),
        fake.hmac_key()
    ))
    .unwrap();
    Waha::new(&config, api()).unwrap()
}

/// Resolves attempt 1 of `job` (with `link_dead` as given) to the request
/// the fetcher would send.
async fn resolved(
    adapter: &Waha,
    job: &JobSpec,
    link_dead: bool,
) -> (DownloadRequest, ResolvedMedia) {
    let mut reference = crate::testing::attempt(job, 1);
    reference.link_dead = link_dead;
    let media = crate::testing::fetch(adapter, reference).await;
    match &media.source {
        MediaSource::Download { request, hosts } => {
            assert!(hosts.allows("127.0.0.1"), "the gateway's own host");
            (request.clone(), media)
        }
        other => panic!("expected a download, got {other:?}"),
    }
}

/// GETs what `request` names, with its headers, as the fetcher would.
async fn get(request: &DownloadRequest) -> (u16, Vec<u8>) {
    let mut get = reqwest::Client::new().get(request.url.clone());
    for (name, value) in &request.headers {
        get = get.header(name, value.expose());
    }
    let answer = get.send().await.unwrap();
    (
        answer.status().as_u16(),
        answer.bytes().await.unwrap().to_vec(),
    )
}

#[tokio::test]
async fn a_downloaded_file_is_fetched_from_its_url_with_the_api_key() {
    let fake = FakeWaha::start().await;
    let adapter = fake_adapter(&fake);
    let id = fake.add_message(
        Engine::Noweb,
        CHAT,
        false,
        b"abc".to_vec(),
        "application/pdf",
        Some("a.pdf"),
    );
    let job = job_of_adapter(
        &adapter,
        &fake.webhook(&id, "message", MediaShape::Downloaded),
    );
    let (request, media) = resolved(&adapter, &job, false).await;
    assert_eq!(Some(request.url.to_string()), fake.media_url(&id));
    assert_eq!(
        media.expected_sha256.map(|d| d.to_hex()).as_deref(),
        Some(SHA_HEX)
    );
    assert_eq!(media.details.direction, Some(Direction::Incoming));
    assert_eq!(media.details.file_name.as_deref(), Some("a.pdf"));
    assert_eq!(get(&request).await, (200, b"abc".to_vec()));
    assert_eq!(fake.message_calls(), 0, "no re-download needed");
}

#[tokio::test]
async fn the_api_key_goes_to_waha_s_file_route_on_its_own_host_only() {
    let fake = FakeWaha::start().await;
    let adapter = fake_adapter(&fake);
    let id = fake.add_message(
        Engine::Noweb,
        CHAT,
        false,
        b"abc".to_vec(),
        "application/pdf",
        Some("a.pdf"),
    );
    let hook = fake.webhook(&id, "message", MediaShape::Downloaded);
    let has_key = |request: &DownloadRequest| {
        request
            .headers
            .iter()
            .any(|(name, _)| name.as_str().eq_ignore_ascii_case(API_KEY_HEADER))
    };
    let (own, _) = resolved(&adapter, &job_of_adapter(&adapter, &hook), false).await;
    assert!(has_key(&own), "WAHA's own file route gets the key");

    // The same route on another host (an allowed S3 host, say) does not.
    let mut elsewhere = hook.clone();
    let own_url = elsewhere["payload"]["media"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = own_url.replacen("127.0.0.1", "localhost", 1);
    assert_ne!(other, own_url);
    elsewhere["payload"]["media"]["url"] = serde_json::json!(other);
    let job = job_of_adapter(&adapter, &elsewhere);
    match crate::testing::fetch(&adapter, crate::testing::attempt(&job, 1))
        .await
        .source
    {
        MediaSource::Download { request, .. } => {
            assert_eq!(request.url.host_str(), Some("localhost"));
            assert!(!has_key(&request), "the key went to another host");
        }
        other => panic!("expected a download, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_gone_or_never_downloaded_is_downloaded_again_under_a_new_name() {
    let fake = FakeWaha::start().await;
    let adapter = fake_adapter(&fake);
    let id = fake.add_message(
        Engine::Gows,
        CHAT,
        false,
        b"abc".to_vec(),
        "image/jpeg",
        None,
    );
    let job = job_of_adapter(&adapter, &fake.webhook(&id, "message", MediaShape::Null));
    let (request, media) = resolved(&adapter, &job, false).await;
    assert_eq!(media.expected_sha256, None, "GOWS vouches for no hash");
    assert_eq!(
        media.details.mime_type.as_deref(),
        Some("image/jpeg"),
        "from the fresh answer"
    );
    assert_eq!((fake.message_calls(), fake.downloads(&id)), (1, 1));
    assert_eq!(get(&request).await, (200, b"abc".to_vec()));

    // WAHA restarted: the webhook's file answers 404, a fresh one is asked for.
    let id = fake.add_message(
        Engine::Webjs,
        CHAT,
        false,
        b"abc".to_vec(),
        "image/jpeg",
        None,
    );
    let job = job_of_adapter(
        &adapter,
        &fake.webhook(&id, "message", MediaShape::Downloaded),
    );
    let first = fake.media_url(&id).unwrap();
    fake.restart();
    let (stale, _) = resolved(&adapter, &job, false).await;
    assert_eq!(get(&stale).await.0, 404);
    let (fresh, _) = resolved(&adapter, &job, true).await;
    assert_ne!(fresh.url.to_string(), first, "a new name");
    assert_eq!(get(&fresh).await, (200, b"abc".to_vec()));
}

#[tokio::test]
async fn a_wrong_api_key_is_permanent_and_never_in_the_error() {
    let fake = FakeWaha::start().await;
    let config: WahaConfig = toml::from_str(&format!(
        "name = \"waha\"\napi_url = \"{}\"\napi_key = \"wrong-key-1234\"\nwebhook_hmac_key = \"k\"",
        fake.base_url()
    ))
    .unwrap();
    let adapter = Waha::new(&config, api()).unwrap();
    let id = fake.add_message(
        Engine::Webjs,
        CHAT,
        false,
        b"abc".to_vec(),
        "image/jpeg",
        None,
    );
    let job = job_of_adapter(&adapter, &fake.webhook(&id, "message", MediaShape::Failed));
    let err = adapter
        .resolve(crate::testing::attempt(&job, 1))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!err.to_string().contains("wrong-key-1234"));
    assert_eq!(fake.refused_keys(), 1);
}

#[tokio::test]
async fn a_session_still_starting_is_retried() {
    let fake = FakeWaha::start().await;
    let adapter = fake_adapter(&fake);
    fake.inject_message_faults(vec![422]);
    let id = fake.add_message(
        Engine::Webjs,
        CHAT,
        false,
        b"abc".to_vec(),
        "image/jpeg",
        None,
    );
    let job = job_of_adapter(&adapter, &fake.webhook(&id, "message", MediaShape::UrlNull));
    let err = adapter
        .resolve(crate::testing::attempt(&job, 1))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    let (request, _) = resolved(&adapter, &job, false).await;
    assert_eq!(get(&request).await.0, 200);
}

#[tokio::test]
async fn a_backfill_reference_makes_the_webhook_s_job() {
    let fake = FakeWaha::start().await;
    let adapter = fake_adapter(&fake);
    let id = fake.add_message(
        Engine::Noweb,
        CHAT,
        true,
        b"abc".to_vec(),
        "image/jpeg",
        None,
    );
    let webhook_job = job_of_adapter(
        &adapter,
        &fake.webhook(&id, "message.any", MediaShape::Downloaded),
    );
    let job = adapter
        .backfill(&json!({"chatId": CHAT, "messageId": id}))
        .await
        .unwrap();
    assert_eq!(job.id, webhook_job.id);
    assert_eq!(
        (job.message_at, &job.message_id),
        (webhook_job.message_at, &webhook_job.message_id)
    );
    let p = stored(&job);
    assert_eq!(p.direction, Direction::Outgoing);
    assert_eq!(p.sha256.as_deref(), Some(SHA_HEX));
    assert_eq!(p.media_url, fake.media_url(&id), "the fresh download");
    assert_eq!(fake.downloads(&id), 2);

    for (reference, says) in [
        (json!({"messageId": id}), "chatId"),
        (json!({"chatId": CHAT}), "messageId"),
        (
            json!({"chatId": CHAT, "messageId": "x".repeat(400)}),
            "messageId",
        ),
        (json!(["x"]), "object"),
    ] {
        let err = adapter.backfill(&reference).await.unwrap_err();
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
    let err = adapter
        .backfill(&json!({"chatId": CHAT, "messageId": "false_1@c.us_NOPE"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

fn job_of_adapter(adapter: &Waha, hook: &Value) -> JobSpec {
    let mut parsed = parse(adapter, hook).unwrap();
    assert_eq!(parsed.jobs.len(), 1, "{parsed:?}");
    parsed.jobs.remove(0)
}

#[test]
fn the_rules_see_from_me_the_chat_and_the_engine_s_media_type() {
    let adapter = Waha::new(
        &config(r#"rules = { directions = ["incoming"], media_types = ["image", "document"] }"#),
        api(),
    )
    .unwrap();
    assert_eq!(parse(&adapter, &webjs_image()).unwrap().jobs.len(), 1);
    let mut own = webjs_image();
    own["payload"]["fromMe"] = json!(true);
    own["payload"]["to"] = json!(CHAT);
    assert_eq!(parse(&adapter, &own).unwrap().filtered, 1);

    // WEBJS names a voice note `ptt` in `_data.type`.
    let mut ptt = webjs_image();
    ptt["payload"]["_data"]["type"] = json!("ptt");
    ptt["payload"]["media"]["mimetype"] = json!("audio/ogg; codecs=opus");
    assert_eq!(parse(&adapter, &ptt).unwrap().filtered, 1);
    // NOWEB's Baileys message type, and the mime type when nothing else.
    let noweb = noweb_document(json!(SHA_B64));
    assert_eq!(parse(&adapter, &noweb).unwrap().jobs.len(), 1);
    let mut video = webjs_image();
    video["payload"]["_data"] = json!({});
    video["payload"]["media"]["mimetype"] = json!("video/mp4");
    assert_eq!(parse(&adapter, &video).unwrap().filtered, 1);

    let denied = Waha::new(
        &config(&format!("rules = {{ chats_deny = [{CHAT:?}] }}")),
        api(),
    )
    .unwrap();
    assert_eq!(parse(&denied, &webjs_image()).unwrap().filtered, 1);
}
