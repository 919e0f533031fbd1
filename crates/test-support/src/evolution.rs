//! A fake Evolution API v2 (providers.md section 2, "Evolution API (v2) for
//! comparison"): `getBase64FromMediaMessage`, and builders for its
//! `messages.upsert` webhooks and their HS256 JWT.
//!
//! Route: `POST /chat/getBase64FromMediaMessage/{instance}` with the `apikey`
//! header and `{"message": {"key": {...}, "message": {"<type>Message":
//! {...}}}, "convertToMp4": false}`. A wrong or missing key answers 401;
//! a message the CDN fake does not know, or one without media, answers 400
//! with Evolution's text ("Message not found", "The message is not of the
//! media type"). Otherwise 201 with `{mediaType, fileName, caption,
//! size:{fileLength}, mimetype, base64, buffer:null}`, whether or not the CDN
//! still serves the blob (Evolution can ask for a re-upload). Byte fields in
//! the request are read in every encoding Evolution itself accepts.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use crate::http::{self, Body, TestServer};
use crate::whatsapp_cdn::{CdnRegistry, FakeWhatsappCdn, MediaStub};
use crate::{lock, now_secs};

/// The fake instance's name.
pub const INSTANCE: &str = "archive-test";
/// The instance's own number (the webhook's `sender`).
pub const OWNER_JID: &str = "5511900000000@s.whatsapp.net";

/// The fake; stops when dropped.
#[derive(Debug)]
pub struct FakeEvolution {
    server: TestServer,
    base_url: String,
    api_key: String,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    api_key: String,
    cdn: CdnRegistry,
    answered: usize,
    rejected: usize,
}

impl FakeEvolution {
    /// Starts the fake on `127.0.0.1:0`, decrypting what `cdn` serves.
    pub async fn start(cdn: &FakeWhatsappCdn) -> Self {
        let api_key = format!("{:032X}", rand::random::<u128>());
        let state = Arc::new(Mutex::new(State {
            api_key: api_key.clone(),
            cdn: cdn.registry(),
            answered: 0,
            rejected: 0,
        }));
        let handler_state = Arc::clone(&state);
        let server = TestServer::start(move |req| handle(Arc::clone(&handler_state), req)).await;
        let base_url = server.base_url();
        Self {
            server,
            base_url,
            api_key,
            state,
        }
    }

    /// `http://127.0.0.1:PORT`: the account's `api_url`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The instance name (the account's `instance`).
    pub fn instance(&self) -> &str {
        INSTANCE
    }

    /// The API key (the account's `api_key`).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// getBase64FromMediaMessage calls answered with a file.
    pub fn answered(&self) -> usize {
        lock(&self.state).answered
    }

    /// Calls refused for a wrong `apikey`.
    pub fn rejected(&self) -> usize {
        lock(&self.state).rejected
    }

    /// A `messages.upsert` webhook for `stub`, byte fields index-keyed as
    /// Evolution sends them. With `inline`, `data.message.base64` carries
    /// the plaintext (Evolution's `webhook_base64`).
    pub fn upsert_webhook(
        &self,
        key_id: &str,
        remote_jid: &str,
        stub: &MediaStub,
        timestamp: i64,
        inline: Option<&[u8]>,
    ) -> Value {
        let mut message = json!({
            stub.message_type.clone(): stub.to_index_keyed_json(),
            "messageContextInfo": {"deviceListMetadataVersion": 2},
        });
        if let Some(plaintext) = inline {
            message["base64"] = json!(STANDARD.encode(plaintext));
        }
        json!({
            "event": "messages.upsert",
            "instance": INSTANCE,
            "data": {
                "key": {"remoteJid": remote_jid, "fromMe": false, "id": key_id},
                "pushName": "Test contact",
                "status": "DELIVERY_ACK",
                "message": message,
                "messageType": stub.message_type,
                "messageTimestamp": timestamp,
                "instanceId": "0d3c1f4e-8b7a-4c55-9e0f-1a2b3c4d5e6f",
                "source": "android",
            },
            "destination": "http://127.0.0.1/webhooks",
            "date_time": "2026-11-22T10:00:00.000Z",
            "sender": OWNER_JID,
            "server_url": self.base_url,
            "apikey": null,
        })
    }

    /// The `Authorization: Bearer` JWT Evolution sends when the instance's
    /// webhook headers carry `jwt_key`: HS256 of `{iat, exp: iat+600,
    /// app:"evolution", action:"webhook"}`. `age_secs` backdates `iat`.
    pub fn webhook_jwt(jwt_key: &str, age_secs: i64) -> String {
        let iat = now_secs() - age_secs;
        let claims = json!({"iat": iat, "exp": iat + 600, "app": "evolution", "action": "webhook"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(jwt_key.as_bytes()),
        )
        .expect("encode a JWT")
    }

    /// Stops the server now (dropping the fake does the same).
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

fn evolution_error(status: u16, message: &str) -> Response<Body> {
    let error = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Error",
    };
    http::json(
        status,
        &json!({"status": status, "error": error, "response": {"message": [message]}}),
    )
}

const MEDIA: [&str; 6] = [
    "imageMessage",
    "videoMessage",
    "audioMessage",
    "documentMessage",
    "stickerMessage",
    "ptvMessage",
];

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let ["chat", "getBase64FromMediaMessage", instance] = segments.as_slice() else {
        return evolution_error(404, "Not Found");
    };
    if req.method() != Method::POST {
        return evolution_error(404, "Not Found");
    }
    let key_ok = {
        let st = lock(&state);
        req.headers()
            .get("apikey")
            .is_some_and(|v| v.as_bytes() == st.api_key.as_bytes())
    };
    if !key_ok {
        lock(&state).rejected += 1;
        return evolution_error(401, "Unauthorized");
    }
    if *instance != INSTANCE {
        return evolution_error(404, &format!("The \"{instance}\" instance does not exist"));
    }
    let Some(body) = http::read_body(req, 1024 * 1024).await else {
        return evolution_error(400, "body too large");
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return evolution_error(400, "body is not JSON");
    };
    if request["message"]["key"]["id"].as_str().is_none() {
        return evolution_error(400, "Message not found");
    }
    let message = &request["message"]["message"];
    let Some((kind, media)) = MEDIA.iter().find_map(|m| message.get(*m).map(|v| (*m, v))) else {
        return evolution_error(400, "The message is not of the media type");
    };
    let key = media
        .get("mediaKey")
        .and_then(|k| archiver_core::decode::bytes(k).ok());
    let cdn = lock(&state).cdn.clone();
    let Some((plaintext, stub)) = cdn.plaintext_of(media, key) else {
        return evolution_error(400, "Message not found");
    };
    lock(&state).answered += 1;
    http::json(
        201,
        &json!({
            "mediaType": kind.trim_end_matches("Message"),
            "fileName": stub.file_name,
            "caption": null,
            "size": {"fileLength": {"low": plaintext.len(), "high": 0, "unsigned": true}},
            "mimetype": stub.mimetype,
            "base64": STANDARD.encode(&plaintext),
            "buffer": null,
        }),
    )
}
