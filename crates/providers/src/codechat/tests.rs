use super::*;
use crate::testing::{
    AuthenticateBoth as _, ENC_B64, KEY_B64, SHA_B64, SHA_HEX, a_minute_ago, assert_reported,
    attempt, backfilling_the_data_makes_the_webhook_s_job, fetch, parse,
};

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJpbnN0YW5jZUlkIjoiNDIifQ.c2lnbmF0dXJl";

fn adapter(extra: &str) -> Codechat {
    let config: CodechatConfig = toml::from_str(&format!(
        r#"
        name = "cc"
        api_url = "http://10.0.0.5:8083"
        instance_id = 42
        api_token = "{JWT}"
        webhook_token = "hook-secret"
        {extra}
        "#
    ))
    .unwrap();
    Codechat::new(&config).unwrap()
}

fn image_webhook() -> Value {
    json!({
        "event": "messages.upsert",
        "instance": {"id": 42, "name": "main", "ownerJid": "5511900000000@s.whatsapp.net"},
        "data": {
            "keyId": "3EB0C0F1F39E7A2B1D5E",
            "keyFromMe": false,
            "keyRemoteJid": "5511988887777@s.whatsapp.net",
            "pushName": "Ann",
            "messageType": "imageMessage",
            "content": {
                "url": "https://mmg.whatsapp.net/v/t62.7118-24/11848240_n.enc?ccb=11-4&oh=01_Ad&oe=652D4E40&_nc_sid=000000&mms3=true",
                "mimetype": "image/jpeg",
                "caption": "look",
                "fileSha256": SHA_B64,
                "fileLength": "92941",
                "height": 1280, "width": 720,
                "mediaKey": KEY_B64,
                "fileEncSha256": ENC_B64,
                "directPath": "/v/t62.7118-24/11848240_n.enc?ccb=11-4&oh=01_Ad&oe=652D4E40&_nc_sid=000000",
                "mediaKeyTimestamp": "1701768972",
                "jpegThumbnail": "/9j/4AAQSkZJRg=="
            },
            "messageTimestamp": 1_700_000_000,
            "instanceId": 42,
            "device": "android",
            "isGroup": false
        }
    })
}

/// The first attempt at `job`, after its CDN link died if `link_dead`.
async fn resolve(
    adapter: &Codechat,
    job: &archiver_core::JobSpec,
    link_dead: bool,
) -> ResolvedMedia {
    fetch(
        adapter,
        JobRef {
            link_dead,
            ..attempt(job, 1)
        },
    )
    .await
}

#[test]
fn an_image_upsert_becomes_one_job_keyed_by_key_id() {
    let parsed = parse(&adapter(""), &image_webhook()).unwrap();
    let [job] = parsed.jobs.as_slice() else {
        panic!("one job expected: {parsed:?}")
    };
    assert_eq!(job.id, "cc:3EB0C0F1F39E7A2B1D5E");
    assert_eq!(job.message_id, "3EB0C0F1F39E7A2B1D5E");
    assert_eq!(job.provider, ProviderKind::Codechat);
    assert_eq!(job.message_at, 1_700_000_000_000);
    assert_eq!(job.deadline, 1_700_000_000_000 + 14 * 86_400_000);
    let stub = &job.payload["stub"];
    assert_eq!(stub["media_key"], KEY_B64);
    assert_eq!(stub["file_sha256"], SHA_HEX);
    assert_eq!(stub["file_length"], 92941);
    assert_eq!(job.payload["chat_id"], "5511988887777@s.whatsapp.net");
    assert_eq!(job.payload["sender"], "5511988887777@s.whatsapp.net");
}

#[test]
fn every_media_type_and_a_captioned_document_are_archived() {
    let adapter = adapter("");
    for t in [
        "videoMessage",
        "audioMessage",
        "documentMessage",
        "stickerMessage",
        "ptvMessage",
    ] {
        let mut body = image_webhook();
        body["data"]["messageType"] = json!(t);
        assert_eq!(parse(&adapter, &body).unwrap().jobs.len(), 1, "{t}");
    }
    let mut body = image_webhook();
    let content = body["data"]["content"].take();
    body["data"]["messageType"] = json!("documentWithCaptionMessage");
    body["data"]["content"] = json!({"message": {"documentMessage": content}});
    let job = parse(&adapter, &body).unwrap().jobs.remove(0);
    assert_eq!(job.payload["stub"]["message_type"], "documentMessage");
}

#[test]
fn texts_and_other_events_are_ignored() {
    let adapter = adapter("");
    let mut text = image_webhook();
    text["data"]["messageType"] = json!("conversation");
    text["data"]["content"] = json!({"text": "hi"});
    let update = json!({"event": "messages.update", "data": {}});
    let connection = json!({"event": "CONNECTION_UPDATE", "data": {"state": "open"}});
    for body in [text, update, connection] {
        let parsed = parse(&adapter, &body).unwrap();
        assert_eq!((parsed.jobs.len(), parsed.ignored), (0, 1), "{body}");
    }
    let mut upper = image_webhook();
    upper["event"] = json!("MESSAGES_UPSERT");
    assert_eq!(parse(&adapter, &upper).unwrap().jobs.len(), 1);
}

#[test]
fn malformed_payloads_are_rejected_naming_the_field() {
    let adapter = adapter("");
    for (pointer, field) in [
        ("/event", "event"),
        ("/data", "data"),
        ("/data/messageType", "data.messageType"),
        ("/data/keyId", "data.keyId"),
        ("/data/messageTimestamp", "data.messageTimestamp"),
        ("/data/content", "data.content"),
        ("/data/content/mediaKey", "data.content.mediaKey"),
        ("/data/content/fileSha256", "data.content.fileSha256"),
        ("/data/content/fileEncSha256", "data.content.fileEncSha256"),
    ] {
        let mut body = image_webhook();
        *body.pointer_mut(pointer).unwrap() = Value::Null;
        let err = parse(&adapter, &body).unwrap_err();
        assert!(matches!(err, ProviderError::BadPayload(_)), "{pointer}");
        assert!(err.to_string().contains(field), "{pointer}: {err}");
        assert!(!err.to_string().contains(KEY_B64));
    }
}

#[test]
fn webhook_token_as_bearer_or_query() {
    let adapter = adapter("");
    let check = |headers: &http::HeaderMap, query| {
        adapter.authenticate(&WebhookRequest {
            headers,
            query,
            body: b"{}",
        })
    };
    let mut bearer = http::HeaderMap::new();
    bearer.insert(
        http::header::AUTHORIZATION,
        "Bearer hook-secret".parse().unwrap(),
    );
    let none = http::HeaderMap::new();
    assert!(check(&bearer, None).is_ok());
    assert!(check(&none, Some("token=hook-secret")).is_ok());
    assert!(check(&none, Some("token=nope")).is_err());
    assert!(check(&none, None).is_err());
    assert!(adapter.webhook_auth_configured());
}

#[tokio::test]
async fn direct_mode_fetches_the_encrypted_blob_from_the_cdn() {
    let adapter = adapter(r#"cdn_url = "http://127.0.0.1:9999/""#);
    let job = parse(&adapter, &image_webhook()).unwrap().jobs.remove(0);
    let resolved = resolve(&adapter, &job, false).await;
    let MediaSource::Download { request, hosts } = &resolved.source else {
        panic!("a download")
    };
    assert_eq!(request.method, http::Method::GET);
    assert_eq!(
        request.url.as_str(),
        "http://127.0.0.1:9999/v/t62.7118-24/11848240_n.enc?ccb=11-4&oh=01_Ad&oe=652D4E40&_nc_sid=000000"
    );
    assert!(hosts.allows("127.0.0.1") && hosts.allows("mmg.whatsapp.net"));
    assert!(!hosts.allows("10.0.0.5"), "the API host is not a CDN host");
    let media = resolved.encryption.expect("decrypted by the pipeline");
    assert_eq!(media.media_type, whatsapp_media::MediaType::Image);
    assert_eq!(media.file_length, Some(92941));
    assert_eq!(resolved.expected_sha256, Some(media.file_sha256));
    assert_eq!(resolved.details.mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(resolved.details.caption.as_deref(), Some("look"));
}

#[tokio::test]
async fn a_dead_cdn_link_or_provider_mode_asks_codechat() {
    for (extra, link_dead) in [("", true), (r#"mode = "provider""#, false)] {
        let adapter = adapter(extra);
        let mut body = image_webhook();
        body["data"]["messageType"] = json!("stickerMessage");
        let job = parse(&adapter, &body).unwrap().jobs.remove(0);
        let resolved = resolve(&adapter, &job, link_dead).await;
        assert!(
            resolved.encryption.is_none(),
            "CodeChat sends the plaintext"
        );
        assert!(
            resolved.expected_sha256.is_some(),
            "checked against fileSha256"
        );
        let MediaSource::Download { request, hosts } = &resolved.source else {
            panic!("a download")
        };
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(
            request.url.as_str(),
            "http://10.0.0.5:8083/api/v2/instance/42/media/directly-download?timeout=60000"
        );
        assert!(hosts.allows("10.0.0.5") && !hosts.allows("mmg.whatsapp.net"));
        let auth = request
            .headers
            .iter()
            .find(|(n, _)| n == http::header::AUTHORIZATION)
            .unwrap();
        assert_eq!(auth.1.expose(), format!("Bearer {JWT}"));
        let sent: Value = serde_json::from_slice(request.body.as_ref().unwrap()).unwrap();
        assert_eq!(sent["contentType"], "sticker");
        assert_eq!(sent["content"]["mediaKey"], KEY_B64);
        assert_eq!(sent["content"]["mimetype"], "image/jpeg");
        assert!(
            sent["content"]["directPath"]
                .as_str()
                .unwrap()
                .starts_with("/v/")
        );
        assert!(
            sent["content"]["url"]
                .as_str()
                .unwrap()
                .contains("mmg.whatsapp.net")
        );
        assert!(
            !format!("{request:?}").contains(JWT),
            "the JWT never prints"
        );
    }
}

#[test]
fn config_errors_are_all_reported_and_unknown_keys_refused() {
    let config: CodechatConfig = toml::from_str(
        r#"
        name = "cc"
        api_url = "ftp://x"
        cdn_url = "nope"
        instance_id = "a/b"
        api_token = { env = "MEDIA_ARCHIVER_TEST_SURELY_UNSET" }
        "#,
    )
    .unwrap();
    let errors = Codechat::new(&config).unwrap_err();
    assert_reported(
        &errors,
        &[
            "api_url",
            "cdn_url",
            "instance_id",
            "api_token",
            "webhook_token: required",
        ],
    );
    let base = "name = \"cc\"\napi_url = \"http://x\"\ninstance_id = 1\napi_token = \"t\"\n";
    let unknown = toml::from_str::<CodechatConfig>(&format!("{base}apikey = \"x\"\n"));
    assert!(unknown.unwrap_err().to_string().contains("apikey"));
    let mode = toml::from_str::<CodechatConfig>(&format!("{base}mode = \"cdn\"\n"));
    assert!(mode.is_err());
    let ok: CodechatConfig = toml::from_str(base).unwrap();
    assert_eq!(ok.mode, Mode::Direct);
    assert_eq!(ok.cdn_url, "https://mmg.whatsapp.net");
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
    text["messageType"] = json!("conversation");
    let err = adapter.backfill(&text).await.unwrap_err();
    assert!(err.to_string().contains("not a media message"), "{err}");

    let mut keyless = image_webhook()["data"].clone();
    keyless["messageTimestamp"] = json!(a_minute_ago());
    keyless["content"]["mediaKey"] = Value::Null;
    let err = adapter.backfill(&keyless).await.unwrap_err();
    assert!(
        err.to_string().contains("reference.content.mediaKey"),
        "{err}"
    );
    assert!(!err.to_string().contains(KEY_B64));

    let old = image_webhook()["data"].clone();
    let err = adapter.backfill(&old).await.unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");

    let err = adapter
        .backfill(&json!(["not", "an", "object"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("JSON object"), "{err}");
}

#[tokio::test]
async fn the_rules_see_key_from_me_the_chat_and_ptt_and_the_manifest_the_direction() {
    let incoming_images =
        adapter(r#"rules = { directions = ["incoming"], media_types = ["image", "audio"] }"#);
    let parsed = parse(&incoming_images, &image_webhook()).unwrap();
    assert_eq!((parsed.jobs.len(), parsed.filtered), (1, 0));
    let details = resolve(&incoming_images, &parsed.jobs[0], false)
        .await
        .details;
    assert_eq!(details.direction, Some(Direction::Incoming));

    let mut own = image_webhook();
    own["data"]["keyFromMe"] = json!(true);
    let parsed = parse(&incoming_images, &own).unwrap();
    assert_eq!(
        (parsed.jobs.len(), parsed.filtered, parsed.ignored),
        (0, 1, 0)
    );
    let job = &parse(&adapter(""), &own).unwrap().jobs[0];
    let details = resolve(&adapter(""), job, false).await.details;
    assert_eq!(details.direction, Some(Direction::Outgoing));

    let mut voice = image_webhook();
    voice["data"]["messageType"] = json!("audioMessage");
    voice["data"]["content"]["ptt"] = json!(true);
    voice["data"]["content"]["mimetype"] = json!("audio/ogg; codecs=opus");
    assert_eq!(
        parse(&incoming_images, &voice).unwrap().filtered,
        1,
        "a voice note is not an audio file"
    );
    voice["data"]["content"]["ptt"] = json!(false);
    assert_eq!(parse(&incoming_images, &voice).unwrap().jobs.len(), 1);

    let denied = adapter(r#"rules = { chats_deny = ["5511988887777@s.whatsapp.net"] }"#);
    assert_eq!(parse(&denied, &image_webhook()).unwrap().filtered, 1);
}

#[tokio::test]
async fn the_announced_file_length_and_the_account_s_cap_reach_the_pipeline() {
    let capped = adapter("rules = { max_file_bytes = 1000 }");
    assert_eq!(capped.max_file_bytes(), Some(1000));
    let parsed = parse(&capped, &image_webhook()).unwrap();
    assert_eq!(
        parsed.jobs.len(),
        1,
        "too large is a job, ended by the worker"
    );
    assert_eq!(
        resolve(&capped, &parsed.jobs[0], false).await.size,
        Some(92_941)
    );
    assert_eq!(
        resolve(&capped, &parsed.jobs[0], true).await.size,
        Some(92_941)
    );
    assert_eq!(adapter("").max_file_bytes(), None);
}

#[tokio::test]
async fn a_backfill_record_the_rules_exclude_is_refused_naming_the_rule() {
    let adapter = adapter(r#"rules = { media_types = ["document"] }"#);
    let mut data = image_webhook()["data"].clone();
    data["messageTimestamp"] = json!(a_minute_ago());
    let err = adapter.backfill(&data).await.unwrap_err();
    assert!(matches!(err, ProviderError::Excluded(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "excluded by the account's rules: media type image is not in rules.media_types"
    );
}
