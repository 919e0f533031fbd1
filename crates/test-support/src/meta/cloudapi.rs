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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper::header::RETRY_AFTER;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{HashEncoding, Media, contacts};
use crate::http::{self, Body, TestServer, bearer, percent_decode};
use crate::ids::random_hex;
use crate::{lock, now_secs};

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
    media: HashMap<String, Media>,
    /// Links by their `hash` parameter.
    links: HashMap<String, CloudLink>,
    link_ttl: Duration,
    expire_next_links: usize,
    graph_faults: VecDeque<GraphFault>,
    media_info_calls: HashMap<String, usize>,
    downloads: HashMap<String, usize>,
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
        lock(&self.state)
            .media
            .insert(id.clone(), Media::new(kind, bytes, mime_type, file_name));
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
        let message = m.message(CLOUD_SENDER, media_id, message_id, timestamp, hash);
        cloud_envelope(json!({ "messages": [message] }))
    }

    /// A webhook with a text message and a delivery status (nothing to archive).
    pub fn text_and_status_webhook(&self, timestamp: i64) -> Value {
        cloud_envelope(json!({
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

/// A webhook from the fake business number: `events` (`messages`,
/// `statuses`) in the `value` of one change, with its `metadata` and
/// `contacts`.
fn cloud_envelope(events: Value) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": DISPLAY_PHONE_NUMBER,
            "phone_number_id": PHONE_NUMBER_ID,
        },
        "contacts": contacts(CLOUD_SENDER),
    });
    if let (Some(value), Value::Object(events)) = (value.as_object_mut(), events) {
        value.extend(events);
    }
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
    match st.media.get(&media_id) {
        Some(m) => m.download(),
        None => http::text(404, "Not Found"),
    }
}
