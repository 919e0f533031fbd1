//! A fake CodeChat API v2 (providers.md section 2, `sources/001_…`): the
//! `directly-download` endpoint, which decrypts a media stub server-side,
//! and builders for its `messages.upsert` webhooks.
//!
//! Route: `POST /api/v2/instance/{instanceId}/media/directly-download?timeout=N`
//! with `Authorization: Bearer <JWT>` and `{contentType, content:{url,
//! mimetype, mediaKey, directPath}}`. The JWT is HS256, signed by this fake
//! with `{instanceId, exp}`; a missing, forged, expired or other-instance
//! token answers 401 with the NestJS error body. A stub the CDN fake does not
//! know (or with the wrong key) answers 404. Otherwise 200 with the
//! plaintext, whether or not the CDN still serves the blob: the real gateway
//! can ask the sender's phone to upload it again.

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use crate::http::{self, Body, TestServer};
use crate::whatsapp_cdn::{CdnRegistry, FakeWhatsappCdn, MediaStub};
use crate::{lock, now_secs};

/// The fake instance's id.
pub const INSTANCE_ID: &str = "7";
/// The instance's own number (`instance.ownerJid`).
pub const OWNER_JID: &str = "5511900000000@s.whatsapp.net";

/// The fake; stops when dropped.
#[derive(Debug)]
pub struct FakeCodeChat {
    server: TestServer,
    base_url: String,
    token: String,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    jwt_secret: String,
    cdn: CdnRegistry,
    downloads: usize,
    rejected: usize,
    last_request: Option<Value>,
    faults: Vec<u16>,
}

impl FakeCodeChat {
    /// Starts the fake on `127.0.0.1:0`, decrypting what `cdn` serves.
    pub async fn start(cdn: &FakeWhatsappCdn) -> Self {
        let jwt_secret = format!("{:032x}", rand::random::<u128>());
        let token = jwt(&jwt_secret, INSTANCE_ID, 3600);
        let state = Arc::new(Mutex::new(State {
            jwt_secret,
            cdn: cdn.registry(),
            downloads: 0,
            rejected: 0,
            last_request: None,
            faults: Vec::new(),
        }));
        let handler_state = Arc::clone(&state);
        let server = TestServer::start(move |req| handle(Arc::clone(&handler_state), req)).await;
        let base_url = server.base_url();
        Self {
            server,
            base_url,
            token,
            state,
        }
    }

    /// `http://127.0.0.1:PORT`: the account's `api_url`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The instance JWT (the account's `api_token`).
    pub fn api_token(&self) -> &str {
        &self.token
    }

    /// A token signed with another key, or already expired (for tests of refusals).
    pub fn forged_token(&self, expired: bool) -> String {
        if expired {
            jwt(&lock(&self.state).jwt_secret, INSTANCE_ID, -3600)
        } else {
            jwt("not-the-server-secret", INSTANCE_ID, 3600)
        }
    }

    /// Statuses to answer on the next directly-download calls, in order.
    pub fn inject_faults(&self, statuses: Vec<u16>) {
        lock(&self.state).faults.extend(statuses);
    }

    /// directly-download calls answered 200.
    pub fn downloads(&self) -> usize {
        lock(&self.state).downloads
    }

    /// directly-download calls refused (401).
    pub fn rejected(&self) -> usize {
        lock(&self.state).rejected
    }

    /// The body of the last directly-download call.
    pub fn last_request(&self) -> Option<Value> {
        lock(&self.state).last_request.clone()
    }

    /// A `messages.upsert` webhook for `stub` in CodeChat's (v1) shape.
    pub fn upsert_webhook(
        &self,
        key_id: &str,
        remote_jid: &str,
        stub: &MediaStub,
        timestamp: i64,
    ) -> Value {
        json!({
            "event": "messages.upsert",
            "instance": {
                "id": INSTANCE_ID.parse::<u64>().expect("numeric id"),
                "name": "codechat-test",
                "connectionStatus": "ONLINE",
                "ownerJid": OWNER_JID,
            },
            "data": {
                "keyId": key_id,
                "keyFromMe": false,
                "keyRemoteJid": remote_jid,
                "keyParticipant": null,
                "pushName": "Test contact",
                "messageType": stub.message_type,
                "content": stub.to_base64_json(),
                "messageTimestamp": timestamp,
                "instanceId": INSTANCE_ID.parse::<u64>().expect("numeric id"),
                "device": "android",
                "isGroup": remote_jid.ends_with("@g.us"),
            },
        })
    }

    /// Stops the server now (dropping the fake does the same).
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

fn jwt(secret: &str, instance_id: &str, ttl_secs: i64) -> String {
    let claims =
        json!({"instanceId": instance_id, "iat": now_secs(), "exp": now_secs() + ttl_secs});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a JWT")
}

fn nest_error(status: u16, error: &str, message: &str) -> Response<Body> {
    http::json(
        status,
        &json!({"message": [message], "error": error, "statusCode": status}),
    )
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let [
        "api",
        "v2",
        "instance",
        instance,
        "media",
        "directly-download",
    ] = segments.as_slice()
    else {
        return nest_error(404, "Not Found", &format!("Cannot {} {path}", req.method()));
    };
    if req.method() != Method::POST {
        return nest_error(404, "Not Found", &format!("Cannot {} {path}", req.method()));
    }
    let instance = (*instance).to_owned();
    let has_timeout = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("timeout=")));
    let token = http::bearer(&req).map(str::to_owned);
    let secret = lock(&state).jwt_secret.clone();
    if !token.is_some_and(|t| token_ok(&t, &secret, &instance)) {
        lock(&state).rejected += 1;
        return nest_error(401, "Unauthorized", "Unauthorized");
    }
    if !has_timeout {
        return nest_error(400, "Bad Request", "timeout must be a number");
    }
    let Some(body) = http::read_body(req, 64 * 1024).await else {
        return nest_error(400, "Bad Request", "body too large");
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return nest_error(400, "Bad Request", "body is not JSON");
    };
    let fault = {
        let mut st = lock(&state);
        st.last_request = Some(request.clone());
        (!st.faults.is_empty()).then(|| st.faults.remove(0))
    };
    if let Some(status) = fault {
        return nest_error(status, "Injected", "injected failure");
    }
    let content = &request["content"];
    let content_type = request["contentType"].as_str().unwrap_or("");
    if !["image", "video", "audio", "document", "sticker"].contains(&content_type) {
        return nest_error(
            400,
            "Bad Request",
            "contentType must be one of document, image, video, audio, sticker",
        );
    }
    let key = content["mediaKey"]
        .as_str()
        .and_then(|k| archiver_core::decode::bytes_from_str(k).ok());
    let cdn = lock(&state).cdn.clone();
    let Some((plaintext, stub)) = cdn.plaintext_of(content, key) else {
        return nest_error(404, "Not Found", "media not found");
    };
    lock(&state).downloads += 1;
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, stub.mimetype.as_str())
        .header(CONTENT_LENGTH, plaintext.len())
        .body(http::full(plaintext))
        .expect("valid response")
}

fn token_ok(token: &str, secret: &str, instance: &str) -> bool {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .is_ok_and(|data| data.claims["instanceId"] == instance)
}
