use super::*;
use crate::testing::{
    AuthenticateBoth as _, SHA_B64, SHA_HEX, api, assert_reported, attempt, parse, parse_bytes,
};
use archiver_core::{Classify, Sha256Digest};
use serde_json::json;
use test_support::meta::{FakeOnPrem, HashEncoding};

const MEDIA_ID: &str = "b1c68f38-8734-4ad3-b4a1-ef0c10d683";

fn config(api_url: &str, password: &str, extra: &str) -> OnPremConfig {
    toml::from_str(&format!(
        r#"
        name = "onprem"
        api_url = "{api_url}"
        username = "archiver"
        password = "{password}"
        webhook_token = "hook-secret"
        {extra}
        "#
    ))
    .unwrap()
}

fn adapter() -> OnPrem {
    OnPrem::new(
        &config("https://wa.example.com:9090", "Secret-Pass1!", ""),
        api(),
    )
    .unwrap()
}

fn fake_adapter(fake: &FakeOnPrem) -> OnPrem {
    OnPrem::new(
        &config(
            &fake.base_url(),
            fake.password(),
            r#"store_callback_timeout = "90s""#,
        ),
        api(),
    )
    .unwrap()
}

fn image_webhook() -> Value {
    json!({
        "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": "16315551234"}],
        "messages": [{
            "from": "16315551234",
            "id": "ABGGFlA5FpafAgo6EhueMbj3WNNf",
            "timestamp": "1518694700",
            "type": "image",
            "image": {
                "caption": "Check out my new phone!",
                "id": MEDIA_ID,
                "mime_type": "image/jpeg",
                "sha256": SHA_HEX,
            }
        }]
    })
}

/// Attempt `n` at `job`, after `last_error` was recorded.
fn job_ref<'a>(job: &'a JobSpec, n: u32, last_error: Option<&'a str>) -> JobRef<'a> {
    JobRef {
        last_error,
        ..attempt(job, n)
    }
}

#[test]
fn an_image_message_becomes_one_job_keyed_by_media_id() {
    let parsed = parse(&adapter(), &image_webhook()).unwrap();
    assert_eq!((parsed.ignored, parsed.wakes.len()), (0, 0));
    let [job] = parsed.jobs.as_slice() else {
        panic!("one job expected")
    };
    assert_eq!(job.id, format!("onprem:{MEDIA_ID}"));
    assert_eq!(job.message_id, "ABGGFlA5FpafAgo6EhueMbj3WNNf");
    assert_eq!(job.media_id.as_deref(), Some(MEDIA_ID));
    assert_eq!(job.provider, ProviderKind::Onprem);
    assert_eq!(job.message_at, 1_518_694_700_000);
    assert_eq!(job.deadline, 1_518_694_700_000 + 14 * 86_400_000);
    assert_eq!(job.payload["sha256"], SHA_HEX);
    assert_eq!(job.payload["mime_type"], "image/jpeg");
    assert_eq!(job.payload["chat_id"], "16315551234");
    assert_eq!(job.payload["auto_downloaded"], false);
}

#[test]
fn every_media_type_is_archived_and_a_base64_hash_is_decoded() {
    let adapter = adapter();
    for kind in MEDIA_TYPES {
        let mut body = image_webhook();
        let media = body["messages"][0]["image"].take();
        body["messages"][0]["type"] = json!(kind);
        body["messages"][0][kind] = media;
        body["messages"][0][kind]["sha256"] = json!(SHA_B64);
        let parsed = parse(&adapter, &body).unwrap();
        assert_eq!(parsed.jobs.len(), 1, "{kind}");
        assert_eq!(parsed.jobs[0].payload["sha256"], SHA_HEX, "{kind}");
        assert_eq!(parsed.jobs[0].payload["media_type"], kind);
    }
}

#[test]
fn a_webhook_with_file_is_auto_downloaded_and_groups_are_the_chat() {
    let mut body = image_webhook();
    body["messages"][0]["image"]["file"] = json!("/usr/local/wamedia/shared/b1c6");
    body["messages"][0]["group_id"] = json!("16315551234-1526402112");
    let job = parse(&adapter(), &body).unwrap().jobs.remove(0);
    assert_eq!(job.payload["auto_downloaded"], true);
    assert_eq!(job.payload["chat_id"], "16315551234-1526402112");
    assert_eq!(job.payload["sender"], "16315551234");
}

#[test]
fn texts_statuses_and_error_notifications_are_ignored() {
    let adapter = adapter();
    let text = json!({"messages": [{"from": "1", "id": "A", "timestamp": "1518694700",
        "type": "text", "text": {"body": "hi"}}]});
    let statuses = json!({"statuses": [
        {"id": "A", "recipient_id": "1", "status": "read", "timestamp": "1518694700"},
        {"id": "B", "recipient_id": "1", "status": "delivered", "timestamp": "1518694700"}]});
    let errors = json!({"errors": [{"code": 1014, "title": "Internal error"}]});
    for (body, ignored) in [(text, 1), (statuses, 2), (errors, 1)] {
        let parsed = parse(&adapter, &body).unwrap();
        assert_eq!(
            parsed,
            ParsedWebhook {
                ignored,
                ..ParsedWebhook::default()
            },
            "{body}"
        );
    }
}

#[test]
fn malformed_payloads_are_rejected_naming_the_field() {
    let adapter = adapter();
    let err = parse_bytes(&adapter, b"{not json").unwrap_err();
    assert!(err.to_string().contains("malformed JSON"), "{err}");

    for (pointer, value, field) in [
        ("/messages/0/id", Value::Null, "messages[0].id"),
        (
            "/messages/0/timestamp",
            Value::Null,
            "messages[0].timestamp",
        ),
        (
            "/messages/0/timestamp",
            json!("yesterday"),
            "messages[0].timestamp",
        ),
        ("/messages/0/type", Value::Null, "messages[0].type"),
        ("/messages/0/image", Value::Null, "messages[0].image"),
        ("/messages/0/image/id", json!(""), "messages[0].image.id"),
        (
            "/messages/0/image/sha256",
            json!("nope"),
            "messages[0].image.sha256",
        ),
        (
            "/messages/0/image/sha256",
            json!("deadbeef"),
            "messages[0].image.sha256",
        ),
        ("/messages", json!({}), "messages"),
    ] {
        let mut body = image_webhook();
        *body.pointer_mut(pointer).unwrap() = value;
        let err = parse(&adapter, &body).unwrap_err();
        assert!(matches!(err, ProviderError::BadPayload(_)), "{pointer}");
        assert!(err.to_string().contains(field), "{pointer}: {err}");
    }
    let err = parse(&adapter, &json!({"hello": 1})).unwrap_err();
    assert!(err.to_string().contains("media_items"), "{err}");
    for (item, field) in [
        (
            json!({"image": {"status": "downloaded"}, "type": "image"}),
            "media_items[0].image.id",
        ),
        (json!({"status": "downloaded"}), "media_items[0].type"),
        (json!("x"), "media_items[0]"),
    ] {
        let err = parse(&adapter, &json!({ "media_items": [item] })).unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}

#[test]
fn store_callbacks_wake_exactly_their_job_with_what_they_said() {
    let adapter = adapter();
    // The documented success callback (sources/002).
    let done = json!({"media_items": [{"image": {"id": MEDIA_ID, "mime_type": "image/jpeg",
        "sha256": SHA_HEX, "status": "downloaded"}, "type": "image"}]});
    let parsed = parse(&adapter, &done).unwrap();
    assert!(parsed.jobs.is_empty());
    assert_eq!(
        parsed.wakes,
        vec![Wake {
            job_id: format!("onprem:{MEDIA_ID}"),
            note: Some(STORE_DONE_NOTE.to_owned()),
        }]
    );
    // The documented failure callback: errors beside a "downloaded" item.
    let failed = json!({"media_items": [{"errors": [{"code": 400,
        "details": "Media not found in the datastore.", "title": "Parameter not valid"}],
        "document": {"id": "doc-1", "mime_type": "application/pdf", "sha256": SHA_HEX,
        "status": "downloaded"}, "type": "document"}]});
    let wake = parse(&adapter, &failed).unwrap().wakes.remove(0);
    assert_eq!(wake.job_id, "onprem:doc-1");
    let note = wake.note.unwrap();
    assert!(note.starts_with(STORE_ERROR_NOTE), "{note}");
    assert!(note.contains("Media not found in the datastore"), "{note}");
    assert!(note.contains("400"), "{note}");
    // An item that reports no outcome wakes nothing.
    let pending = json!({"media_items": [{"image": {"id": MEDIA_ID, "status": "downloading"},
        "type": "image"}]});
    let parsed = parse(&adapter, &pending).unwrap();
    assert_eq!((parsed.wakes.len(), parsed.ignored), (0, 1));
}

#[test]
fn webhooks_need_the_token_as_bearer_or_query() {
    let adapter = adapter();
    let none = http::HeaderMap::new();
    let mut good = http::HeaderMap::new();
    good.insert(
        http::header::AUTHORIZATION,
        "Bearer hook-secret".parse().unwrap(),
    );
    let req = |headers, query| WebhookRequest {
        headers,
        query,
        body: b"{}",
    };
    assert!(adapter.authenticate(&req(&good, None)).is_ok());
    assert!(
        adapter
            .authenticate(&req(&none, Some("token=hook-secret")))
            .is_ok()
    );
    let err = adapter.authenticate(&req(&none, None)).unwrap_err();
    assert!(matches!(err, ProviderError::Unauthorized(_)));
    assert!(
        adapter
            .authenticate(&req(&none, Some("token=hook-secrex")))
            .is_err()
    );
    assert!(adapter.webhook_auth_configured());
    assert!(
        adapter
            .verify_subscription(Some("hub.mode=subscribe"))
            .is_none()
    );
}

#[test]
fn config_is_validated_all_at_once() {
    let bad = toml::from_str::<OnPremConfig>(
        r#"
        name = "onprem"
        api_url = "not a url"
        username = ""
        password = { env = "MEDIA_ARCHIVER_TEST_UNSET_VARIABLE" }
        store_callback_timeout = "0s"
        "#,
    )
    .unwrap();
    let errors = OnPrem::new(&bad, api()).unwrap_err();
    assert_reported(
        &errors,
        &[
            "api_url",
            "username",
            "password",
            "store_callback_timeout",
            "webhook_token",
        ],
    );
    let unknown = toml::from_str::<OnPremConfig>(
        r#"
        name = "onprem"
        api_url = "https://wa.example.com"
        username = "a"
        password = "b"
        api_token = "c"
        "#,
    );
    assert!(unknown.unwrap_err().to_string().contains("api_token"));
    let a = adapter();
    assert_eq!(a.store_callback_timeout, DEFAULT_STORE_CALLBACK_TIMEOUT);
    assert!(a.hosts.allows("wa.example.com") && !a.hosts.allows("evil.example.com"));
}

#[test]
fn error_codes_are_classified_as_documented() {
    let permanent = ErrorClass::Permanent;
    let transient = ErrorClass::Transient;
    assert_eq!(
        classify(404, &[1006], "URL path not found.", None, 1),
        permanent
    );
    assert_eq!(classify(400, &[1006], "", None, 1), permanent);
    let missing = "code 400 (Parameter not valid): Media not found in the datastore.";
    assert_eq!(classify(400, &[], missing, None, 1), transient);
    assert_eq!(classify(400, &[], missing, None, 2), transient);
    assert_eq!(
        classify(400, &[], missing, None, STORE_FAILURE_PATIENCE),
        permanent
    );
    assert_eq!(
        classify(401, &[1005], "", None, 1),
        ErrorClass::RetryAfter(CREDENTIALS_RETRY)
    );
    assert_eq!(classify(429, &[], "", None, 1), transient);
    assert_eq!(
        classify(429, &[1015], "", Some(Duration::from_secs(7)), 1),
        ErrorClass::RetryAfter(Duration::from_secs(7))
    );
    assert_eq!(
        classify(500, &[1014], "Internal error", None, 50),
        transient
    );
    assert_eq!(classify(503, &[], "", None, 50), transient);
}

#[test]
fn token_lifetime_comes_from_expires_after() {
    let now = chrono::DateTime::parse_from_rfc3339("2018-03-01T15:29:26Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        lifetime_until("2018-03-08 15:29:26+00:00", now),
        Some(Duration::from_secs(7 * 86_400))
    );
    assert_eq!(
        lifetime_until("2018-03-01T16:29:26+01:00", now),
        Some(Duration::ZERO)
    );
    assert_eq!(lifetime_until("2018-02-01 00:00:00+00:00", now), None);
    assert_eq!(lifetime_until("next week", now), None);
    let login =
        json!({"users": [{"token": "eyJhbGciOi", "expires_after": "2018-03-01 15:29:26+00:00"}]});
    let (token, expires) = parse_login(&login).unwrap();
    assert_eq!(token.expose(), "eyJhbGciOi");
    assert_eq!(expires.as_deref(), Some("2018-03-01 15:29:26+00:00"));
    assert!(parse_login(&json!({"users": []})).is_none());
}

#[tokio::test]
async fn first_attempt_asks_the_store_and_parks() {
    let fake = FakeOnPrem::start().await;
    let adapter = fake_adapter(&fake);
    let media = fake.add_media("image", b"jpeg bytes".to_vec(), "image/jpeg", false);
    let body = fake.message_webhook(&media, "wamid-1", 1_700_000_000, HashEncoding::Hex);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    let resolution = adapter.resolve(job_ref(&job, 1, None)).await.unwrap();
    let Resolution::Park { timeout, reason } = resolution else {
        panic!("expected a park, got {resolution:?}")
    };
    assert_eq!(timeout, Duration::from_secs(90));
    assert!(reason.contains(&media), "{reason}");
    assert_eq!((fake.store_requests(&media), fake.logins()), (1, 1));
    // A park that timed out asks again, with the cached token.
    let again = adapter.resolve(job_ref(&job, 2, None)).await.unwrap();
    assert!(matches!(again, Resolution::Park { .. }));
    assert_eq!((fake.store_requests(&media), fake.logins()), (2, 1));
}

#[tokio::test]
async fn a_success_callback_leads_to_the_media_with_the_bearer_token() {
    let fake = FakeOnPrem::start().await;
    let adapter = fake_adapter(&fake);
    let bytes = b"%PDF-1.4 document".to_vec();
    let media = fake.add_media("document", bytes.clone(), "application/pdf", false);
    let body = fake.message_webhook(&media, "wamid-2", 1_700_000_000, HashEncoding::Base64);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    let resolution = adapter
        .resolve(job_ref(&job, 2, Some(STORE_DONE_NOTE)))
        .await
        .unwrap();
    let Resolution::Fetch(resolved) = resolution else {
        panic!("expected a fetch")
    };
    assert_eq!(fake.store_requests(&media), 0);
    let MediaSource::Download { request, hosts } = &resolved.source else {
        panic!("expected a download")
    };
    assert_eq!(request.url.path(), format!("/v1/media/{media}"));
    assert!(hosts.allows("127.0.0.1"));
    let (name, value) = &request.headers[0];
    assert_eq!(name, http::header::AUTHORIZATION);
    assert!(value.expose().starts_with("Bearer eyJ"));
    assert_eq!(
        resolved.expected_sha256,
        Some(Sha256Digest::from_bytes(sha256(&bytes)))
    );
    assert_eq!(
        resolved.details.mime_type.as_deref(),
        Some("application/pdf")
    );
    assert!(resolved.details.file_name.is_some());
}

#[tokio::test]
async fn an_auto_downloaded_file_is_fetched_without_the_store() {
    let fake = FakeOnPrem::start().await;
    let adapter = fake_adapter(&fake);
    let media = fake.add_media("voice", b"ogg".to_vec(), "audio/ogg; codecs=opus", true);
    let body = fake.message_webhook(&media, "wamid-3", 1_700_000_000, HashEncoding::Hex);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    let resolution = adapter.resolve(job_ref(&job, 1, None)).await.unwrap();
    assert!(matches!(resolution, Resolution::Fetch(_)));
    assert_eq!(fake.store_requests(&media), 0);
}

#[tokio::test]
async fn a_failed_store_is_retried_once_then_permanent() {
    let fake = FakeOnPrem::start().await;
    let adapter = fake_adapter(&fake);
    let media = fake.add_media("image", b"x".to_vec(), "image/jpeg", false);
    let body = fake.message_webhook(&media, "wamid-4", 1_700_000_000, HashEncoding::Hex);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    let note = format!(
        "{STORE_ERROR_NOTE}: code 400 (Parameter not valid): Media not found in the datastore."
    );
    let first = adapter
        .resolve(job_ref(&job, 2, Some(&note)))
        .await
        .unwrap_err();
    assert_eq!(first.class(), ErrorClass::Transient);
    assert!(
        first
            .to_string()
            .contains("Media not found in the datastore")
    );
    // The failure was recorded as the last error: the next attempt asks again.
    let recorded = first.to_string();
    let again = adapter
        .resolve(job_ref(&job, 3, Some(&recorded)))
        .await
        .unwrap();
    assert!(matches!(again, Resolution::Park { .. }));
    let last = adapter
        .resolve(job_ref(&job, 4, Some(&note)))
        .await
        .unwrap_err();
    assert_eq!(last.class(), ErrorClass::Permanent);
    // Another store error stays transient.
    let other = format!("{STORE_ERROR_NOTE}: code 1014 (Internal error): try later");
    let err = adapter
        .resolve(job_ref(&job, 9, Some(&other)))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_and_the_call_repeated() {
    let fake = FakeOnPrem::start().await;
    let adapter = fake_adapter(&fake);
    let media = fake.add_media("video", b"mp4".to_vec(), "video/mp4", false);
    let body = fake.message_webhook(&media, "wamid-5", 1_700_000_000, HashEncoding::Hex);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    adapter.resolve(job_ref(&job, 1, None)).await.unwrap();
    assert_eq!(fake.logins(), 1);
    fake.expire_tokens();
    let resolution = adapter.resolve(job_ref(&job, 2, None)).await.unwrap();
    assert!(matches!(resolution, Resolution::Park { .. }));
    assert_eq!(fake.logins(), 2);
    assert_eq!(fake.store_requests(&media), 3, "1 + refused + repeated");
    // A dead link (the media GET refused or missing) logs in afresh and
    // asks the store again.
    let dead = JobRef {
        link_dead: true,
        ..job_ref(&job, 3, Some(STORE_DONE_NOTE))
    };
    assert!(matches!(
        adapter.resolve(dead).await.unwrap(),
        Resolution::Park { .. }
    ));
    assert_eq!((fake.logins(), fake.store_requests(&media)), (3, 4));
}

#[tokio::test]
async fn an_unknown_media_id_is_permanent() {
    let fake = FakeOnPrem::start().await;
    let adapter = fake_adapter(&fake);
    let mut body = image_webhook();
    body["messages"][0]["image"]["id"] = json!("no-such-media");
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    let err = adapter.resolve(job_ref(&job, 1, None)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("1006"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_retried_slowly_and_never_shown() {
    let fake = FakeOnPrem::start().await;
    let adapter = OnPrem::new(&config(&fake.base_url(), "Wrong-Pass1!", ""), api()).unwrap();
    let job = parse(&adapter, &image_webhook()).unwrap().jobs.remove(0);
    let err = adapter.resolve(job_ref(&job, 1, None)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RetryAfter(CREDENTIALS_RETRY));
    let text = err.to_string();
    assert!(
        text.contains("username") && text.contains("password"),
        "{text}"
    );
    assert!(!text.contains("Wrong-Pass1!"), "{text}");
    assert!(!format!("{adapter:?}").contains("Wrong-Pass1!"));
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
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
    hook["messages"][0]["timestamp"] = json!(at.to_string());
    let webhook_job = parse(&adapter, &hook).unwrap().jobs.remove(0);
    let reference = json!({
        "media_id": MEDIA_ID, "message_id": "ABGGFlA5FpafAgo6EhueMbj3WNNf", "timestamp": at,
        "type": "image", "mime_type": "image/jpeg", "sha256": SHA_HEX,
        "caption": "Check out my new phone!", "from": "16315551234",
    });
    assert_eq!(adapter.backfill(&reference).await.unwrap(), webhook_job);
    let err = adapter
        .backfill(&json!({"message_id": "x", "timestamp": at}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("media_id"), "{err}");
}

#[test]
fn the_rules_see_the_voice_type_and_the_group_as_the_chat() {
    let config = config(
        "https://wa.example.com:9090",
        "Secret-Pass1!",
        r#"rules = { media_types = ["image"], chats_deny = ["120363000000000000@g.us"] }"#,
    );
    let adapter = OnPrem::new(&config, api()).unwrap();
    assert_eq!(parse(&adapter, &image_webhook()).unwrap().jobs.len(), 1);
    let mut voice = image_webhook();
    voice["messages"][0]["type"] = json!("voice");
    voice["messages"][0]["voice"] =
        json!({"id": MEDIA_ID, "mime_type": "audio/ogg; codecs=opus", "sha256": SHA_HEX});
    assert_eq!(parse(&adapter, &voice).unwrap().filtered, 1);
    let mut in_group = image_webhook();
    in_group["messages"][0]["group_id"] = json!("120363000000000000@g.us");
    assert_eq!(parse(&adapter, &in_group).unwrap().filtered, 1);
}
