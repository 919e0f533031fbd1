use super::*;
use crate::testing::{AuthenticateBoth as _, SHA_HEX, a_minute_ago, api, assert_reported, parse};
use std::sync::Arc;

const SECRET: &str = "test-secret";

/// The clock of every adapter here: 123 ms after the `ts` the signed
/// headers carry.
const NOW_MS: i64 = 1_700_000_000_246;

/// An adapter that verifies webhooks (the default), or one whose account
/// set `allow_unauthenticated_webhooks = true`.
fn adapter(verify: bool) -> Nxcloud {
    let config: NxcloudConfig = toml::from_str(&format!(
        r#"
        name = "nx"
        access_key = "fme2na3kdi3ki"
        access_secret = "{SECRET}"
        business_phone = "+86 158 0000 1795"
        {}
        "#,
        if verify {
            ""
        } else {
            "allow_unauthenticated_webhooks = true"
        }
    ))
    .unwrap();
    Nxcloud::new(&config, api())
        .unwrap()
        .with_clock(Arc::new(archiver_core::ManualClock::new(NOW_MS)))
}

fn image_webhook() -> Value {
    json!({
        "business_phone": "8615800001795",
        "messaging_product": "whatsapp",
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": "6281234567890"}],
        "messages": [{
            "from": "6281234567890",
            "id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjBDMEYxRjM5",
            "timestamp": "1700000000",
            "type": "image",
            "image": {
                "id": "fd81acff-eea8-4d9d-acc9-6c62904d6615",
                "mime_type": "image/jpeg",
                "caption": "look"
            }
        }]
    })
}

#[test]
fn the_signature_matches_an_independent_md5() {
    // Computed with Python's hashlib over the documented string.
    let headers = [
        ("ts", "1655710885431"),
        ("bizType", "2"),
        ("accessKey", "fme2na3kdi3ki"),
        ("action", "getMedia"),
    ];
    let body = br#"{"business_phone":"86158xxxx1795","messaging_product":"whatsapp","Media-ID":"fd81acff-eea8-4d9d-acc9-6c62904d6615"}"#;
    assert_eq!(
        sign(&headers, body, SECRET, SignAlgorithm::Md5),
        "1612dc533a8fc0932d280773c0bdf2e2"
    );
    assert_eq!(
        sign(&headers, body, SECRET, SignAlgorithm::Sha256),
        "2ea3f3dbaaac18d0c73afcd88104352df45f6c9ee5b2d820936b607796b7ffea"
    );
    // An empty body leaves out `&body=`.
    assert_eq!(
        sign(&headers, b"", SECRET, SignAlgorithm::Md5),
        "387c0d95a028a06452da685fed9b6d1b"
    );
}

fn signed_headers(body: &[u8], secret: &str, algorithm: Option<&str>) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    let pairs = [
        ("accessKey", "fme2na3kdi3ki"),
        ("action", "mo"),
        ("bizType", "2"),
        ("ts", "1700000000123"),
    ];
    for (k, v) in pairs {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let alg = match algorithm {
        Some("sha256") => SignAlgorithm::Sha256,
        _ => SignAlgorithm::Md5,
    };
    if let Some(a) = algorithm {
        h.insert("algorithm", a.parse().unwrap());
    }
    h.insert("sign", sign(&pairs, body, secret, alg).parse().unwrap());
    h
}

fn check(adapter: &Nxcloud, headers: &http::HeaderMap, body: &[u8]) -> Result<(), ProviderError> {
    adapter.authenticate(&WebhookRequest {
        headers,
        query: None,
        body,
    })
}

#[test]
fn webhook_signatures_are_checked_when_configured() {
    let body = serde_json::to_vec(&image_webhook()).unwrap();
    let on = adapter(true);
    assert!(on.webhook_auth_configured());
    assert!(check(&on, &signed_headers(&body, SECRET, None), &body).is_ok());
    assert!(check(&on, &signed_headers(&body, SECRET, Some("sha256")), &body).is_ok());
    let wrong = check(&on, &signed_headers(&body, "other", None), &body).unwrap_err();
    assert!(wrong.to_string().contains("sign"), "{wrong}");
    assert!(!wrong.to_string().contains(SECRET));
    // The body is part of the signature.
    assert!(check(&on, &signed_headers(b"{}", SECRET, None), &body).is_err());
    // A header missing.
    for name in ["sign", "accessKey", "ts"] {
        let mut h = signed_headers(&body, SECRET, None);
        h.remove(name);
        let err = check(&on, &h, &body).unwrap_err();
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
    // Another account's key, even correctly signed with our secret.
    let mut h = signed_headers(&body, SECRET, None);
    h.insert("accessKey", "someone-else".parse().unwrap());
    let err = check(&on, &h, &body).unwrap_err();
    assert!(err.to_string().contains("accessKey"), "{err}");
    // An algorithm we do not know.
    let h = signed_headers(&body, SECRET, Some("sha1"));
    assert!(check(&on, &h, &body).is_err());
    // Off only on purpose: anything passes, and the daemon warns at startup.
    let off = adapter(false);
    assert!(!off.webhook_auth_configured());
    assert!(check(&off, &http::HeaderMap::new(), &body).is_ok());
}

#[test]
fn a_webhook_without_accesskey_ts_and_sign_is_refused_from_its_head_by_default() {
    let on = adapter(true);
    assert!(
        on.webhook_auth_configured(),
        "verified unless the config says otherwise"
    );
    let err = on
        .authenticate_head(&http::HeaderMap::new(), None)
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unauthorized(_)), "{err}");
    // Another account's key is refused before the body is read, too.
    let body = serde_json::to_vec(&image_webhook()).unwrap();
    let mut h = signed_headers(&body, SECRET, None);
    h.insert("accessKey", "someone-else".parse().unwrap());
    assert!(on.authenticate_head(&h, None).is_err());
    // A correct head passes; the sign itself is checked with the body.
    let h = signed_headers(&body, SECRET, None);
    assert!(on.authenticate_head(&h, None).is_ok());
    assert!(
        on.authenticate_body(&WebhookRequest {
            headers: &h,
            query: None,
            body: b"{\"tampered\":true}",
        })
        .is_err()
    );
}

#[test]
fn a_ts_more_than_five_minutes_from_the_clock_is_refused_as_a_replay() {
    let body = serde_json::to_vec(&image_webhook()).unwrap();
    let headers = signed_headers(&body, SECRET, None);
    let signed_at = 1_700_000_000_123;
    let clock = archiver_core::ManualClock::new(signed_at);
    let on = adapter(true).with_clock(Arc::new(clock.clone()));
    for (now, ok) in [
        (signed_at, true),
        (signed_at + 5 * 60_000, true),
        (signed_at - 5 * 60_000, true),
        (signed_at + 5 * 60_000 + 1, false),
        (signed_at - 5 * 60_000 - 1, false),
        (signed_at + 86_400_000, false),
    ] {
        clock.set(now);
        let result = check(&on, &headers, &body);
        assert_eq!(result.is_ok(), ok, "clock {now}: {result:?}");
        if let Err(err) = result {
            assert!(err.to_string().contains("`ts`"), "{err}");
        }
    }
    let mut h = headers.clone();
    h.insert("ts", "yesterday".parse().unwrap());
    clock.set(signed_at);
    assert!(
        check(&on, &h, &body)
            .unwrap_err()
            .to_string()
            .contains("`ts`")
    );
}

#[test]
fn an_inbound_image_becomes_one_job_keyed_by_media_id() {
    let parsed = parse(&adapter(false), &image_webhook()).unwrap();
    let [job] = parsed.jobs.as_slice() else {
        panic!("one job expected: {parsed:?}")
    };
    assert_eq!(job.id, "nx:fd81acff-eea8-4d9d-acc9-6c62904d6615");
    assert_eq!(
        job.media_id.as_deref(),
        Some("fd81acff-eea8-4d9d-acc9-6c62904d6615")
    );
    assert_eq!(
        job.message_id,
        "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjBDMEYxRjM5"
    );
    assert_eq!(job.message_at, 1_700_000_000_000);
    assert_eq!(job.deadline, 1_700_000_000_000 + 7 * 86_400_000);
    assert_eq!(job.payload["mime_type"], "image/jpeg");
    assert_eq!(job.payload["sha256"], Value::Null);
    assert_eq!(job.payload["from"], "6281234567890");
}

#[test]
fn every_media_type_is_archived_and_a_sha256_is_kept() {
    let adapter = adapter(false);
    for kind in MEDIA_TYPES {
        let mut body = image_webhook();
        let media = body["messages"][0]["image"].take();
        body["messages"][0]["type"] = json!(kind);
        body["messages"][0][kind] = media;
        body["messages"][0][kind]["sha256"] = json!(SHA_HEX);
        let parsed = parse(&adapter, &body).unwrap();
        assert_eq!(parsed.jobs.len(), 1, "{kind}");
        assert_eq!(parsed.jobs[0].payload["sha256"], SHA_HEX);
    }
}

#[test]
fn texts_statuses_and_unknown_events_are_ignored() {
    let adapter = adapter(false);
    let mut text = image_webhook();
    text["messages"][0] =
        json!({"from": "1", "id": "w", "timestamp": "1", "type": "text", "text": {"body": "hi"}});
    let statuses = json!({"business_phone": "8615800001795", "messaging_product": "whatsapp",
        "statuses": [{"id": "w", "status": "read"}, {"id": "v", "status": "sent"}]});
    let other = json!({"event": "template_status_update"});
    assert_eq!(parse(&adapter, &text).unwrap().ignored, 1);
    assert_eq!(parse(&adapter, &statuses).unwrap().ignored, 2);
    assert_eq!(parse(&adapter, &other).unwrap().ignored, 1);
}

#[test]
fn wrong_shapes_are_refused_naming_the_field() {
    let adapter = adapter(false);
    for (pointer, value, named) in [
        ("/messages/0/image/id", Value::Null, "messages[0].image.id"),
        ("/messages/0/id", Value::Null, "messages[0].id"),
        (
            "/messages/0/timestamp",
            Value::Null,
            "messages[0].timestamp",
        ),
        ("/messages/0/type", Value::Null, "messages[0].type"),
        ("/messages/0/image", Value::Null, "messages[0].image"),
        ("/messages", json!({}), "messages"),
        ("/business_phone", json!("8615800009999"), "business_phone"),
    ] {
        let mut body = image_webhook();
        *body.pointer_mut(pointer).unwrap() = value;
        let err = parse(&adapter, &body).unwrap_err();
        assert!(matches!(err, ProviderError::BadPayload(_)), "{pointer}");
        assert!(err.to_string().contains(named), "{pointer}: {err}");
    }
    let mut body = image_webhook();
    body["messages"][0]["image"]["sha256"] = json!("zz");
    let err = parse(&adapter, &body).unwrap_err();
    assert!(
        err.to_string().contains("messages[0].image.sha256"),
        "{err}"
    );
    let meta = json!({"object": "whatsapp_business_account", "entry": []});
    let err = parse(&adapter, &meta).unwrap_err();
    assert!(err.to_string().contains("entry"), "{err}");
}

#[test]
fn result_codes_are_classified_as_documented() {
    for code in [1000, 1001, 1005, 9000, 9002, 9006] {
        assert_eq!(classify_code(code), ErrorClass::Permanent, "{code}");
    }
    for code in [-1, 9001, 4242] {
        assert_eq!(classify_code(code), ErrorClass::Transient, "{code}");
    }
    assert_eq!(classify_status(502, None), ErrorClass::Transient);
    assert_eq!(
        classify_status(429, Some(Duration::from_secs(2))),
        ErrorClass::RetryAfter(Duration::from_secs(2))
    );
    assert_eq!(classify_status(401, None), ErrorClass::Permanent);
}

#[test]
fn oss_link_expiry_is_read_from_the_query() {
    let url = url::Url::parse("https://goss.oss-cn-hongkong.aliyuncs.com/1b0a?Expires=1663747602&OSSAccessKeyId=LTAI&Signature=EW1K%3D").unwrap();
    assert_eq!(link_expiry(&url), Some(1_663_747_602));
    assert_eq!(
        link_expiry(&url::Url::parse("https://x.aliyuncs.com/a").unwrap()),
        None
    );
}

#[test]
fn config_errors_are_all_reported_and_unknown_keys_refused() {
    let config: NxcloudConfig = toml::from_str(
        r#"
        name = "nx"
        api_url = "not a url"
        access_key = " "
        access_secret = { env = "MEDIA_ARCHIVER_TEST_SURELY_UNSET" }
        business_phone = "+"
        "#,
    )
    .unwrap();
    let errors = Nxcloud::new(&config, api()).unwrap_err();
    assert_reported(
        &errors,
        &["api_url", "access_key", "access_secret", "business_phone"],
    );
    // Left out, both are named, with everything else wrong at once.
    let config: NxcloudConfig = toml::from_str(
        "name = \"nx\"\nbusiness_phone = \"+\"\nallowed_download_hosts = [\"*.\"]\n",
    )
    .unwrap();
    let errors = Nxcloud::new(&config, api()).unwrap_err();
    assert_reported(
        &errors,
        &[
            "access_key: required",
            "access_secret: required",
            "business_phone",
            "allowed_download_hosts[0]",
        ],
    );
    let unknown = toml::from_str::<NxcloudConfig>(
        "name = \"nx\"\naccess_key = \"k\"\naccess_secret = \"s\"\nbusiness_phone = 1\napp_id = 3\n",
    );
    assert!(unknown.unwrap_err().to_string().contains("app_id"));
}

#[tokio::test]
async fn a_backfill_reference_makes_the_webhook_s_job() {
    let adapter = adapter(false);
    let at = a_minute_ago();
    let mut hook = image_webhook();
    hook["messages"][0]["timestamp"] = json!(at.to_string());
    let webhook_job = parse(&adapter, &hook).unwrap().jobs.remove(0);
    let message = &hook["messages"][0];
    let reference = json!({
        "media_id": message["image"]["id"], "message_id": message["id"], "timestamp": at,
        "type": "image", "mime_type": "image/jpeg", "caption": "look",
        "from": "6281234567890",
    });
    assert_eq!(
        adapter.backfill(&reference).await.unwrap(),
        webhook_job,
        "same id and payload: a webhook and a backfill of one message dedupe"
    );

    let old = json!({"media_id": "m-1", "message_id": "wamid.old", "timestamp": 1_600_000_000});
    let err = adapter.backfill(&old).await.unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");
    let err = adapter
        .backfill(&json!({"message_id": "wamid.x", "timestamp": at}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("media_id"), "{err}");
}
