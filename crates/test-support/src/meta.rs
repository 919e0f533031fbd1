//! Fakes of Meta's two WhatsApp Business APIs, each a real HTTP server on
//! `127.0.0.1:0`, behaving as providers.md sections 4 and 5 and
//! `sources/002_…` document, with faults to inject.
//!
//! [`FakeOnPrem`], the On-Premises API (the "WhatsApp Business API client"):
//! - `POST /v1/users/login` with `Authorization: Basic base64(user:pass)`:
//!   `{"users":[{"token","expires_after"}]}`; 401 with `errors[]` otherwise.
//! - `GET /v1/media/{id}/download` (bearer): starts the asynchronous store and
//!   answers `{"media_items":[{"id"}],"meta":…}` at once; then, as
//!   [`StoreCallback`] says (by default at once), POSTs the store callback to
//!   the webhook URL it was told ([`FakeOnPrem::set_webhook_url`], i.e. the
//!   Coreapp's `webhooks.url`): `media_items[]` with `status: "downloaded"`,
//!   or the same item plus `errors[]` ("Media not found in the datastore.").
//!   Like the real client it redelivers a callback that was not answered 200
//!   (here a few times, quickly). An unknown id is 404 with error `1006`.
//! - `GET /v1/media/{id}` (bearer): the bytes once stored (on a completed
//!   store, or from the start for auto-downloaded media); 404 before.
//! - Faults: late, failing or missing callbacks; [`FakeOnPrem::expire_tokens`]
//!   (every token issued so far answers 401, as after an expiry or a Coreapp
//!   restart); wrong bytes ([`FakeOnPrem::corrupt`]).
//!
//! [`FakeCloudApi`], the Cloud API (Graph + the lookaside media host):
//! - `GET /{version}/{media-id}` (bearer): `{messaging_product, url,
//!   mime_type, sha256 (hex), file_size, id}`, a fresh `url` on every call;
//!   401 with OAuth error 190 for a wrong token; 400 with code 100 for an
//!   unknown id.
//! - `GET /whatsapp_business/attachments/?mid=…&ext=…&hash=…` (bearer): the
//!   bytes while the link is fresh; 404 once it expired (after
//!   [`FakeCloudApi::set_link_ttl`], or at once for links handed out after
//!   [`FakeCloudApi::expire_next_links`]).
//! - Webhook bodies in the documented envelope, signed with the app secret
//!   ([`FakeCloudApi::sign`]); Graph faults ([`GraphFault`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::http::{self, Body, TestServer};

/// How a fake writes the `sha256` of a media file in its webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashEncoding {
    /// 64 lowercase hex digits (every On-Prem example, Meta's docs).
    Hex,
    /// Standard base64 with padding (real Cloud API webhooks).
    Base64,
    /// No `sha256` field at all.
    Absent,
}

fn encode_hash(bytes: &[u8], encoding: HashEncoding) -> Option<String> {
    let digest = Sha256::digest(bytes);
    match encoding {
        HashEncoding::Hex => Some(hex::encode(digest)),
        HashEncoding::Base64 => Some(base64::engine::general_purpose::STANDARD.encode(digest)),
        HashEncoding::Absent => None,
    }
}

// ---------------------------------------------------------------------------
// On-Premises API
// ---------------------------------------------------------------------------

/// The API user the fake On-Prem client accepts.
pub const ONPREM_USERNAME: &str = "archiver";
/// The WhatsApp id messages come from.
pub const ONPREM_SENDER: &str = "16315551234";

/// What the store does after a `GET /v1/media/{id}/download`, one per
/// request, in order ([`FakeOnPrem::set_store_callbacks`]); once the list is
/// used up, [`StoreCallback::After`]`(ZERO)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCallback {
    /// The store completes and its callback is posted after this delay.
    After(Duration),
    /// The store fails: the callback carries `errors[]` with "Media not
    /// found in the datastore." (after this delay).
    Error(Duration),
    /// The store never completes and no callback is sent.
    Never,
}

/// The fake On-Prem client; stops when dropped.
#[derive(Debug)]
pub struct FakeOnPrem {
    server: TestServer,
    base_url: String,
    password: String,
    state: Arc<Mutex<OnPremState>>,
}

#[derive(Debug)]
struct OnPremState {
    password: String,
    tokens: HashSet<String>,
    /// Every token ever issued, expired ones included.
    issued: Vec<String>,
    media: HashMap<String, OnPremMedia>,
    webhook_url: Option<String>,
    store_callbacks: VecDeque<StoreCallback>,
    logins: usize,
    store_requests: HashMap<String, usize>,
    media_gets: HashMap<String, usize>,
    /// (media id, HTTP status of the delivery) for every callback POST.
    callback_deliveries: Vec<(String, u16)>,
    http: reqwest::Client,
}

#[derive(Debug, Clone)]
struct OnPremMedia {
    kind: String,
    bytes: Bytes,
    mime_type: String,
    file_name: Option<String>,
    stored: bool,
    corrupt: bool,
}

impl FakeOnPrem {
    /// Starts the fake on `127.0.0.1:0` with a random password.
    pub async fn start() -> Self {
        let password = format!("Pw-{}!", random_hex(24));
        let state = Arc::new(Mutex::new(OnPremState {
            password: password.clone(),
            tokens: HashSet::new(),
            issued: Vec::new(),
            media: HashMap::new(),
            webhook_url: None,
            store_callbacks: VecDeque::new(),
            logins: 0,
            store_requests: HashMap::new(),
            media_gets: HashMap::new(),
            callback_deliveries: Vec::new(),
            http: reqwest::Client::new(),
        }));
        let handler_state = Arc::clone(&state);
        let server =
            TestServer::start(move |req| onprem_handle(Arc::clone(&handler_state), req)).await;
        let base_url = server.base_url();
        Self {
            server,
            base_url,
            password,
            state,
        }
    }

    /// `http://127.0.0.1:PORT`: the account's `api_url`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The API user ([`ONPREM_USERNAME`]).
    pub fn username(&self) -> &str {
        ONPREM_USERNAME
    }

    /// The API user's password (random per fake).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Where webhooks and store callbacks go (the Coreapp's `webhooks.url`).
    pub fn set_webhook_url(&self, url: &str) {
        lock(&self.state).webhook_url = Some(url.to_owned());
    }

    /// Registers an inbound media file of `kind` (`image`, `document`,
    /// `audio`, `video`, `voice`, `sticker`) and returns its media id. With
    /// `auto_download` the Coreapp already stored it and the webhook will
    /// carry `file`.
    pub fn add_media(
        &self,
        kind: &str,
        bytes: Vec<u8>,
        mime_type: &str,
        auto_download: bool,
    ) -> String {
        let id = uuid_v4();
        let file_name = (kind == "document").then(|| format!("file-{}.pdf", &id[..8]));
        lock(&self.state).media.insert(
            id.clone(),
            OnPremMedia {
                kind: kind.to_owned(),
                bytes: Bytes::from(bytes),
                mime_type: mime_type.to_owned(),
                file_name,
                stored: auto_download,
                corrupt: false,
            },
        );
        id
    }

    /// From now on `GET /v1/media/{id}` serves other bytes of the same length.
    pub fn corrupt(&self, media_id: &str) {
        if let Some(m) = lock(&self.state).media.get_mut(media_id) {
            m.corrupt = true;
        }
    }

    /// The inbound message webhook announcing `media_id`, as the Coreapp
    /// posts it: `contacts` + `messages[]` with the media object (`id`,
    /// `mime_type`, `sha256`, `caption`/`filename` where the type has them,
    /// and `file` when auto-downloaded).
    pub fn message_webhook(
        &self,
        media_id: &str,
        message_id: &str,
        timestamp: i64,
        hash: HashEncoding,
    ) -> Value {
        let st = lock(&self.state);
        let m = st
            .media
            .get(media_id)
            .unwrap_or_else(|| panic!("message_webhook: unknown media {media_id}"));
        let mut media = json!({ "id": media_id, "mime_type": m.mime_type });
        if let Some(sha) = encode_hash(&m.bytes, hash) {
            media["sha256"] = json!(sha);
        }
        if matches!(m.kind.as_str(), "image" | "video" | "document") {
            media["caption"] = json!(format!("a {}", m.kind));
        }
        if let Some(name) = &m.file_name {
            media["filename"] = json!(name);
        }
        if m.stored {
            media["file"] = json!(format!("/usr/local/wamedia/shared/{media_id}"));
        }
        let mut message = json!({
            "from": ONPREM_SENDER,
            "id": message_id,
            "timestamp": timestamp.to_string(),
            "type": m.kind,
        });
        message[m.kind.as_str()] = media;
        json!({
            "contacts": [{ "profile": { "name": "Kerry Fisher" }, "wa_id": ONPREM_SENDER }],
            "messages": [message],
        })
    }

    /// A store callback for `media_id` (success, or with `errors[]`), for
    /// tests that post one themselves (e.g. for an unknown id).
    pub fn store_callback_body(&self, media_id: &str, kind: &str, error: bool) -> Value {
        store_callback_body(media_id, kind, "image/jpeg", None, error)
    }

    /// POSTs `body` to the webhook URL, as the Coreapp does; the status.
    pub async fn deliver(&self, body: &Value) -> u16 {
        let (url, client) = {
            let st = lock(&self.state);
            (
                st.webhook_url.clone().expect("set_webhook_url first"),
                st.http.clone(),
            )
        };
        client
            .post(url)
            .json(body)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    /// What the next store requests do, one per request, in order.
    pub fn set_store_callbacks(&self, callbacks: Vec<StoreCallback>) {
        lock(&self.state).store_callbacks = callbacks.into();
    }

    /// Every token issued so far is refused (401) from now on.
    pub fn expire_tokens(&self) {
        lock(&self.state).tokens.clear();
    }

    /// Every bearer token issued so far (to check that none is logged).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state).issued.clone()
    }

    /// Successful logins so far.
    pub fn logins(&self) -> usize {
        lock(&self.state).logins
    }

    /// `GET /v1/media/{id}/download` requests for `media_id` (401s included).
    pub fn store_requests(&self, media_id: &str) -> usize {
        lock(&self.state)
            .store_requests
            .get(media_id)
            .copied()
            .unwrap_or(0)
    }

    /// `GET /v1/media/{id}` requests for `media_id` (refused ones included).
    pub fn media_gets(&self, media_id: &str) -> usize {
        lock(&self.state)
            .media_gets
            .get(media_id)
            .copied()
            .unwrap_or(0)
    }

    /// (media id, status answered) of every store-callback POST so far.
    pub fn callback_deliveries(&self) -> Vec<(String, u16)> {
        lock(&self.state).callback_deliveries.clone()
    }

    /// Stops the server now (dropping the fake does the same).
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

fn store_callback_body(
    media_id: &str,
    kind: &str,
    mime_type: &str,
    sha256: Option<String>,
    error: bool,
) -> Value {
    let mut media = json!({ "id": media_id, "mime_type": mime_type, "status": "downloaded" });
    if let Some(sha) = sha256 {
        media["sha256"] = json!(sha);
    }
    let mut item = json!({ "type": kind });
    item[kind] = media;
    if error {
        item["errors"] = json!([{
            "code": 400,
            "details": "Media not found in the datastore.",
            "title": "Parameter not valid",
        }]);
    }
    json!({ "media_items": [item] })
}

const ONPREM_META: &str = r#"{"api_status":"stable","version":"2.51.1"}"#;

fn onprem_error(status: u16, code: u16, title: &str, details: &str) -> Response<Body> {
    let meta: Value = serde_json::from_str(ONPREM_META).expect("meta JSON");
    http::json(
        status,
        &json!({ "meta": meta, "errors": [{ "code": code, "title": title, "details": details }] }),
    )
}

async fn onprem_handle(state: Arc<Mutex<OnPremState>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::POST, ["v1", "users", "login"]) => onprem_login(&state, &req),
        (&Method::GET, ["v1", "media", id, "download"]) => {
            let id = percent_decode(id);
            *lock(&state).store_requests.entry(id.clone()).or_default() += 1;
            if !onprem_authorized(&state, &req) {
                return onprem_unauthorized();
            }
            onprem_store(&state, &id)
        }
        (&Method::GET, ["v1", "media", id]) => {
            let id = percent_decode(id);
            *lock(&state).media_gets.entry(id.clone()).or_default() += 1;
            if !onprem_authorized(&state, &req) {
                return onprem_unauthorized();
            }
            onprem_media(&state, &id)
        }
        _ => onprem_error(404, 1006, "Resource not found", "URL path not found."),
    }
}

fn onprem_login(state: &Mutex<OnPremState>, req: &Request<Incoming>) -> Response<Body> {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let mut st = lock(state);
    let expected = format!("{ONPREM_USERNAME}:{}", st.password);
    if presented.as_deref() != Some(expected.as_str()) {
        drop(st);
        return onprem_error(401, 1005, "Access denied", "Invalid credentials.");
    }
    let token = format!("eyJ{}", random_hex(96));
    st.tokens.insert(token.clone());
    st.issued.push(token.clone());
    st.logins += 1;
    let expires = chrono::Utc::now() + chrono::Duration::days(7);
    let meta: Value = serde_json::from_str(ONPREM_META).expect("meta JSON");
    http::json(
        200,
        &json!({
            "users": [{
                "token": token,
                "expires_after": expires.format("%Y-%m-%d %H:%M:%S+00:00").to_string(),
            }],
            "meta": meta,
        }),
    )
}

/// Whether the request carries a token this fake issued and still honours.
fn onprem_authorized(state: &Mutex<OnPremState>, req: &Request<Incoming>) -> bool {
    bearer(req).is_some_and(|t| lock(state).tokens.contains(t))
}

fn onprem_unauthorized() -> Response<Body> {
    onprem_error(401, 1005, "Access denied", "Invalid or expired token.")
}

fn onprem_store(state: &Arc<Mutex<OnPremState>>, id: &str) -> Response<Body> {
    let (media, behaviour, url, client) = {
        let mut st = lock(state);
        let Some(media) = st.media.get(id).cloned() else {
            drop(st);
            return onprem_error(404, 1006, "Resource not found", "URL path not found.");
        };
        let behaviour = st
            .store_callbacks
            .pop_front()
            .unwrap_or(StoreCallback::After(Duration::ZERO));
        (media, behaviour, st.webhook_url.clone(), st.http.clone())
    };
    let (delay, error) = match behaviour {
        StoreCallback::After(d) => (Some(d), false),
        StoreCallback::Error(d) => (Some(d), true),
        StoreCallback::Never => (None, false),
    };
    if let (Some(delay), Some(url)) = (delay, url) {
        let state = Arc::clone(state);
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if !error && let Some(m) = lock(&state).media.get_mut(&id) {
                m.stored = true;
            }
            let sha = encode_hash(&media.bytes, HashEncoding::Hex);
            let body = store_callback_body(&id, &media.kind, &media.mime_type, sha, error);
            // The real client retries undelivered callbacks with a growing
            // delay, indefinitely; a few quick tries are enough here.
            for attempt in 0..5u64 {
                let status = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                lock(&state).callback_deliveries.push((id.clone(), status));
                if status == 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        });
    }
    let meta: Value = serde_json::from_str(ONPREM_META).expect("meta JSON");
    http::json(200, &json!({ "media_items": [{ "id": id }], "meta": meta }))
}

fn onprem_media(state: &Mutex<OnPremState>, id: &str) -> Response<Body> {
    let st = lock(state);
    let Some(m) = st.media.get(id).filter(|m| m.stored) else {
        drop(st);
        return onprem_error(404, 1006, "Resource not found", "Media not found.");
    };
    let bytes = if m.corrupt {
        Bytes::from(m.bytes.iter().map(|b| !b).collect::<Vec<u8>>())
    } else {
        m.bytes.clone()
    };
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, m.mime_type.as_str())
        .header(CONTENT_LENGTH, bytes.len())
        .body(http::full(bytes))
        .expect("valid response")
}

// ---------------------------------------------------------------------------
// Cloud API
// ---------------------------------------------------------------------------

/// The Graph API version in the fake's `graph_url`.
pub const GRAPH_VERSION: &str = "v21.0";
/// `metadata.phone_number_id` of the fake business number.
pub const PHONE_NUMBER_ID: &str = "106540352242922";
/// `metadata.display_phone_number` of the fake business number.
pub const DISPLAY_PHONE_NUMBER: &str = "15550783881";
/// The WhatsApp id messages come from.
pub const CLOUD_SENDER: &str = "16505551234";

/// A fault for the next `GET {graph}/{media-id}`, one per request, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphFault {
    /// Answer this status with a Graph-style error (401: OAuth code 190;
    /// 400: code 100; 429: code 4 with `Retry-After: 1`; 5xx: code 2).
    Status(u16),
    /// Answer 200 with a `sha256` that is not the file's.
    WrongSha256,
}

/// The fake Graph API and lookaside host; stops when dropped.
#[derive(Debug)]
pub struct FakeCloudApi {
    server: TestServer,
    base_url: String,
    access_token: String,
    app_secret: String,
    state: Arc<Mutex<CloudState>>,
}

#[derive(Debug)]
struct CloudState {
    base_url: String,
    access_token: String,
    media: HashMap<String, CloudMedia>,
    /// Links by their `hash` parameter.
    links: HashMap<String, CloudLink>,
    link_ttl: Duration,
    expire_next_links: usize,
    graph_faults: VecDeque<GraphFault>,
    media_info_calls: HashMap<String, usize>,
    downloads: HashMap<String, usize>,
}

#[derive(Debug)]
struct CloudMedia {
    kind: String,
    bytes: Bytes,
    mime_type: String,
    file_name: Option<String>,
    corrupt: bool,
}

#[derive(Debug)]
struct CloudLink {
    media_id: String,
    expires_at: Instant,
}

impl FakeCloudApi {
    /// Starts the fake on `127.0.0.1:0` with a random access token and app secret.
    pub async fn start() -> Self {
        let access_token = format!("EAAG{}", random_hex(120));
        let app_secret = random_hex(32);
        let state = Arc::new(Mutex::new(CloudState {
            base_url: String::new(),
            access_token: access_token.clone(),
            media: HashMap::new(),
            links: HashMap::new(),
            link_ttl: Duration::from_secs(300),
            expire_next_links: 0,
            graph_faults: VecDeque::new(),
            media_info_calls: HashMap::new(),
            downloads: HashMap::new(),
        }));
        let handler_state = Arc::clone(&state);
        let server =
            TestServer::start(move |req| cloud_handle(Arc::clone(&handler_state), req)).await;
        let base_url = server.base_url();
        lock(&state).base_url = base_url.clone();
        Self {
            server,
            base_url,
            access_token,
            app_secret,
            state,
        }
    }

    /// `http://127.0.0.1:PORT/v21.0`: the account's `graph_url`.
    pub fn graph_url(&self) -> String {
        format!("{}/{GRAPH_VERSION}", self.base_url)
    }

    /// The access token the Graph API accepts.
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The app secret webhooks are signed with.
    pub fn app_secret(&self) -> &str {
        &self.app_secret
    }

    /// Registers a media file of `kind` (`image`, `document`, `audio`,
    /// `video`, `sticker`); returns its (numeric) media id.
    pub fn add_media(&self, kind: &str, bytes: Vec<u8>, mime_type: &str) -> String {
        let id = format!(
            "{}",
            1_000_000_000_000_000u64 + rand::random::<u64>() % 1_000_000_000_000_000
        );
        let file_name = (kind == "document").then(|| "report.pdf".to_owned());
        lock(&self.state).media.insert(
            id.clone(),
            CloudMedia {
                kind: kind.to_owned(),
                bytes: Bytes::from(bytes),
                mime_type: mime_type.to_owned(),
                file_name,
                corrupt: false,
            },
        );
        id
    }

    /// From now on the media's links serve other bytes of the same length.
    pub fn corrupt(&self, media_id: &str) {
        if let Some(m) = lock(&self.state).media.get_mut(media_id) {
            m.corrupt = true;
        }
    }

    /// How long a handed-out `url` works (default 5 minutes).
    pub fn set_link_ttl(&self, ttl: Duration) {
        lock(&self.state).link_ttl = ttl;
    }

    /// The next `n` URLs handed out have expired by the time they are
    /// downloaded (they answer 404): the "expired between resolve and
    /// download" fault.
    pub fn expire_next_links(&self, n: usize) {
        lock(&self.state).expire_next_links = n;
    }

    /// Faults for the next media-info requests, one per request.
    pub fn inject_graph_faults(&self, faults: Vec<GraphFault>) {
        lock(&self.state).graph_faults.extend(faults);
    }

    /// `GET {graph}/{media-id}` requests for `media_id` (refused ones included).
    pub fn media_info_calls(&self, media_id: &str) -> usize {
        lock(&self.state)
            .media_info_calls
            .get(media_id)
            .copied()
            .unwrap_or(0)
    }

    /// Download requests for `media_id`'s links (refused ones included).
    pub fn downloads(&self, media_id: &str) -> usize {
        lock(&self.state)
            .downloads
            .get(media_id)
            .copied()
            .unwrap_or(0)
    }

    /// A messages webhook announcing `media_id`, in the documented
    /// envelope (`object`, `entry[].changes[].value` with `metadata`,
    /// `contacts` and `messages[]`).
    pub fn message_webhook(
        &self,
        media_id: &str,
        message_id: &str,
        timestamp: i64,
        hash: HashEncoding,
    ) -> Value {
        let st = lock(&self.state);
        let m = st
            .media
            .get(media_id)
            .unwrap_or_else(|| panic!("message_webhook: unknown media {media_id}"));
        let mut media = json!({ "mime_type": m.mime_type, "id": media_id });
        if let Some(sha) = encode_hash(&m.bytes, hash) {
            media["sha256"] = json!(sha);
        }
        if matches!(m.kind.as_str(), "image" | "video" | "document") {
            media["caption"] = json!(format!("a {}", m.kind));
        }
        if let Some(name) = &m.file_name {
            media["filename"] = json!(name);
        }
        let mut message = json!({
            "from": CLOUD_SENDER,
            "id": message_id,
            "timestamp": timestamp.to_string(),
            "type": m.kind,
        });
        message[m.kind.as_str()] = media;
        cloud_envelope(json!({
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": DISPLAY_PHONE_NUMBER,
                "phone_number_id": PHONE_NUMBER_ID,
            },
            "contacts": [{ "profile": { "name": "Kerry Fisher" }, "wa_id": CLOUD_SENDER }],
            "messages": [message],
        }))
    }

    /// A webhook with a text message and a delivery status (nothing to archive).
    pub fn text_and_status_webhook(&self, timestamp: i64) -> Value {
        cloud_envelope(json!({
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": DISPLAY_PHONE_NUMBER,
                "phone_number_id": PHONE_NUMBER_ID,
            },
            "contacts": [{ "profile": { "name": "Kerry Fisher" }, "wa_id": CLOUD_SENDER }],
            "messages": [{
                "from": CLOUD_SENDER,
                "id": format!("wamid.TEXT{}", random_hex(16)),
                "timestamp": timestamp.to_string(),
                "type": "text",
                "text": { "body": "hello" },
            }],
            "statuses": [{
                "id": format!("wamid.STATUS{}", random_hex(16)),
                "status": "delivered",
                "timestamp": timestamp.to_string(),
                "recipient_id": CLOUD_SENDER,
            }],
        }))
    }

    /// `sha256=<hex HMAC-SHA256(app_secret, body)>`: the `X-Hub-Signature-256`
    /// header Meta sends with `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        sign(&self.app_secret, body)
    }

    /// Stops the server now (dropping the fake does the same).
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn cloud_envelope(value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{ "value": value, "field": "messages" }],
        }],
    })
}

fn graph_error(status: u16, code: u16, kind: &str, message: &str) -> Response<Body> {
    http::json(
        status,
        &json!({ "error": {
            "message": message,
            "type": kind,
            "code": code,
            "fbtrace_id": format!("A{}", random_hex(22)),
        }}),
    )
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

async fn cloud_handle(state: Arc<Mutex<CloudState>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["whatsapp_business", "attachments", ""]) => cloud_download(&state, &req),
        (&Method::GET, [version, media_id]) if *version == GRAPH_VERSION => {
            cloud_media_info(&state, &req, &percent_decode(media_id))
        }
        _ => graph_error(
            400,
            100,
            "GraphMethodException",
            "Unsupported get request. Please read the Graph API documentation.",
        ),
    }
}

fn cloud_media_info(
    state: &Mutex<CloudState>,
    req: &Request<Incoming>,
    media_id: &str,
) -> Response<Body> {
    let mut st = lock(state);
    *st.media_info_calls.entry(media_id.to_owned()).or_default() += 1;
    if bearer(req) != Some(st.access_token.as_str()) {
        return graph_error(
            401,
            190,
            "OAuthException",
            "Invalid OAuth access token - Cannot parse access token",
        );
    }
    let fault = st.graph_faults.pop_front();
    match fault {
        Some(GraphFault::Status(401)) => {
            return graph_error(
                401,
                190,
                "OAuthException",
                "Error validating access token: Session has expired.",
            );
        }
        Some(GraphFault::Status(400)) => {
            return graph_error(400, 100, "OAuthException", "(#100) Invalid parameter");
        }
        Some(GraphFault::Status(429)) => {
            let mut r = graph_error(
                429,
                4,
                "OAuthException",
                "(#4) Application request limit reached",
            );
            r.headers_mut().insert(RETRY_AFTER, 1.into());
            return r;
        }
        Some(GraphFault::Status(s)) => {
            return graph_error(
                s,
                2,
                "OAuthException",
                "An unexpected error has occurred. Please retry your request later.",
            );
        }
        Some(GraphFault::WrongSha256) | None => {}
    }
    let Some(m) = st.media.get(media_id) else {
        return graph_error(
            400,
            100,
            "GraphMethodException",
            &format!(
                "Unsupported get request. Object with ID '{media_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
            ),
        );
    };
    let sha256 = if fault == Some(GraphFault::WrongSha256) {
        hex::encode(Sha256::digest(b"not the file"))
    } else {
        hex::encode(Sha256::digest(&m.bytes))
    };
    let (mime_type, size) = (m.mime_type.clone(), m.bytes.len());
    let handle = random_hex(40);
    let expired = st.expire_next_links > 0;
    st.expire_next_links = st.expire_next_links.saturating_sub(1);
    let expires_at = if expired {
        Instant::now()
    } else {
        Instant::now() + st.link_ttl
    };
    st.links.insert(
        handle.clone(),
        CloudLink {
            media_id: media_id.to_owned(),
            expires_at,
        },
    );
    let url = format!(
        "{}/whatsapp_business/attachments/?mid={media_id}&ext={}&hash={handle}",
        st.base_url,
        now_secs() + 300
    );
    http::json(
        200,
        &json!({
            "messaging_product": "whatsapp",
            "url": url,
            "mime_type": mime_type,
            "sha256": sha256,
            "file_size": size.to_string(),
            "id": media_id,
        }),
    )
}

fn cloud_download(state: &Mutex<CloudState>, req: &Request<Incoming>) -> Response<Body> {
    let handle = req
        .uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("hash="))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let mut st = lock(state);
    let Some((media_id, expires_at)) = st
        .links
        .get(&handle)
        .map(|l| (l.media_id.clone(), l.expires_at))
    else {
        return http::text(404, "Not Found");
    };
    *st.downloads.entry(media_id.clone()).or_default() += 1;
    if bearer(req) != Some(st.access_token.as_str()) {
        return http::text(401, "Unauthorized");
    }
    if Instant::now() >= expires_at {
        // The URL expired: lookaside answers 404.
        return http::text(404, "URL signature expired");
    }
    let Some(m) = st.media.get(&media_id) else {
        return http::text(404, "Not Found");
    };
    let bytes = if m.corrupt {
        Bytes::from(m.bytes.iter().map(|b| !b).collect::<Vec<u8>>())
    } else {
        m.bytes.clone()
    };
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, m.mime_type.as_str())
        .header(CONTENT_LENGTH, bytes.len())
        .body(http::full(bytes))
        .expect("valid response")
}

// ---------------------------------------------------------------------------

fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_hex(len: usize) -> String {
    let mut out = String::with_capacity(len + 32);
    while out.len() < len {
        out.push_str(&format!("{:032x}", rand::random::<u128>()));
    }
    out.truncate(len);
    out
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
