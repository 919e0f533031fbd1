use super::*;
use crate::testing::{
    AuthenticateBoth as _, ENC_B64, KEY_B64, SHA_B64, SHA_HEX, a_minute_ago, assert_reported,
    attempt, backfilling_the_data_makes_the_webhook_s_job, fetch, indexed, parse,
};

const JWT_SECRET: &str = "jwt-key-of-the-instance";

/// An adapter with `extra` config; without webhook credentials in `extra`,
/// one whose account allows unauthenticated webhooks.
fn adapter(extra: &str) -> Evolution {
    let open = if extra.contains("webhook_") {
        ""
    } else {
        "allow_unauthenticated_webhooks = true"
    };
    let config: EvolutionConfig = toml::from_str(&format!(
        r#"
        name = "evo"
        api_url = "http://127.0.0.1:8080"
        instance = "main"
        api_key = "evo-api-key"
        {extra}
        {open}
        "#
    ))
    .unwrap();
    Evolution::new(&config).unwrap()
}

fn image_webhook() -> Value {
    json!({
        "event": "messages.upsert",
        "instance": "main",
        "data": {
            "key": {"remoteJid": "5511988887777@s.whatsapp.net", "fromMe": false, "id": "3EB0A1B2C3D4E5F60718"},
            "pushName": "Ann",
            "status": "DELIVERY_ACK",
            "message": {
                "imageMessage": {
                    "url": "https://mmg.whatsapp.net/v/t62.7118-24/1_n.enc?ccb=11-4&oe=652D4E40&mms3=true",
                    "mimetype": "image/jpeg",
                    "fileSha256": indexed(SHA_B64),
                    "fileLength": "12345",
                    "mediaKey": indexed(KEY_B64),
                    "fileEncSha256": indexed(ENC_B64),
                    "directPath": "/v/t62.7118-24/1_n.enc?ccb=11-4&oe=652D4E40",
                    "mediaKeyTimestamp": "1701768972"
                },
                "messageContextInfo": {}
            },
            "messageType": "imageMessage",
            "messageTimestamp": 1_700_000_000,
            "instanceId": "4f6c3d2e-0000-4000-8000-000000000000",
            "source": "android"
        },
        "destination": "https://archiver.example/webhooks/evo",
        "date_time": "2023-11-14T22:13:20.000Z",
        "sender": "5511900000000@s.whatsapp.net",
        "server_url": "http://127.0.0.1:8080",
        "apikey": null
    })
}

#[test]
fn an_index_keyed_image_becomes_one_job_keyed_by_key_id() {
    let parsed = parse(&adapter(""), &image_webhook()).unwrap();
    let [job] = parsed.jobs.as_slice() else {
        panic!("one job expected: {parsed:?}")
    };
    assert_eq!(job.id, "evo:3EB0A1B2C3D4E5F60718");
    assert_eq!(job.provider, ProviderKind::Evolution);
    assert_eq!(job.deadline, 1_700_000_000_000 + 14 * 86_400_000);
    let stub = &job.payload["stub"];
    assert_eq!(
        stub["media_key"], KEY_B64,
        "decoded from the index-keyed object"
    );
    assert_eq!(stub["file_sha256"], SHA_HEX);
    assert_eq!(stub["file_length"], 12345);
    assert_eq!(job.payload["key"]["id"], "3EB0A1B2C3D4E5F60718");
    assert!(job.payload["message"]["imageMessage"].is_object());
    assert_eq!(job.payload["inline_base64"], Value::Null);
}

#[test]
fn every_media_type_is_found_even_without_message_type() {
    let adapter = adapter("");
    for t in [
        "videoMessage",
        "audioMessage",
        "documentMessage",
        "stickerMessage",
        "ptvMessage",
    ] {
        let mut body = image_webhook();
        let media = body["data"]["message"]["imageMessage"].take();
        body["data"]["message"] = json!({ t: media });
        body["data"].as_object_mut().unwrap().remove("messageType");
        let job = parse(&adapter, &body).unwrap().jobs.remove(0);
        assert_eq!(job.payload["stub"]["message_type"], t);
    }
}

#[test]
fn texts_reactions_and_other_events_are_ignored() {
    let adapter = adapter("");
    let mut text = image_webhook();
    text["data"]["message"] = json!({"conversation": "hi"});
    text["data"]["messageType"] = json!("conversation");
    let update = json!({"event": "messages.update", "instance": "main", "data": {}});
    let qr = json!({"event": "qrcode.updated", "instance": "main"});
    for body in [text, update, qr] {
        let parsed = parse(&adapter, &body).unwrap();
        assert_eq!((parsed.jobs.len(), parsed.ignored), (0, 1), "{body}");
    }
}

#[test]
fn malformed_payloads_are_rejected_naming_the_field() {
    let adapter = adapter("");
    for (pointer, field) in [
        ("/event", "event"),
        ("/data", "data"),
        ("/data/key", "data.key"),
        ("/data/key/id", "data.key.id"),
        ("/data/messageTimestamp", "data.messageTimestamp"),
        (
            "/data/message/imageMessage/mediaKey",
            "data.message.imageMessage.mediaKey",
        ),
        (
            "/data/message/imageMessage/fileSha256",
            "data.message.imageMessage.fileSha256",
        ),
        (
            "/data/message/imageMessage/fileEncSha256",
            "data.message.imageMessage.fileEncSha256",
        ),
    ] {
        let mut body = image_webhook();
        *body.pointer_mut(pointer).unwrap() = Value::Null;
        let err = parse(&adapter, &body).unwrap_err();
        assert!(matches!(err, ProviderError::BadPayload(_)), "{pointer}");
        assert!(err.to_string().contains(field), "{pointer}: {err}");
    }
    let mut body = image_webhook();
    body["data"]["message"]["base64"] = json!("*** not base64 ***");
    let err = parse(&adapter, &body).unwrap_err();
    assert!(err.to_string().contains("data.message.base64"), "{err}");
}

#[test]
fn a_webhook_for_another_instance_is_refused() {
    let mut body = image_webhook();
    body["instance"] = json!("other");
    let err = parse(&adapter(""), &body).unwrap_err();
    assert!(err.to_string().contains("instance"), "{err}");
}

#[tokio::test]
async fn inline_base64_is_used_without_downloading() {
    let adapter = adapter("");
    let mut body = image_webhook();
    // With the file inline, the key and the CDN path are not needed.
    for key in ["mediaKey", "fileEncSha256", "directPath", "url"] {
        body["data"]["message"]["imageMessage"]
            .as_object_mut()
            .unwrap()
            .remove(key);
    }
    body["data"]["message"]["base64"] = json!("3q2+7w==");
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    let resolved = fetch(&adapter, attempt(&job, 1)).await;
    let MediaSource::Inline(bytes) = &resolved.source else {
        panic!("inline bytes")
    };
    assert_eq!(bytes.as_ref(), [0xde, 0xad, 0xbe, 0xef]);
    assert!(resolved.encryption.is_none());
    assert_eq!(
        resolved.expected_sha256.unwrap().to_hex(),
        SHA_HEX,
        "checked against fileSha256"
    );
}

#[tokio::test]
async fn direct_mode_fetches_the_encrypted_blob_from_the_cdn() {
    let adapter = adapter(r#"cdn_url = "http://127.0.0.1:9999""#);
    let job = parse(&adapter, &image_webhook()).unwrap().jobs.remove(0);
    let resolved = fetch(&adapter, attempt(&job, 1)).await;
    let MediaSource::Download { request, hosts } = &resolved.source else {
        panic!("a download")
    };
    assert_eq!(
        request.url.as_str(),
        "http://127.0.0.1:9999/v/t62.7118-24/1_n.enc?ccb=11-4&oe=652D4E40"
    );
    assert!(hosts.allows("127.0.0.1"));
    let media = resolved.encryption.unwrap();
    assert_eq!(media.media_type, whatsapp_media::MediaType::Image);
    assert_eq!(media.file_length, Some(12345));
}

fn jwt(secret: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims =
        json!({"iat": now, "exp": now + exp_offset, "app": "evolution", "action": "webhook"});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    h
}

#[test]
fn the_webhook_jwt_is_verified_when_a_secret_is_set() {
    let adapter = adapter(&format!(
        "webhook_jwt_secret = \"{JWT_SECRET}\"\nwebhook_token = \"ignored-when-jwt-is-set\""
    ));
    let check = |headers: &http::HeaderMap| {
        adapter.authenticate(&WebhookRequest {
            headers,
            query: None,
            body: b"{}",
        })
    };
    assert!(adapter.webhook_auth_configured());
    assert!(check(&bearer(&jwt(JWT_SECRET, 600))).is_ok());
    for (headers, why) in [
        (bearer(&jwt(JWT_SECRET, -600)), "expired"),
        (bearer(&jwt("another-key", 600)), "signature"),
        (bearer("not.a.jwt"), "malformed"),
        (bearer("ignored-when-jwt-is-set"), "malformed"),
        (http::HeaderMap::new(), "missing"),
    ] {
        let err = check(&headers).unwrap_err();
        assert!(matches!(err, ProviderError::Unauthorized(_)));
        assert!(err.to_string().contains(why), "{why}: {err}");
        assert!(!err.to_string().contains(JWT_SECRET));
    }
    // An HS256 token without `exp` is refused too.
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"app": "evolution"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    assert!(check(&bearer(&no_exp)).is_err());
}

#[test]
fn without_a_jwt_secret_the_webhook_token_is_checked() {
    let adapter = adapter("webhook_token = \"hook-secret\"");
    let check = |headers: &http::HeaderMap, query| {
        adapter.authenticate(&WebhookRequest {
            headers,
            query,
            body: b"{}",
        })
    };
    assert!(check(&bearer("hook-secret"), None).is_ok());
    assert!(check(&http::HeaderMap::new(), Some("token=hook-secret")).is_ok());
    assert!(check(&bearer("nope"), None).is_err());
    let open = self::adapter("");
    assert!(!open.webhook_auth_configured());
}

#[test]
fn a_jwt_secret_or_a_token_is_required_unless_allowed_on_purpose() {
    let config: EvolutionConfig = toml::from_str(
        "name = \"evo\"\napi_url = \"http://x\"\ninstance = \"main\"\napi_key = \"k\"\n",
    )
    .unwrap();
    assert_eq!(
        Evolution::new(&config).unwrap_err(),
        [
            "webhook_jwt_secret: required (or webhook_token, or set allow_unauthenticated_webhooks = true)"
        ]
    );
}

#[test]
fn config_errors_are_all_reported() {
    let config: EvolutionConfig = toml::from_str(
        r#"
        name = "evo"
        api_url = "nope"
        instance = "a/b"
        api_key = { file = "/surely/not/here" }
        webhook_jwt_secret = { env = "MEDIA_ARCHIVER_TEST_SURELY_UNSET" }
        "#,
    )
    .unwrap();
    let errors = Evolution::new(&config).unwrap_err();
    assert_reported(
        &errors,
        &["api_url", "instance", "api_key", "webhook_jwt_secret"],
    );
}

#[tokio::test]
async fn a_backfill_record_makes_the_webhook_s_job() {
    backfilling_the_data_makes_the_webhook_s_job(&adapter(""), image_webhook()).await;
}

#[tokio::test]
async fn backfill_refuses_texts_bad_records_and_expired_media() {
    let adapter = adapter("");
    let mut text = image_webhook()["data"].clone();
    text["messageTimestamp"] = json!(a_minute_ago());
    text["message"] = json!({"conversation": "hello"});
    text["messageType"] = json!("conversation");
    let err = adapter.backfill(&text).await.unwrap_err();
    assert!(err.to_string().contains("not a media message"), "{err}");

    let mut keyless = image_webhook()["data"].clone();
    keyless["messageTimestamp"] = json!(a_minute_ago());
    keyless["key"]["id"] = Value::Null;
    let err = adapter.backfill(&keyless).await.unwrap_err();
    assert!(err.to_string().contains("reference.key.id"), "{err}");

    let old = image_webhook()["data"].clone();
    let err = adapter.backfill(&old).await.unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");
}

#[test]
fn the_rules_see_from_me_and_the_chat() {
    let incoming = adapter(r#"rules = { directions = ["incoming"] }"#);
    assert_eq!(parse(&incoming, &image_webhook()).unwrap().jobs.len(), 1);
    let mut own = image_webhook();
    own["data"]["key"]["fromMe"] = json!(true);
    let parsed = parse(&incoming, &own).unwrap();
    assert_eq!((parsed.jobs.len(), parsed.filtered), (0, 1));
    let job = &parse(&adapter(""), &own).unwrap().jobs[0];
    assert_eq!(job.payload["direction"], "outgoing");

    let only_others = adapter(r#"rules = { chats_allow = ["120363000000000000@g.us"] }"#);
    assert_eq!(parse(&only_others, &image_webhook()).unwrap().filtered, 1);
}
