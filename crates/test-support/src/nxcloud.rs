//! A fake NXCloud WhatsApp API (providers.md section 6, `sources/004_…`):
//! `getMedia` with its `sign` checked on every request, an OSS-like file host
//! whose links are signed and expire, and builders for inbound webhooks
//! (signed the same way, for accounts that verify them).
//!
//! Routes:
//! - `POST /api/wa/getMedia`: headers `accessKey`, `ts` (ms, within ±60 s),
//!   `bizType` (`2`), `action` (`getMedia`) and `sign` = lowercase hex MD5 of
//!   `accessKey=..&action=..&bizType=..&ts=..&body=<raw body>&accessSecret=<secret>`.
//!   Any mismatch answers HTTP 200 with `{"code":1001,...}` (authentication);
//!   a body without `business_phone`, `messaging_product` or `Media-ID`
//!   answers code 9000, an unknown business phone 9006, an unknown media id
//!   -1, as documented. Success: `{"code":0,"data":{mime_type, file_name,
//!   url},"message":"Request successful"}`.
//! - `GET /oss/{object}?Expires=..&OSSAccessKeyId=..&Signature=..`: the
//!   file, if the signature is this fake's and `Expires` has not passed;
//!   403 with an OSS XML error otherwise.
//!
//! The signature is computed here independently of the daemon's adapter.
//!
//! Faults ([`NxFault`]), one per request, in order: on `getMedia` after its
//! signature was checked ([`FakeNxcloud::inject_api_faults`]), or on the
//! next file downloads, whatever the object ([`FakeNxcloud::inject_file_faults`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::http::{self, Body, TestServer};
use crate::ids::uuid_v4;
use crate::lock;

/// The merchant number the fake serves.
pub const BUSINESS_PHONE: &str = "8615800001795";

/// A fault for one request, consumed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NxFault {
    /// Answer this HTTP status (a JSON body on `getMedia`, an OSS XML
    /// error on the file host).
    Status(u16),
    /// 429 with `Retry-After: retry_after_secs`.
    TooManyRequests { retry_after_secs: u64 },
    /// `getMedia`: answer normally after this delay. File host: send the
    /// headers (full `Content-Length`), then no byte for this long, then
    /// the file.
    Stall(Duration),
    /// 200 with the full `Content-Length`, only `n` bytes of the answer
    /// (the JSON, or the file), then a broken connection.
    Truncate(usize),
}

/// The fake; stops when dropped.
#[derive(Debug)]
pub struct FakeNxcloud {
    server: TestServer,
    base_url: String,
    access_key: String,
    access_secret: String,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    base_url: String,
    access_key: String,
    access_secret: String,
    oss_secret: [u8; 32],
    link_ttl: Duration,
    media: HashMap<String, Media>,
    get_media_calls: usize,
    bad_signatures: usize,
    file_hits: usize,
    api_faults: VecDeque<NxFault>,
    file_faults: VecDeque<NxFault>,
}

#[derive(Debug)]
struct Media {
    bytes: Bytes,
    mime_type: String,
    file_name: String,
}

impl FakeNxcloud {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let access_key = format!("{:013x}", rand::random::<u64>() & 0xf_ffff_ffff_ffff);
        let access_secret = format!("{:032x}", rand::random::<u128>());
        let state = Arc::new(Mutex::new(State {
            base_url: String::new(),
            access_key: access_key.clone(),
            access_secret: access_secret.clone(),
            oss_secret: rand::random(),
            link_ttl: Duration::from_secs(600),
            media: HashMap::new(),
            get_media_calls: 0,
            bad_signatures: 0,
            file_hits: 0,
            api_faults: VecDeque::new(),
            file_faults: VecDeque::new(),
        }));
        let handler_state = Arc::clone(&state);
        let server = TestServer::start(move |req| handle(Arc::clone(&handler_state), req)).await;
        let base_url = server.base_url();
        lock(&state).base_url = base_url.clone();
        Self {
            server,
            base_url,
            access_key,
            access_secret,
            state,
        }
    }

    /// `http://127.0.0.1:PORT`: the account's `api_url` and the file host.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The account's `access_key`.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The account's `access_secret`.
    pub fn access_secret(&self) -> &str {
        &self.access_secret
    }

    /// How long handed-out file links live (default 10 minutes).
    pub fn set_link_ttl(&self, ttl: Duration) {
        lock(&self.state).link_ttl = ttl;
    }

    /// Registers a file and returns its media id (a UUID, like NXCloud's).
    pub fn add_media(&self, bytes: Vec<u8>, mime_type: &str, file_name: &str) -> String {
        let id = uuid_v4();
        lock(&self.state).media.insert(
            id.clone(),
            Media {
                bytes: Bytes::from(bytes),
                mime_type: mime_type.to_owned(),
                file_name: file_name.to_owned(),
            },
        );
        id
    }

    /// An inbound media message webhook in the accepted (Cloud-API-like) shape.
    pub fn message_webhook(
        &self,
        kind: &str,
        media_id: &str,
        message_id: &str,
        from: &str,
        timestamp: i64,
    ) -> Value {
        let st = lock(&self.state);
        let mime_type = st
            .media
            .get(media_id)
            .map_or("application/octet-stream", |m| m.mime_type.as_str());
        let mut media = json!({"id": media_id, "mime_type": mime_type});
        if kind == "document" {
            media["filename"] = json!(
                st.media
                    .get(media_id)
                    .map_or("file", |m| m.file_name.as_str())
            );
        }
        json!({
            "business_phone": BUSINESS_PHONE,
            "messaging_product": "whatsapp",
            "contacts": [{"profile": {"name": "Test contact"}, "wa_id": from}],
            "messages": [{
                "from": from,
                "id": message_id,
                "timestamp": timestamp.to_string(),
                "type": kind,
                kind: media,
            }],
        })
    }

    /// The headers NXCloud would sign a callback with (`action` as given),
    /// over exactly `body`.
    pub fn signed_headers(&self, action: &str, body: &[u8]) -> Vec<(String, String)> {
        self.signed_headers_with(&self.access_secret, action, body)
    }

    /// [`FakeNxcloud::signed_headers`] with another secret (a sender that
    /// does not know this fake's).
    pub fn signed_headers_with(
        &self,
        access_secret: &str,
        action: &str,
        body: &[u8],
    ) -> Vec<(String, String)> {
        let ts = now_ms().to_string();
        let pairs = [
            ("accessKey", self.access_key.as_str()),
            ("action", action),
            ("bizType", "2"),
            ("ts", ts.as_str()),
        ];
        let sign = sign(&pairs, body, access_secret);
        let mut headers: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        headers.push(("sign".to_owned(), sign));
        headers
    }

    /// Faults for the next signed `getMedia` calls, one per call, in order.
    pub fn inject_api_faults(&self, faults: Vec<NxFault>) {
        lock(&self.state).api_faults.extend(faults);
    }

    /// Faults for the next file downloads (any object), one per request.
    pub fn inject_file_faults(&self, faults: Vec<NxFault>) {
        lock(&self.state).file_faults.extend(faults);
    }

    /// getMedia requests received (refused ones included).
    pub fn get_media_calls(&self) -> usize {
        lock(&self.state).get_media_calls
    }

    /// getMedia requests refused for their signature or headers.
    pub fn bad_signatures(&self) -> usize {
        lock(&self.state).bad_signatures
    }

    /// File downloads received (refused ones included).
    pub fn file_hits(&self) -> usize {
        lock(&self.state).file_hits
    }

    /// Stops the server now (dropping the fake does the same).
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// `MD5(sorted k=v joined by & + "&body=" + body (if any) + "&accessSecret=" + secret)`.
fn sign(pairs: &[(&str, &str)], body: &[u8], secret: &str) -> String {
    let mut pairs = pairs.to_vec();
    pairs.sort();
    let mut md5 = Md5::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            md5.update(b"&");
        }
        md5.update(format!("{k}={v}").as_bytes());
    }
    if !body.is_empty() {
        md5.update(b"&body=");
        md5.update(body);
    }
    md5.update(b"&accessSecret=");
    md5.update(secret.as_bytes());
    hex::encode(md5.finalize())
}

fn answer(code: i64, message: &str, data: Value) -> Response<Body> {
    http::json(
        200,
        &json!({"code": code, "message": message, "data": data}),
    )
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::POST, "/api/wa/getMedia") => get_media(&state, req).await,
        (&Method::GET, p) if p.starts_with("/oss/") => serve_file(&state, &req),
        _ => http::json(
            404,
            &json!({"code": 404, "message": "Not Found", "data": null}),
        ),
    }
}

async fn get_media(state: &Mutex<State>, req: Request<Incoming>) -> Response<Body> {
    lock(state).get_media_calls += 1;
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (key, ts, biz, action, presented) = (
        header("accessKey"),
        header("ts"),
        header("bizType"),
        header("action"),
        header("sign"),
    );
    let Some(body) = http::read_body(req, 64 * 1024).await else {
        return answer(9000, "Parameter exception", Value::Null);
    };
    let (secret, expected_key) = {
        let st = lock(state);
        (st.access_secret.clone(), st.access_key.clone())
    };
    let refused = |why: &str| {
        lock(state).bad_signatures += 1;
        answer(1001, &format!("Authentication failed: {why}"), Value::Null)
    };
    let (Some(key), Some(ts), Some(biz), Some(action), Some(presented)) =
        (key, ts, biz, action, presented)
    else {
        return refused("missing header");
    };
    if key != expected_key {
        return refused("unknown accessKey");
    }
    let fresh = ts
        .parse::<u128>()
        .is_ok_and(|t| t.abs_diff(now_ms()) <= 60_000);
    if ts.len() != 13 || !fresh {
        return refused("ts out of range");
    }
    if biz != "2" || action != "getMedia" {
        return refused("bizType/action");
    }
    let pairs = [
        ("accessKey", key.as_str()),
        ("action", action.as_str()),
        ("bizType", biz.as_str()),
        ("ts", ts.as_str()),
    ];
    if presented != sign(&pairs, &body, &secret) {
        return refused("sign mismatch");
    }
    let fault = lock(state).api_faults.pop_front();
    let mut truncate = None;
    match fault {
        None => {}
        Some(NxFault::Status(status)) => {
            return http::json(
                status,
                &json!({"code": status, "message": "Injected failure", "data": null}),
            );
        }
        Some(NxFault::TooManyRequests { retry_after_secs }) => {
            let mut r = http::json(
                429,
                &json!({"code": 429, "message": "Too Many Requests", "data": null}),
            );
            r.headers_mut().insert(RETRY_AFTER, retry_after_secs.into());
            return r;
        }
        Some(NxFault::Stall(delay)) => tokio::time::sleep(delay).await,
        Some(NxFault::Truncate(n)) => truncate = Some(n),
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return answer(9000, "Parameter exception", Value::Null);
    };
    let (Some(phone), Some("whatsapp"), Some(id)) = (
        request["business_phone"].as_str(),
        request["messaging_product"].as_str(),
        request["Media-ID"].as_str(),
    ) else {
        return answer(9000, "Parameter exception", Value::Null);
    };
    if phone != BUSINESS_PHONE {
        return answer(
            9006,
            "The WhatsApp number is not bound to any application",
            Value::Null,
        );
    }
    let st = lock(state);
    let Some(media) = st.media.get(id) else {
        return answer(-1, "Request failed", Value::Null);
    };
    let (mime_type, file_name) = (media.mime_type.clone(), media.file_name.clone());
    let expires = SystemTime::now()
        .checked_add(st.link_ttl)
        .unwrap_or(SystemTime::now())
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = oss_signature(&st.oss_secret, id, expires);
    let url = format!(
        "{}/oss/{id}?Expires={expires}&OSSAccessKeyId=LTAI5tFakeAccessKey&Signature={}",
        st.base_url,
        percent_encode(&signature)
    );
    let data = json!({"mime_type": mime_type, "file_name": file_name, "url": url});
    match truncate {
        None => answer(0, "Request successful", data),
        Some(n) => http::truncated_json(
            &json!({"code": 0, "message": "Request successful", "data": data}),
            n,
        ),
    }
}

fn serve_file(state: &Mutex<State>, req: &Request<Incoming>) -> Response<Body> {
    let mut st = lock(state);
    st.file_hits += 1;
    let id = req.uri().path().trim_start_matches("/oss/").to_owned();
    let query: HashMap<String, String> =
        req.uri().query().map(url_decode_pairs).unwrap_or_default();
    let expires = query.get("Expires").and_then(|e| e.parse::<u64>().ok());
    let Some(expires) = expires else {
        return oss_error("AccessDenied", "Missing Expires");
    };
    let valid = query
        .get("Signature")
        .is_some_and(|s| *s == oss_signature(&st.oss_secret, &id, expires));
    if !valid {
        return oss_error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now >= expires {
        return oss_error("AccessDenied", "Request has expired.");
    }
    let Some(media) = st.media.get(&id) else {
        return oss_error("NoSuchKey", "The specified key does not exist.");
    };
    let (bytes, mime_type) = (media.bytes.clone(), media.mime_type.clone());
    let fault = st.file_faults.pop_front();
    drop(st);
    let ok = |body: Body| {
        Response::builder()
            .status(200)
            .header(CONTENT_TYPE, mime_type.as_str())
            .header(CONTENT_LENGTH, bytes.len())
            .body(body)
            .expect("valid response")
    };
    match fault {
        None => ok(http::full(bytes.clone())),
        Some(NxFault::Status(status)) => http::response(
            status,
            "application/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InjectedFault</Code><Message>Injected failure.</Message></Error>",
        ),
        Some(NxFault::TooManyRequests { retry_after_secs }) => {
            let mut r = http::response(
                429,
                "application/xml",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
            );
            r.headers_mut().insert(RETRY_AFTER, retry_after_secs.into());
            r
        }
        Some(NxFault::Stall(delay)) => {
            ok(http::slow_body(Bytes::new(), delay, bytes.clone(), false))
        }
        Some(NxFault::Truncate(n)) => ok(http::slow_body(
            bytes.slice(..n.min(bytes.len())),
            Duration::ZERO,
            Bytes::new(),
            true,
        )),
    }
}

fn oss_signature(secret: &[u8; 32], object: &str, expires: u64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(format!("GET\n{object}\n{expires}").as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn oss_error(code: &str, message: &str) -> Response<Body> {
    let status = if code == "NoSuchKey" { 404 } else { 403 };
    http::response(
        status,
        "application/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ),
    )
}

fn percent_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn url_decode_pairs(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}
