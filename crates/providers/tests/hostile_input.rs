//! Property tests: every function of an adapter that sees a webhook's bytes
//! (the head checks, the body signature checks and the parser of each of
//! the seven providers) answers arbitrary and mutated real payloads with
//! `Ok` or one of its errors: never a panic, the same answer for the same
//! input, and, when it does make jobs, jobs whose ids and times are inside
//! the bounds every store can hold (`archiver_core::bounds`).
//!
//! Cases per property: `PROPTEST_CASES` (default 256); the README's
//! "Fuzzing" section has the command for a long run.

use std::time::Duration;

use archiver_core::bounds::{EARLIEST_MESSAGE_SECS, LATEST_MESSAGE_SECS, check_id};
use proptest::prelude::*;
use providers::{AccountConfig, ApiClient, Provider, WebhookRequest};
use serde_json::{Value, json};

/// One account per provider, with credentials, as an operator writes them.
const ACCOUNTS: [&str; 7] = [
    r#"provider = "greenapi"
name = "green"
id_instance = 1101000001
api_token = "api-token"
webhook_token = "hook-token""#,
    r#"provider = "codechat"
name = "codechat"
api_url = "http://127.0.0.1:9"
instance_id = "main"
api_token = "api-token"
webhook_token = "hook-token""#,
    r#"provider = "evolution"
name = "evolution"
api_url = "http://127.0.0.1:9"
instance = "main"
api_key = "api-key"
webhook_jwt_secret = "jwt-secret""#,
    r#"provider = "onprem"
name = "onprem"
api_url = "http://127.0.0.1:9"
username = "admin"
password = "pw"
webhook_token = "hook-token""#,
    r#"provider = "cloudapi"
name = "cloud"
graph_url = "http://127.0.0.1:9/v21.0"
access_token = "access-token"
app_secret = "app-secret"
verify_token = "verify-token""#,
    r#"provider = "nxcloud"
name = "nxcloud"
api_url = "http://127.0.0.1:9"
access_key = "access-key"
access_secret = "access-secret"
business_phone = "8615800001795""#,
    r#"provider = "waha"
name = "waha"
api_url = "http://127.0.0.1:9"
api_key = "api-key"
webhook_hmac_key = "hmac-key""#,
];

fn adapters() -> Vec<std::sync::Arc<dyn Provider>> {
    let api = ApiClient::new(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
    ACCOUNTS
        .iter()
        .map(|text| {
            let config: AccountConfig = toml::from_str(text).unwrap();
            providers::build(&config, &api).unwrap_or_else(|e| panic!("{text}: {e:?}"))
        })
        .collect()
}

/// A real media webhook of each provider, in the shape its documentation
/// (and the unit tests) give; the property tests mutate these.
fn real_payloads() -> Vec<Value> {
    let now = chrono::Utc::now().timestamp();
    let sha_b64 = "kBMg3X2oOK6FUEaIpvJvyvvwD2mx0FDDK+6FXD5gTcE=";
    let key_b64 = "Jtx7GpgyIkxZ4mQAnQa6ukCRbRcGg16Vb8YTpdGuhNw=";
    vec![
        json!({
            "typeWebhook": "incomingMessageReceived",
            "instanceData": {"idInstance": 1101000001u64, "wid": "79001234567@c.us", "typeInstance": "whatsapp"},
            "timestamp": now,
            "idMessage": "BAE5F4C1B2A3D4E5",
            "senderData": {"chatId": "79001234568@c.us", "sender": "79001234568@c.us", "senderName": "Ann"},
            "messageData": {
                "typeMessage": "imageMessage",
                "fileMessageData": {"downloadUrl": "https://sw-media-out.storage.yandexcloud.net/1101000001/x.jpg",
                    "caption": "", "fileName": "x.jpg", "jpegThumbnail": "", "mimeType": "image/jpeg",
                    "isForwarded": false, "forwardingScore": 0, "isAnimated": false}
            }
        }),
        json!({
            "event": "messages.upsert",
            "instance": {"id": 42, "name": "main", "ownerJid": "5511900000000@s.whatsapp.net"},
            "data": {
                "keyId": "3EB0C0F1F39E7A2B1D5E", "keyFromMe": false,
                "keyRemoteJid": "5511988887777@s.whatsapp.net", "pushName": "Ann",
                "messageType": "imageMessage",
                "content": {"url": "https://mmg.whatsapp.net/v/t62.7118-24/1_n.enc?ccb=11-4",
                    "mimetype": "image/jpeg", "fileSha256": sha_b64, "fileLength": "92941",
                    "mediaKey": key_b64, "fileEncSha256": sha_b64,
                    "directPath": "/v/t62.7118-24/1_n.enc?ccb=11-4", "mediaKeyTimestamp": "1701768972"},
                "messageTimestamp": now, "instanceId": 42
            }
        }),
        json!({
            "event": "messages.upsert",
            "instance": "main",
            "data": {
                "key": {"remoteJid": "5511988887777@s.whatsapp.net", "fromMe": false, "id": "3EB0A1B2C3D4E5F60718"},
                "pushName": "Ann",
                "message": {"imageMessage": {"url": "https://mmg.whatsapp.net/v/t62.7118-24/1_n.enc?ccb=11-4",
                    "mimetype": "image/jpeg", "fileSha256": sha_b64, "fileLength": "12345",
                    "mediaKey": key_b64, "fileEncSha256": sha_b64,
                    "directPath": "/v/t62.7118-24/1_n.enc", "mediaKeyTimestamp": "1701768972"}},
                "messageType": "imageMessage",
                "messageTimestamp": now
            },
            "sender": "5511900000000@s.whatsapp.net"
        }),
        json!({
            "messages": [{"from": "16315551234", "id": "ABGGFlA5FpafAgo6EhueMbj3WNNf",
                "timestamp": now.to_string(), "type": "image",
                "image": {"id": "f043afd0-f0ae-4b9c-ab3d-696fb4c8cd68", "mime_type": "image/jpeg",
                    "sha256": "29ed500fa64eb55fc19dc4124acb300e5dcca0f822a301ae99944db012345678"}}]
        }),
        json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "messages": [{"from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRB",
                    "timestamp": now.to_string(), "type": "image",
                    "image": {"mime_type": "image/jpeg", "sha256": sha_b64, "id": "1003383421387256"}}]
            }}]}]
        }),
        json!({
            "business_phone": "8615800001795", "messaging_product": "whatsapp",
            "messages": [{"from": "6281234567890", "id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjBD",
                "timestamp": now.to_string(), "type": "image",
                "image": {"id": "fd81acff-eea8-4d9d-acc9-6c62904d6615", "mime_type": "image/jpeg"}}]
        }),
        json!({
            "id": "evt_01jdy2n3b5p8d7ztq8m3c1h6wq", "timestamp": now * 1000,
            "event": "message", "session": "default", "engine": "NOWEB",
            "me": {"id": "22222222222@c.us", "pushName": "Shop"},
            "payload": {"id": "false_11111111111@c.us_3EB0C767D26A1D8A3F1B", "timestamp": now,
                "from": "11111111111@c.us", "fromMe": false, "to": "22222222222@c.us",
                "body": "", "hasMedia": true,
                "media": {"url": "http://127.0.0.1:9/api/files/default/3EB0C767D26A1D8A3F1B.jpeg",
                    "mimetype": "image/jpeg", "filename": null, "error": null},
                "_data": {"key": {"remoteJid": "11111111111@c.us", "fromMe": false, "id": "3EB0C767D26A1D8A3F1B"},
                    "message": {"imageMessage": {"mimetype": "image/jpeg", "fileSha256": sha_b64,
                        "fileLength": "12345", "mediaKey": key_b64}}}}
        }),
    ]
}

/// A JSON value a hostile sender might put anywhere.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(-1)),
        Just(json!("1e400")),
        Just(json!("")),
        "\\PC{0,40}".prop_map(Value::from),
        (1usize..4000).prop_map(|n| Value::from("A".repeat(n))),
        Just(json!("../../etc/passwd")),
        Just(json!("a/b\\c\u{0}d")),
        Just(json!([])),
        Just(json!({})),
        Just(json!([[[[[[]]]]]])),
    ]
}

/// Every path to a value inside `v`.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(k.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(i.to_string());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, step| match v {
        Value::Object(map) => map.get_mut(step).unwrap(),
        Value::Array(items) => &mut items[step.parse::<usize>().unwrap()],
        _ => unreachable!("paths only lead through containers"),
    })
}

/// `payload` with the value at one of its paths replaced, or its key removed.
fn mutate(mut payload: Value, pick: prop::sample::Index, value: Value, remove: bool) -> Value {
    let mut all = Vec::new();
    paths(&payload, &mut Vec::new(), &mut all);
    let path = pick.get(&all).clone();
    match (remove, path.split_last()) {
        (true, Some((last, parent))) => match at_mut(&mut payload, parent) {
            Value::Object(map) => {
                map.remove(last);
            }
            Value::Array(items) => {
                items.remove(last.parse::<usize>().unwrap());
            }
            _ => {}
        },
        _ => *at_mut(&mut payload, &path) = value,
    }
    payload
}

/// What an adapter answered for one body, comparable across runs.
fn parse(adapter: &dyn Provider, body: &[u8]) -> Result<usize, String> {
    let headers = http::HeaderMap::new();
    let request = WebhookRequest {
        headers: &headers,
        query: None,
        body,
    };
    match adapter.parse_webhook(&request) {
        Ok(parsed) => {
            for job in &parsed.jobs {
                check_id("message_id", &job.message_id)
                    .map_err(|e| format!("job out of bounds: {e}"))?;
                if let Some(media) = &job.media_id {
                    check_id("media_id", media).map_err(|e| format!("job out of bounds: {e}"))?;
                }
                let at = job.message_at / 1000;
                assert!(
                    (EARLIEST_MESSAGE_SECS..=LATEST_MESSAGE_SECS).contains(&at),
                    "{job:?}"
                );
                assert!(job.deadline > 0, "a deadline never wraps: {job:?}");
            }
            Ok(parsed.jobs.len() + parsed.wakes.len() + parsed.ignored)
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            Err(message)
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bodies_are_answered_without_a_panic(
        which in 0usize..ACCOUNTS.len(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let adapter = &adapters()[which];
        let first = parse(adapter.as_ref(), &body);
        prop_assert_eq!(&first, &parse(adapter.as_ref(), &body));
        prop_assert!(!first.as_ref().is_err_and(|e| e.starts_with("job out of bounds")), "{:?}", first);
    }

    #[test]
    fn mutated_real_payloads_are_answered_without_a_panic_and_jobs_stay_in_bounds(
        which in 0usize..ACCOUNTS.len(),
        pick in any::<prop::sample::Index>(),
        value in hostile_value(),
        remove in any::<bool>(),
    ) {
        let adapter = &adapters()[which];
        let payload = mutate(real_payloads()[which].clone(), pick, value, remove);
        let body = serde_json::to_vec(&payload).unwrap();
        let first = parse(adapter.as_ref(), &body);
        prop_assert_eq!(&first, &parse(adapter.as_ref(), &body));
        prop_assert!(!first.as_ref().is_err_and(|e| e.starts_with("job out of bounds")), "{:?}", first);
    }

    #[test]
    fn arbitrary_credentials_are_refused_without_a_panic(
        which in 0usize..ACCOUNTS.len(),
        names in prop::collection::vec(prop::sample::select(vec![
            "authorization", "x-hub-signature-256", "accesskey", "ts", "sign", "action", "biztype",
            "x-webhook-hmac", "x-webhook-hmac-algorithm",
        ]), 0..5),
        values in prop::collection::vec("[ -~]{0,80}", 5),
        query in prop::option::of("[ -~]{0,80}"),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let adapter = &adapters()[which];
        let mut headers = http::HeaderMap::new();
        for (name, value) in names.iter().zip(&values) {
            if let Ok(value) = http::HeaderValue::from_str(value) {
                headers.insert(*name, value);
            }
        }
        let head = adapter.authenticate_head(&headers, query.as_deref());
        let request = WebhookRequest { headers: &headers, query: query.as_deref(), body: &body };
        let both = head.and_then(|()| adapter.authenticate_body(&request));
        // Random bytes never amount to a valid credential of an account
        // that requires one.
        prop_assert!(both.is_err(), "accepted {:?} {:?}", headers, query);
    }
}

#[test]
fn every_real_payload_is_accepted_as_it_is() {
    for (adapter, payload) in adapters().iter().zip(real_payloads()) {
        let body = serde_json::to_vec(&payload).unwrap();
        assert_eq!(parse(adapter.as_ref(), &body), Ok(1), "{}", adapter.kind());
    }
}
