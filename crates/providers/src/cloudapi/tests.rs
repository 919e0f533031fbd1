use super::*;
use crate::testing::{
    AuthenticateBoth as _, SHA_B64, SHA_HEX, api, assert_reported, attempt, fetch, parse,
};
use archiver_core::Classify;
use serde_json::json;
use test_support::meta::{FakeCloudApi, GraphFault, HashEncoding};

const APP_SECRET: &str = "0123456789abcdef0123456789abcdef";
const ACCESS_TOKEN: &str = "EAAGm0PX4ZCpsBAtest";

fn config(graph_url: &str, access_token: &str, app_secret: &str) -> CloudApiConfig {
    toml::from_str(&format!(
        r#"
        name = "meta"
        graph_url = "{graph_url}"
        access_token = "{access_token}"
        app_secret = "{app_secret}"
        verify_token = "verify-me"
        allowed_download_hosts = ["127.0.0.1", "lookaside.fbsbx.com"]
        "#
    ))
    .unwrap()
}

fn adapter() -> CloudApi {
    CloudApi::new(
        &config("https://graph.facebook.com/v21.0", ACCESS_TOKEN, APP_SECRET),
        api(),
    )
    .unwrap()
}

fn fake_adapter(fake: &FakeCloudApi) -> CloudApi {
    CloudApi::new(
        &config(&fake.graph_url(), fake.access_token(), fake.app_secret()),
        api(),
    )
    .unwrap()
}

fn image_webhook() -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                    "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": "16505551234"}],
                    "messages": [{
                        "from": "16505551234",
                        "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
                        "timestamp": "1749416383",
                        "type": "image",
                        "image": {"caption": "hi", "mime_type": "image/jpeg", "sha256": SHA_B64, "id": "1003383421387256"}
                    }]
                }
            }]
        }]
    })
}

fn signed(header: Option<&str>) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if let Some(v) = header {
        h.insert(SIGNATURE_HEADER, v.parse().unwrap());
    }
    h
}

#[test]
fn the_signature_is_hmac_sha256_of_the_exact_body() {
    let adapter = adapter();
    let body = serde_json::to_vec(&image_webhook()).unwrap();
    // Independent of our code (and of the fake's signer): computed with
    // `printf %s '{"object":"whatsapp_business_account","entry":[]}' |
    //  openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef`.
    let vector_body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    let vector = "sha256=eefab58106e73358686845848feb95c56372e7391b3dc050b6a31c8c5f347ece";
    assert!(verify_signature(APP_SECRET.as_bytes(), vector_body, Some(vector.as_bytes())).is_ok());
    assert_eq!(test_support::meta::sign(APP_SECRET, vector_body), vector);
    let good = test_support::meta::sign(APP_SECRET, &body);
    let req = |headers: &http::HeaderMap| {
        adapter.authenticate(&WebhookRequest {
            headers,
            query: None,
            body: &body,
        })
    };
    assert!(req(&signed(Some(&good))).is_ok());
    let upper = format!("sha256={}", good["sha256=".len()..].to_uppercase());
    assert!(req(&signed(Some(&upper))).is_ok());
    let wrong_secret = test_support::meta::sign("another secret", &body);
    let mut tampered_body = body.clone();
    tampered_body[10] ^= 1;
    for (headers, body, says) in [
        (signed(None), &body, "missing"),
        (signed(Some("sha1=abcd")), &body, "sha256=<hex>"),
        (signed(Some("sha256=zz")), &body, "sha256=<hex>"),
        (signed(Some(&wrong_secret)), &body, "does not match"),
        (signed(Some(&good)), &tampered_body, "does not match"),
    ] {
        let err = adapter
            .authenticate(&WebhookRequest {
                headers: &headers,
                query: None,
                body,
            })
            .unwrap_err();
        assert!(matches!(err, ProviderError::Unauthorized(_)));
        assert!(err.to_string().contains(says), "{err}");
        assert!(
            !err.to_string().contains(&good[7..]),
            "never the expected MAC"
        );
    }
    assert!(adapter.webhook_auth_configured());
}

#[test]
fn a_webhook_without_a_signature_is_refused_from_its_head() {
    let adapter = adapter();
    let err = adapter
        .authenticate_head(&http::HeaderMap::new(), None)
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unauthorized(_)), "{err}");
    assert!(err.to_string().contains("X-Hub-Signature-256"), "{err}");
    // The head cannot tell a right signature from a wrong one: the body can.
    let wrong = test_support::meta::sign("another secret", b"{}");
    assert!(
        adapter
            .authenticate_head(&signed(Some(&wrong)), None)
            .is_ok()
    );
}

#[test]
fn app_secret_is_required_unless_unsigned_webhooks_are_allowed_on_purpose() {
    let base = "name = \"meta\"\naccess_token = \"a\"\nverify_token = \"c\"\n";
    let config: CloudApiConfig = toml::from_str(base).unwrap();
    assert_eq!(
        CloudApi::new(&config, api()).unwrap_err(),
        ["app_secret: required (or set allow_unauthenticated_webhooks = true)"]
    );
    let config: CloudApiConfig =
        toml::from_str(&format!("{base}allow_unauthenticated_webhooks = true\n")).unwrap();
    let open = CloudApi::new(&config, api()).unwrap();
    assert!(!open.webhook_auth_configured());
    assert!(
        open.authenticate_head(&http::HeaderMap::new(), None)
            .is_ok()
    );
}

#[test]
fn a_known_signature_vector_verifies() {
    // HMAC-SHA256 test case 2 of RFC 4231: key "Jefe",
    // data "what do ya want for nothing?".
    let expected = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    assert!(
        verify_signature(
            b"Jefe",
            b"what do ya want for nothing?",
            Some(expected.as_bytes())
        )
        .is_ok()
    );
    assert!(
        verify_signature(
            b"Jefe",
            b"what do ya want for nothing!",
            Some(expected.as_bytes())
        )
        .is_err()
    );
}

#[test]
fn the_subscription_check_echoes_the_challenge_only_for_the_verify_token() {
    let adapter = adapter();
    let ok = adapter
        .verify_subscription(Some(
            "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=verify-me",
        ))
        .unwrap()
        .unwrap();
    assert_eq!(ok, "1158201444");
    for query in [
        Some("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=verify-mf"),
        Some("hub.mode=subscribe&hub.challenge=1158201444"),
        Some("hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=verify-me"),
        Some("hub.mode=subscribe&hub.verify_token=verify-me"),
        Some("hub.mode=subscribe&hub.challenge=%3Cscript%3E%20x&hub.verify_token=verify-me"),
        None,
    ] {
        let err = adapter.verify_subscription(query).unwrap().unwrap_err();
        assert!(matches!(err, ProviderError::Unauthorized(_)), "{query:?}");
        assert!(!err.to_string().contains("verify-me"), "{err}");
    }
}

#[test]
fn an_image_message_becomes_one_job_keyed_by_media_id() {
    let parsed = parse(&adapter(), &image_webhook()).unwrap();
    assert_eq!(parsed.ignored, 0);
    let [job] = parsed.jobs.as_slice() else {
        panic!("one job expected")
    };
    assert_eq!(job.id, "meta:1003383421387256");
    assert_eq!(
        job.message_id,
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    );
    assert_eq!(job.media_id.as_deref(), Some("1003383421387256"));
    assert_eq!(job.provider, ProviderKind::Cloudapi);
    assert_eq!(job.message_at, 1_749_416_383_000);
    assert_eq!(job.deadline, 1_749_416_383_000 + 7 * 86_400_000);
    assert_eq!(
        job.payload["sha256"], SHA_HEX,
        "base64 decoded, stored as hex"
    );
    assert_eq!(job.payload["phone_number_id"], "106540352242922");
    assert!(
        job.payload.get("url").is_none(),
        "the short-lived url is never stored"
    );
}

#[test]
fn every_media_type_is_archived_with_hex_or_base64_hashes() {
    let adapter = adapter();
    for kind in MEDIA_TYPES {
        for sha in [SHA_HEX, SHA_B64] {
            let mut body = image_webhook();
            let m = &mut body["entry"][0]["changes"][0]["value"]["messages"][0];
            let media = m["image"].take();
            m["type"] = json!(kind);
            m[kind] = media;
            m[kind]["sha256"] = json!(sha);
            let jobs = parse(&adapter, &body).unwrap().jobs;
            assert_eq!(jobs.len(), 1, "{kind}");
            assert_eq!(jobs[0].payload["sha256"], SHA_HEX);
        }
    }
}

#[test]
fn statuses_texts_and_other_fields_are_ignored() {
    let adapter = adapter();
    let mut body = image_webhook();
    let value = &mut body["entry"][0]["changes"][0]["value"];
    value["messages"] = json!([
        {"from": "1", "id": "wamid.T", "timestamp": "1749416383", "type": "text", "text": {"body": "hi"}},
        {"from": "1", "id": "wamid.L", "timestamp": "1749416383", "type": "location", "location": {}}
    ]);
    value["statuses"] = json!([{"id": "wamid.S", "status": "read", "timestamp": "1749416383"}]);
    body["entry"][0]["changes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"field": "account_update", "value": {"event": "X"}}));
    let parsed = parse(&adapter, &body).unwrap();
    assert_eq!(parsed.jobs.len(), 0);
    assert_eq!(parsed.ignored, 4);
}

#[test]
fn malformed_payloads_are_rejected_naming_the_field() {
    let adapter = adapter();
    let m = "/entry/0/changes/0/value/messages/0";
    let at = "entry[0].changes[0].value.messages[0]";
    for (pointer, value, field) in [
        ("/object".to_owned(), json!("page"), "object".to_owned()),
        ("/entry".to_owned(), Value::Null, "entry".to_owned()),
        (
            "/entry/0/changes".to_owned(),
            json!(1),
            "entry[0].changes".to_owned(),
        ),
        (
            "/entry/0/changes/0/value".to_owned(),
            Value::Null,
            "entry[0].changes[0].value".to_owned(),
        ),
        (format!("{m}/id"), Value::Null, format!("{at}.id")),
        (
            format!("{m}/timestamp"),
            json!("soon"),
            format!("{at}.timestamp"),
        ),
        (format!("{m}/type"), Value::Null, format!("{at}.type")),
        (format!("{m}/image"), Value::Null, format!("{at}.image")),
        (
            format!("{m}/image/id"),
            Value::Null,
            format!("{at}.image.id"),
        ),
        (
            format!("{m}/image/sha256"),
            json!("!!"),
            format!("{at}.image.sha256"),
        ),
    ] {
        let mut body = image_webhook();
        *body.pointer_mut(&pointer).unwrap() = value;
        let err = parse(&adapter, &body).unwrap_err();
        assert!(matches!(err, ProviderError::BadPayload(_)), "{pointer}");
        assert!(err.to_string().contains(&field), "{pointer}: {err}");
    }
}

#[test]
fn graph_errors_are_classified_as_documented() {
    let credentials = ErrorClass::RetryAfter(CREDENTIALS_RETRY);
    assert_eq!(classify(400, Some(100), None), ErrorClass::Permanent);
    assert_eq!(classify(404, None, None), ErrorClass::Permanent);
    assert_eq!(classify(401, Some(190), None), credentials);
    assert_eq!(classify(400, Some(190), None), credentials);
    assert_eq!(classify(403, Some(200), None), credentials);
    assert_eq!(classify(429, Some(4), None), ErrorClass::Transient);
    assert_eq!(
        classify(400, Some(80007), Some(Duration::from_secs(9))),
        ErrorClass::RetryAfter(Duration::from_secs(9))
    );
    assert_eq!(classify(400, Some(130429), None), ErrorClass::Transient);
    assert_eq!(classify(500, Some(2), None), ErrorClass::Transient);
    assert_eq!(classify(503, None, None), ErrorClass::Transient);
}

#[test]
fn the_two_hashes_must_agree() {
    let a = Sha256Digest::parse(SHA_HEX).unwrap();
    let b = Sha256Digest::from_bytes([7; 32]);
    assert_eq!(expected_sha256(Some(a), Some(a), 1).unwrap(), Some(a));
    assert_eq!(expected_sha256(None, Some(b), 1).unwrap(), Some(b));
    assert_eq!(expected_sha256(Some(a), None, 1).unwrap(), Some(a));
    assert_eq!(expected_sha256(None, None, 1).unwrap(), None);
    let err = expected_sha256(Some(a), Some(b), 1).unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    let err = expected_sha256(Some(a), Some(b), HASH_DISAGREEMENT_PATIENCE).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[test]
fn config_needs_every_secret_and_rejects_unknown_keys() {
    let bad: CloudApiConfig = toml::from_str(
        r#"
        name = "meta"
        graph_url = "graph.facebook.com"
        access_token = ""
        app_secret = { env = "MEDIA_ARCHIVER_TEST_UNSET_VARIABLE" }
        verify_token = "v"
        "#,
    )
    .unwrap();
    let errors = CloudApi::new(&bad, api()).unwrap_err();
    assert_reported(&errors, &["graph_url", "access_token", "app_secret"]);
    let unknown = toml::from_str::<CloudApiConfig>(
        r#"
        name = "meta"
        access_token = "a"
        app_secret = "b"
        verify_token = "c"
        phone_number_id = "1"
        "#,
    );
    assert!(unknown.unwrap_err().to_string().contains("phone_number_id"));
    let defaults: CloudApiConfig = toml::from_str(
        r#"
        name = "meta"
        access_token = "a"
        app_secret = "b"
        verify_token = "c"
        "#,
    )
    .unwrap();
    let a = CloudApi::new(&defaults, api()).unwrap();
    assert_eq!(a.graph_url.as_str(), "https://graph.facebook.com/v21.0");
    assert_eq!(a.account.retention(), DEFAULT_RETENTION);
    // Only the host providers.md documents for Graph's media `url`.
    assert!(a.hosts.allows("lookaside.fbsbx.com"));
    for host in [
        "scontent.xx.fbsbx.com",
        "mmg.whatsapp.net",
        "127.0.0.1",
        "fbsbx.com.evil.net",
    ] {
        assert!(!a.hosts.allows(host), "{host}");
    }
    assert!(!format!("{a:?}").contains("verify_token = \"c\""));
}

#[tokio::test]
async fn every_attempt_gets_a_fresh_url_and_sends_the_token() {
    let fake = FakeCloudApi::start().await;
    let adapter = fake_adapter(&fake);
    let bytes = b"\xff\xd8\xff jpeg".to_vec();
    let media = fake.add_media("image", bytes.clone(), "image/jpeg");
    let body = fake.message_webhook(&media, "wamid.A", 1_700_000_000, HashEncoding::Base64);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    let mut urls = Vec::new();
    for n in 1..=2 {
        let resolved = fetch(&adapter, attempt(&job, n)).await;
        let MediaSource::Download { request, hosts } = resolved.source else {
            panic!("expected a download")
        };
        assert!(hosts.allows("127.0.0.1"));
        let (name, value) = &request.headers[0];
        assert_eq!(name, http::header::AUTHORIZATION);
        assert_eq!(value.expose(), format!("Bearer {}", fake.access_token()));
        assert_eq!(
            resolved.expected_sha256.map(|d| d.to_hex()),
            Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)))
        );
        assert_eq!(resolved.details.mime_type.as_deref(), Some("image/jpeg"));
        urls.push(request.url.to_string());
    }
    assert_ne!(urls[0], urls[1], "a fresh URL on every attempt");
    assert_eq!(fake.media_info_calls(&media), 2);
    assert!(urls[0].contains(&format!("mid={media}")));
    assert!(urls[0].contains("ext=") && urls[0].contains("hash="));
}

#[tokio::test]
async fn graph_failures_become_the_documented_classes() {
    let fake = FakeCloudApi::start().await;
    let adapter = fake_adapter(&fake);
    let media = fake.add_media("document", b"%PDF".to_vec(), "application/pdf");
    let body = fake.message_webhook(&media, "wamid.B", 1_700_000_000, HashEncoding::Hex);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    fake.inject_graph_faults(vec![
        GraphFault::Status(401),
        GraphFault::Status(429),
        GraphFault::Status(500),
        GraphFault::Status(400),
        GraphFault::WrongSha256,
    ]);
    let err = adapter.resolve(attempt(&job, 1)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RetryAfter(CREDENTIALS_RETRY));
    let text = err.to_string();
    assert!(
        text.contains("access token") && text.contains("access_token"),
        "{text}"
    );
    assert!(!text.contains(fake.access_token()), "{text}");
    let err = adapter.resolve(attempt(&job, 1)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RetryAfter(Duration::from_secs(1)));
    let err = adapter.resolve(attempt(&job, 1)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    let err = adapter.resolve(attempt(&job, 1)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let err = adapter.resolve(attempt(&job, 1)).await.unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert!(matches!(
        adapter.resolve(attempt(&job, 1)).await.unwrap(),
        Resolution::Fetch(_)
    ));
    // An unknown media id: Graph's 400, permanent.
    let mut unknown = body.clone();
    unknown["entry"][0]["changes"][0]["value"]["messages"][0]["document"]["id"] = json!("42");
    let job = parse(&adapter, &unknown).unwrap().jobs.remove(0);
    let err = adapter.resolve(attempt(&job, 1)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_wrong_access_token_never_appears_in_errors() {
    let fake = FakeCloudApi::start().await;
    let adapter = CloudApi::new(
        &config(&fake.graph_url(), "EAAGwrongtoken123", fake.app_secret()),
        api(),
    )
    .unwrap();
    let media = fake.add_media("audio", b"ogg".to_vec(), "audio/ogg");
    let body = fake.message_webhook(&media, "wamid.C", 1_700_000_000, HashEncoding::Absent);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    let err = adapter.resolve(attempt(&job, 1)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RetryAfter(CREDENTIALS_RETRY));
    assert!(!err.to_string().contains("EAAGwrongtoken123"));
    assert!(!format!("{adapter:?}").contains("EAAGwrongtoken123"));
}

#[tokio::test]
async fn a_backfill_reference_makes_the_webhook_s_job() {
    let adapter = adapter();
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let mut hook = image_webhook();
    hook["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = json!(at.to_string());
    let webhook_job = parse(&adapter, &hook).unwrap().jobs.remove(0);
    let message = &hook["entry"][0]["changes"][0]["value"]["messages"][0];
    let reference = json!({
        "media_id": message["image"]["id"], "message_id": message["id"], "timestamp": at,
        "type": "image", "mime_type": "image/jpeg", "sha256": SHA_B64, "caption": "hi",
        "from": "16505551234", "phone_number_id": "106540352242922",
    });
    assert_eq!(adapter.backfill(&reference).await.unwrap(), webhook_job);

    let old = json!({"media_id": "1", "message_id": "wamid.old", "timestamp": 1_600_000_000});
    let err = adapter.backfill(&old).await.unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");
}

#[test]
fn the_rules_see_an_incoming_message_its_sender_s_chat_and_a_voice_note() {
    let mut config = config("https://graph.facebook.com/v21.0", ACCESS_TOKEN, APP_SECRET);
    config.rules = toml::from_str(r#"media_types = ["image", "audio"]"#).unwrap();
    let adapter = CloudApi::new(&config, api()).unwrap();
    assert_eq!(parse(&adapter, &image_webhook()).unwrap().jobs.len(), 1);
    let audio = |voice: Option<bool>| {
        let mut hook = image_webhook();
        let m = &mut hook["entry"][0]["changes"][0]["value"]["messages"][0];
        m["type"] = json!("audio");
        m["audio"] = json!({"mime_type": "audio/ogg; codecs=opus", "sha256": SHA_B64, "id": "1"});
        if let Some(voice) = voice {
            m["audio"]["voice"] = json!(voice);
        }
        hook
    };
    assert_eq!(parse(&adapter, &audio(None)).unwrap().jobs.len(), 1);
    assert_eq!(parse(&adapter, &audio(Some(false))).unwrap().jobs.len(), 1);
    assert_eq!(
        parse(&adapter, &audio(Some(true))).unwrap().filtered,
        1,
        "a voice note"
    );

    config.rules = toml::from_str(r#"directions = ["outgoing"]"#).unwrap();
    let outgoing_only = CloudApi::new(&config, api()).unwrap();
    assert_eq!(parse(&outgoing_only, &image_webhook()).unwrap().filtered, 1);

    config.rules = toml::from_str(r#"chats_deny = ["16505551234"]"#).unwrap();
    let denied = CloudApi::new(&config, api()).unwrap();
    let parsed = parse(&denied, &image_webhook()).unwrap();
    assert_eq!((parsed.jobs.len(), parsed.filtered), (0, 1));
}
