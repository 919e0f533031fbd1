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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use super::{HashEncoding, Media, contacts, encode_hash};
use crate::http::{self, Body, TestServer, bearer, percent_decode};
use crate::ids::{random_hex, uuid_v4};
use crate::lock;

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
    media: Media,
    /// In the Coreapp's media store: `GET /v1/media/{id}` serves it.
    stored: bool,
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
                media: Media::new(kind, bytes, mime_type, file_name),
                stored: auto_download,
            },
        );
        id
    }

    /// From now on `GET /v1/media/{id}` serves other bytes of the same length.
    pub fn corrupt(&self, media_id: &str) {
        if let Some(m) = lock(&self.state).media.get_mut(media_id) {
            m.media.corrupt = true;
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
        let mut message = m
            .media
            .message(ONPREM_SENDER, media_id, message_id, timestamp, hash);
        if m.stored {
            message[m.media.kind.as_str()]["file"] =
                json!(format!("/usr/local/wamedia/shared/{media_id}"));
        }
        json!({ "contacts": contacts(ONPREM_SENDER), "messages": [message] })
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
        let Some(OnPremMedia { media, .. }) = st.media.get(id).cloned() else {
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
    match st.media.get(id).filter(|m| m.stored) {
        Some(m) => m.media.download(),
        None => onprem_error(404, 1006, "Resource not found", "Media not found."),
    }
}
