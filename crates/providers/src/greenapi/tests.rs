use super::*;
use crate::AccountConfig;
use crate::testing::{AuthenticateBoth as _, api, assert_reported, parse, parse_bytes};

fn adapter(webhook_token: Option<&str>) -> GreenApi {
    let config: GreenApiConfig = toml::from_str(&format!(
        r#"
        name = "green-main"
        id_instance = 1101000001
        api_token = "api-token-123"
        {}
        "#,
        webhook_token
            .map(|t| format!("webhook_token = \"{t}\""))
            .unwrap_or_else(|| "allow_unauthenticated_webhooks = true".into())
    ))
    .unwrap();
    GreenApi::new(&config, api()).unwrap()
}

fn image_webhook() -> Value {
    json!({
        "typeWebhook": "incomingMessageReceived",
        "instanceData": {"idInstance": 1101000001, "wid": "79001234567@c.us", "typeInstance": "whatsapp"},
        "timestamp": 1_700_000_000,
        "idMessage": "A322F800D3F12CD4858CC947DAFB77A2",
        "senderData": {"chatId": "79001234568@c.us", "chatName": "Ann", "sender": "79001234568@c.us", "senderName": "Ann"},
        "messageData": {
            "typeMessage": "imageMessage",
            "fileMessageData": {
                "downloadUrl": "https://sw-media.storage.yandexcloud.net/1101000001/a6679d42.jpg",
                "caption": "look", "fileName": "a6679d42.jpg", "jpegThumbnail": "",
                "mimeType": "image/jpeg", "isForwarded": false, "forwardingScore": 0
            }
        }
    })
}

#[test]
fn an_incoming_image_becomes_one_job_keyed_by_message_id() {
    let parsed = parse(&adapter(None), &image_webhook()).unwrap();
    assert_eq!(parsed.ignored, 0);
    let [job] = parsed.jobs.as_slice() else {
        panic!("one job expected")
    };
    assert_eq!(job.id, "green-main:A322F800D3F12CD4858CC947DAFB77A2");
    assert_eq!(job.message_id, "A322F800D3F12CD4858CC947DAFB77A2");
    assert_eq!(job.message_at, 1_700_000_000_000);
    assert_eq!(job.deadline, 1_700_000_000_000 + 14 * 86_400_000);
    assert_eq!(
        job.payload["download_url"],
        "https://sw-media.storage.yandexcloud.net/1101000001/a6679d42.jpg"
    );
    assert_eq!(job.payload["mime_type"], "image/jpeg");
}

#[test]
fn every_file_type_and_direction_is_archived() {
    let adapter = adapter(None);
    for type_webhook in FILE_WEBHOOKS {
        for type_message in FILE_MESSAGES {
            let mut body = image_webhook();
            body["typeWebhook"] = json!(type_webhook);
            body["messageData"]["typeMessage"] = json!(type_message);
            assert_eq!(
                parse(&adapter, &body).unwrap().jobs.len(),
                1,
                "{type_webhook} {type_message}"
            );
        }
    }
}

#[test]
fn texts_statuses_and_other_events_are_ignored() {
    let adapter = adapter(None);
    let mut text = image_webhook();
    text["messageData"] =
        json!({"typeMessage": "textMessage", "textMessageData": {"textMessage": "hi"}});
    let status =
        json!({"typeWebhook": "outgoingMessageStatus", "status": "read", "idMessage": "X"});
    let state = json!({"typeWebhook": "stateInstanceChanged", "stateInstance": "authorized"});
    for body in [text, status, state] {
        assert_eq!(
            parse(&adapter, &body).unwrap(),
            ParsedWebhook {
                ignored: 1,
                ..ParsedWebhook::default()
            }
        );
    }
}

#[test]
fn malformed_payloads_are_rejected_naming_the_field() {
    let adapter = adapter(None);
    let err = parse_bytes(&adapter, b"{not json").unwrap_err();
    assert!(err.to_string().contains("malformed JSON"), "{err}");

    for (pointer, field) in [
        ("/typeWebhook", "typeWebhook"),
        ("/idMessage", "idMessage"),
        ("/timestamp", "timestamp"),
        ("/senderData/chatId", "senderData.chatId"),
        (
            "/messageData/fileMessageData",
            "messageData.fileMessageData",
        ),
    ] {
        let mut body = image_webhook();
        *body.pointer_mut(pointer).unwrap() = Value::Null;
        let err = parse(&adapter, &body).unwrap_err();
        assert!(matches!(err, ProviderError::BadPayload(_)));
        assert!(err.to_string().contains(field), "{pointer}: {err}");
    }
}

#[test]
fn a_webhook_for_another_instance_is_rejected() {
    let mut body = image_webhook();
    body["instanceData"]["idInstance"] = json!(999);
    let err = parse(&adapter(None), &body).unwrap_err();
    assert!(err.to_string().contains("idInstance"), "{err}");
}

#[test]
fn webhook_token_is_checked_when_configured() {
    let with_token = adapter(Some("hook-secret"));
    let none = http::HeaderMap::new();
    let mut good = http::HeaderMap::new();
    good.insert(
        http::header::AUTHORIZATION,
        "Bearer hook-secret".parse().unwrap(),
    );
    let req = |h| WebhookRequest {
        headers: h,
        query: None,
        body: b"{}",
    };
    assert!(with_token.authenticate(&req(&none)).is_err());
    assert!(with_token.authenticate(&req(&good)).is_ok());
    assert!(adapter(None).authenticate(&req(&none)).is_ok());
    assert!(with_token.webhook_auth_configured());
    assert!(!adapter(None).webhook_auth_configured());
}

fn config(extra: &str) -> AccountConfig {
    toml::from_str(&format!(
        "provider = \"greenapi\"\nname = \"green-main\"\nid_instance = 1101000001\napi_token = \"t\"\n{extra}"
    ))
    .unwrap()
}

fn build(extra: &str) -> Result<std::sync::Arc<dyn Provider>, Vec<String>> {
    crate::build(&config(extra), &api())
}

#[test]
fn webhook_token_is_required_unless_unauthenticated_webhooks_are_allowed_on_purpose() {
    let errors = build("").unwrap_err();
    assert_eq!(
        errors,
        ["webhook_token: required (or set allow_unauthenticated_webhooks = true)"]
    );
    let open = build("allow_unauthenticated_webhooks = true").unwrap();
    assert!(!open.webhook_auth_configured(), "check-config warns");
    let closed = build("webhook_token = \"hook-secret\"").unwrap();
    assert!(closed.webhook_auth_configured());
    // An empty token would accept `Authorization: Bearer ` from anyone.
    let errors = build("webhook_token = \"\"").unwrap_err();
    assert_eq!(errors, ["webhook_token: secret is empty"]);
}

#[test]
fn credentials_are_checked_from_the_request_head_before_any_body() {
    let adapter = adapter(Some("hook-secret"));
    let err = adapter
        .authenticate_head(&http::HeaderMap::new(), None)
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unauthorized(_)), "{err}");
    let mut good = http::HeaderMap::new();
    good.insert(
        http::header::AUTHORIZATION,
        "Bearer hook-secret".parse().unwrap(),
    );
    assert!(adapter.authenticate_head(&good, None).is_ok());
}

#[test]
fn every_config_problem_is_reported_at_once() {
    let config: AccountConfig = toml::from_str(
        "provider = \"greenapi\"\nname = \"green-main\"\nid_instance = \"11/01\"\napi_token = \"t\"\napi_url = \"ftp://api.green-api.com\"\nallowed_download_hosts = [\"*.storage.yandexcloud.net\", \"\"]\n",
    )
    .unwrap();
    let errors = crate::build(&config, &api()).unwrap_err();
    assert_reported(
        &errors,
        &[
            "webhook_token:",
            "api_url: must be an http(s) URL",
            "allowed_download_hosts[1]:",
            "id_instance",
        ],
    );
}

#[test]
fn an_allowed_download_host_that_names_no_host_is_a_config_error_naming_it() {
    for junk in ["", ".", "*."] {
        let errors = build(&format!(
            "webhook_token = \"t\"\nallowed_download_hosts = [\"{junk}\"]"
        ))
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("allowed_download_hosts[0]: {junk:?} ")),
            "{errors:?}"
        );
    }
}

#[test]
fn default_download_hosts_are_green_api_s_storage_not_all_of_yandex_cloud() {
    let adapter = adapter(None);
    assert!(adapter.hosts.allows("sw-media.storage.yandexcloud.net"));
    assert!(
        adapter
            .hosts
            .allows("sw-media-1101.storage.yandexcloud.net")
    );
    assert!(adapter.hosts.allows("4100.api.green-api.com"));
    assert!(!adapter.hosts.allows("attacker.website.yandexcloud.net"));
    assert!(!adapter.hosts.allows("functions.yandexcloud.net"));
}

/// Midday 2023-11-14 (UTC), on a clock that stays there.
const NOW_MS: i64 = 1_700_000_000_000;

fn on_clock(adapter: GreenApi) -> GreenApi {
    adapter.with_clock(std::sync::Arc::new(archiver_core::ManualClock::new(NOW_MS)))
}

#[test]
fn a_job_is_due_retention_after_the_earlier_of_message_time_and_arrival() {
    let adapter = on_clock(adapter(None));
    let retention = 14 * 86_400_000;
    // Sent an hour before it arrived: counted from the message.
    let mut body = image_webhook();
    body["timestamp"] = json!(NOW_MS / 1000 - 3_600);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    assert_eq!(job.deadline, NOW_MS - 3_600_000 + retention);
    // Dated ten years ahead: counted from arrival, not ten years on.
    body["timestamp"] = json!(NOW_MS / 1000 + 3_650 * 86_400);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    assert_eq!(job.message_at, NOW_MS + 3_650 * 86_400_000);
    assert_eq!(job.deadline, NOW_MS + retention);
}

#[test]
fn absurd_timestamps_are_refused_naming_the_field() {
    let adapter = on_clock(adapter(None));
    for bad in [
        json!(i64::MAX),
        json!(9_223_372_036_854_775u64),
        json!(1_700_000_000_000u64),
        json!(1_230_767_999),
        json!(0),
        json!(-5),
        json!(1_700_000_000.5),
        json!("soon"),
        json!({}),
    ] {
        let mut body = image_webhook();
        body["timestamp"] = bad.clone();
        let err = parse(&adapter, &body).unwrap_err();
        assert!(matches!(err, ProviderError::BadPayload(_)), "{bad}: {err}");
        assert!(err.to_string().contains("`timestamp`"), "{bad}: {err}");
    }
}

#[test]
fn ids_no_store_can_hold_are_refused_naming_the_field() {
    let adapter = adapter(None);
    for (pointer, bad) in [
        ("/idMessage", "A".repeat(251)),
        ("/idMessage", "../../etc".to_owned() + &"%".repeat(90)),
        ("/idMessage", "A B".to_owned()),
        ("/idMessage", "..".to_owned()),
        ("/senderData/chatId", "7@c.us\n".to_owned()),
        ("/senderData/chatId", "@".repeat(84)),
    ] {
        let mut body = image_webhook();
        *body.pointer_mut(pointer).unwrap() = json!(bad);
        let err = parse(&adapter, &body).unwrap_err();
        assert!(
            matches!(err, ProviderError::BadPayload(_)),
            "{bad:?}: {err}"
        );
        let field = pointer.trim_start_matches('/').replace('/', ".");
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
    }
    // The longest id a store can hold passes.
    let mut body = image_webhook();
    body["idMessage"] = json!("A".repeat(250));
    assert_eq!(parse(&adapter, &body).unwrap().jobs.len(), 1);
}

#[test]
fn error_codes_are_classified_as_documented() {
    let permanent = ErrorClass::Permanent;
    let transient = ErrorClass::Transient;
    assert_eq!(classify(400, "Validation failed", None, 1), permanent);
    assert_eq!(
        classify(
            400,
            "File message encrypted url not found by chatId 1@c.us and idMessage X",
            None,
            1
        ),
        permanent
    );
    assert_eq!(classify(401, "", None, 1), permanent);
    assert_eq!(classify(403, "", None, 1), permanent);
    assert_eq!(classify(466, "", None, 1), permanent);
    assert_eq!(classify(429, "", None, 1), transient);
    assert_eq!(
        classify(429, "", Some(Duration::from_secs(3)), 1),
        ErrorClass::RetryAfter(Duration::from_secs(3))
    );
    assert_eq!(
        classify(400, "instance in starting process try later", None, 9),
        transient
    );
    assert_eq!(classify(502, "", None, 9), transient);
    assert_eq!(
        classify(400, "Message not found by id 'X'", None, 1),
        transient
    );
    assert_eq!(
        classify(400, "Message not found by id 'X'", None, NOT_FOUND_PATIENCE),
        permanent
    );
    let internal = "Internal error when downloading file by chatId 1@c.us idMessage X";
    assert_eq!(classify(500, internal, None, 1), transient);
    assert_eq!(
        classify(500, internal, None, INTERNAL_ERROR_PATIENCE),
        permanent
    );
}

#[test]
fn api_urls_carry_the_token_in_the_path() {
    let url = adapter(None).method_url("downloadFile");
    assert_eq!(
        url.as_str(),
        "https://api.green-api.com/waInstance1101000001/downloadFile/api-token-123"
    );
}

#[tokio::test]
async fn swe002_is_permanent_without_any_network_call() {
    let mut body = image_webhook();
    body["messageData"]["fileMessageData"]["downloadUrl"] = json!("{{SWE002}}");
    let adapter = adapter(None);
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    let err = adapter
        .resolve(JobRef {
            message_id: &job.message_id,
            media_id: None,
            payload: &job.payload,
            attempt: 1,
            last_error: None,
            link_dead: false,
        })
        .await
        .unwrap_err();
    assert_eq!(archiver_core::Classify::class(&err), ErrorClass::Permanent);
    assert!(err.to_string().contains("SWE002"));
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_backfill_reference_with_a_timestamp_makes_the_webhook_s_job_without_a_call() {
    let adapter = adapter(None);
    let at = now_secs() - 3600;
    let job = adapter
        .backfill(&json!({
            "chatId": "79001234568@c.us",
            "idMessage": "BACKFILL1",
            "timestamp": at,
            "typeMessage": "imageMessage",
            "statusMessage": "delivered",
        }))
        .await
        .unwrap();
    let mut hook = image_webhook();
    hook["idMessage"] = json!("BACKFILL1");
    hook["timestamp"] = json!(at);
    let webhook_job = &parse(&adapter, &hook).unwrap().jobs[0];
    assert_eq!(
        job.id, webhook_job.id,
        "same id: webhook and backfill dedupe"
    );
    assert_eq!(job.message_at, at * 1000);
    assert_eq!(job.deadline, webhook_job.deadline);
    assert_eq!(job.payload["chat_id"], "79001234568@c.us");
    assert_eq!(job.payload["type_message"], "imageMessage");
    assert_eq!(
        job.payload["mime_type"],
        Value::Null,
        "the worker asks getMessage"
    );
}

#[tokio::test]
async fn bad_backfill_references_are_refused_with_the_field_named() {
    let adapter = adapter(None);
    let recent = now_secs() - 60;
    let cases = [
        (json!(["not", "an", "object"]), "JSON object"),
        (json!({"idMessage": "X", "timestamp": recent}), "chatId"),
        (
            json!({"chatId": "1@c.us", "timestamp": recent}),
            "idMessage",
        ),
        (
            json!({"chatId": "1@c.us", "idMessage": "X", "timestamp": "yesterday"}),
            "timestamp",
        ),
        (
            json!({"chatId": "1@c.us", "idMessage": "X", "timestamp": recent, "typeMessage": "textMessage"}),
            "carries no file",
        ),
        (
            json!({"chatId": "1@c.us", "idMessage": "X", "timestamp": 1_600_000_000}),
            "retention (14 days)",
        ),
    ];
    for (reference, expected) in cases {
        let err = adapter.backfill(&reference).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{reference}: {err}");
    }
}

#[tokio::test]
async fn a_backfill_reference_without_a_timestamp_asks_get_message() {
    use test_support::green_api::FakeGreenApi;
    let fake = FakeGreenApi::start().await;
    let url = fake.add_file(
        "79001234568@c.us",
        "ASKED1",
        b"%PDF".to_vec(),
        "application/pdf",
        "a.pdf",
    );
    let config: GreenApiConfig = toml::from_str(&format!(
        "name = \"green-main\"\napi_url = \"{}\"\nid_instance = \"{}\"\napi_token = \"{}\"\nwebhook_token = \"t\"\n",
        fake.base_url(),
        fake.id_instance(),
        fake.api_token()
    ))
    .unwrap();
    let adapter = GreenApi::new(&config, api()).unwrap();
    let job = adapter
        .backfill(&json!({"chatId": "79001234568@c.us", "idMessage": "ASKED1"}))
        .await
        .unwrap();
    assert_eq!(fake.get_message_calls(), 1);
    assert_eq!(job.id, "green-main:ASKED1");
    assert!(
        (job.message_at / 1000 - now_secs()).abs() < 60,
        "the message's own time"
    );
    assert_eq!(job.payload["mime_type"], "application/pdf");
    assert_eq!(job.payload["type_message"], "documentMessage");
    assert_eq!(job.payload["download_url"], url.as_str());

    let err = adapter
        .backfill(&json!({"chatId": "79001234568@c.us", "idMessage": "NOPE"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Message not found"), "{err}");
}

fn ruled(rules: &str) -> GreenApi {
    let config: GreenApiConfig = toml::from_str(&format!(
        r#"
        name = "green-main"
        id_instance = 1101000001
        api_token = "api-token-123"
        allow_unauthenticated_webhooks = true
        rules = {{ {rules} }}
        "#
    ))
    .unwrap();
    GreenApi::new(&config, api()).unwrap()
}

#[test]
fn the_rules_see_the_webhook_type_the_message_type_and_the_chat() {
    let incoming = ruled(r#"directions = ["incoming"]"#);
    for (type_webhook, jobs, filtered) in [
        ("incomingMessageReceived", 1, 0),
        ("outgoingMessageReceived", 0, 1),
        ("outgoingAPIMessageReceived", 0, 1),
    ] {
        let mut body = image_webhook();
        body["typeWebhook"] = json!(type_webhook);
        let parsed = parse(&incoming, &body).unwrap();
        assert_eq!(
            (parsed.jobs.len(), parsed.filtered, parsed.ignored),
            (jobs, filtered, 0),
            "{type_webhook}"
        );
    }
    let mut outgoing = image_webhook();
    outgoing["typeWebhook"] = json!("outgoingMessageReceived");
    let job = &parse(&adapter(None), &outgoing).unwrap().jobs[0];
    assert_eq!(job.payload["direction"], "outgoing");

    // Green API does not tell a voice note from an audio file.
    let audio_only = ruled(r#"media_types = ["audio"]"#);
    let mut audio = image_webhook();
    audio["messageData"]["typeMessage"] = json!("audioMessage");
    assert_eq!(parse(&audio_only, &audio).unwrap().jobs.len(), 1);
    assert_eq!(parse(&audio_only, &image_webhook()).unwrap().filtered, 1);

    let denied = ruled(r#"chats_deny = ["79001234568@c.us"]"#);
    assert_eq!(parse(&denied, &image_webhook()).unwrap().filtered, 1);
}
