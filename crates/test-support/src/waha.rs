//! A fake WAHA (devlikeapro/waha, providers.md section 7): a real HTTP
//! server on `127.0.0.1:0` that serves WAHA's files and its message
//! endpoint the way WAHA's local file storage does, builds its webhooks for
//! each engine, signs them, and delivers them with WAHA's retries.
//!
//! Routes:
//! - `GET /api/files/{session}/{file}`: a downloaded file, with
//!   `X-Api-Key` (or `?x-api-key=`); 401 without the right key. A file lives
//!   [`FakeWaha::set_files_lifetime`] (180 s, WAHA's default, unless
//!   changed) from its download and is gone after a
//!   [`FakeWaha::restart`], like WAHA's files folder: 404 then.
//! - `GET /api/{session}/chats/{chatId}/messages/{messageId}?downloadMedia=true`
//!   (`X-Api-Key`): the message (`WAMessage`), its file downloaded again
//!   under a new name with a fresh lifetime; 404 for an unknown message or
//!   session, 401 for a wrong key; faults from
//!   [`FakeWaha::inject_message_faults`] (422 "Session status is not as
//!   expected" while a session starts, 5xx).
//! - Webhooks ([`FakeWaha::webhook`]): the `message` / `message.any`
//!   envelope with the payload each engine sends: WEBJS and GOWS without a
//!   hash, NOWEB with the raw Baileys message in `_data` carrying
//!   `fileSha256` (base64). Signed with `X-Webhook-Hmac` (hex HMAC-SHA512
//!   of the body under the webhook's `hmac.key`) and delivered by
//!   [`FakeWaha::deliver`], which retries what is not answered 2xx.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use crate::http::{self, Body, TestServer, percent_decode};
use crate::ids::random_hex;
use crate::{lock, now_secs};

/// The fake's session name (WAHA's default).
pub const SESSION: &str = "default";
/// The session's own WhatsApp id (the envelope's `me.id`).
pub const ME: &str = "22222222222@c.us";
/// WAHA's default `WHATSAPP_FILES_LIFETIME`.
pub const DEFAULT_FILES_LIFETIME: Duration = Duration::from_secs(180);
/// How many times [`FakeWaha::deliver`] sends a webhook that is not
/// answered 2xx, and the pause between sends (WAHA's constant retry
/// policy, its 2 s base shortened for tests).
const DELIVERY_ATTEMPTS: usize = 3;
const DELIVERY_PAUSE: Duration = Duration::from_millis(200);

/// The WAHA engine a message came through; it decides the shape of
/// `payload._data` and whether the webhook vouches for a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// whatsapp-web.js: no hash.
    Webjs,
    /// Baileys: `_data.message.<type>Message.fileSha256`.
    Noweb,
    /// whatsmeow: no confirmed hash.
    Gows,
}

impl Engine {
    /// The envelope's `engine`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Webjs => "WEBJS",
            Engine::Noweb => "NOWEB",
            Engine::Gows => "GOWS",
        }
    }
}

/// What a webhook's `payload.media` says about the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaShape {
    /// WAHA downloaded the file: `media.url` points at it (its lifetime
    /// starts now).
    Downloaded,
    /// Download skipped by config: `media: null`.
    Null,
    /// Filtered by mimetype: `media.url: null`, `mimetype` set.
    UrlNull,
    /// The download failed: `media.url: null`, `media.error` set.
    Failed,
}

/// The fake; stops when dropped.
#[derive(Debug)]
pub struct FakeWaha {
    server: TestServer,
    base_url: String,
    api_key: String,
    hmac_key: String,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    base_url: String,
    api_key: String,
    files_lifetime: Duration,
    /// Files in the files folder, by URL path.
    files: HashMap<String, StoredFile>,
    /// Messages WhatsApp still serves, by message id.
    messages: HashMap<String, Message>,
    message_faults: VecDeque<u16>,
    file_gets: usize,
    message_calls: usize,
    refused_keys: usize,
}

#[derive(Debug)]
struct StoredFile {
    message_id: String,
    expires_at: Instant,
}

#[derive(Debug)]
struct Message {
    engine: Engine,
    chat_id: String,
    from_me: bool,
    wa_id: String,
    timestamp: i64,
    bytes: Bytes,
    mimetype: String,
    filename: Option<String>,
    /// The sha256 NOWEB's `_data` vouches for (the file's unless told to lie).
    claimed_sha256: [u8; 32],
    /// URL paths of the files downloaded for this message, oldest first.
    downloads: Vec<String>,
}

impl FakeWaha {
    /// Starts the fake on `127.0.0.1:0` with a random API key and HMAC key.
    pub async fn start() -> Self {
        let api_key = random_hex(32);
        let hmac_key = random_hex(40);
        let state = Arc::new(Mutex::new(State {
            base_url: String::new(),
            api_key: api_key.clone(),
            files_lifetime: DEFAULT_FILES_LIFETIME,
            files: HashMap::new(),
            messages: HashMap::new(),
            message_faults: VecDeque::new(),
            file_gets: 0,
            message_calls: 0,
            refused_keys: 0,
        }));
        let handler_state = Arc::clone(&state);
        let server = TestServer::start(move |req| handle(Arc::clone(&handler_state), req)).await;
        let base_url = server.base_url();
        lock(&state).base_url = base_url.clone();
        Self {
            server,
            base_url,
            api_key,
            hmac_key,
            state,
        }
    }

    /// `http://127.0.0.1:PORT`: the account's `api_url` (and `WAHA_BASE_URL`).
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The API key (`X-Api-Key`).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The webhook's `hmac.key`.
    pub fn hmac_key(&self) -> &str {
        &self.hmac_key
    }

    /// How long files downloaded from now on stay in the files folder.
    pub fn set_files_lifetime(&self, lifetime: Duration) {
        lock(&self.state).files_lifetime = lifetime;
    }

    /// WAHA restarts: the files folder is emptied (the messages stay on
    /// WhatsApp, so the message endpoint can download them again).
    pub fn restart(&self) {
        lock(&self.state).files.clear();
    }

    /// Statuses for the next message-endpoint calls, one per call.
    pub fn inject_message_faults(&self, statuses: Vec<u16>) {
        lock(&self.state).message_faults.extend(statuses);
    }

    /// A media message in `chat_id` (an own one with `from_me`), as it
    /// arrived through `engine`; returns its id (`{fromMe}_{chatId}_{waId}`).
    /// Nothing is downloaded yet: [`FakeWaha::webhook`] does that.
    pub fn add_message(
        &self,
        engine: Engine,
        chat_id: &str,
        from_me: bool,
        bytes: Vec<u8>,
        mimetype: &str,
        filename: Option<&str>,
    ) -> String {
        let wa_id = format!("3EB0{}", random_hex(16).to_uppercase());
        let id = format!("{from_me}_{chat_id}_{wa_id}");
        let claimed_sha256 = Sha256::digest(&bytes).into();
        lock(&self.state).messages.insert(
            id.clone(),
            Message {
                engine,
                chat_id: chat_id.to_owned(),
                from_me,
                wa_id,
                timestamp: now_secs(),
                bytes: Bytes::from(bytes),
                mimetype: mimetype.to_owned(),
                filename: filename.map(str::to_owned),
                claimed_sha256,
                downloads: Vec::new(),
            },
        );
        id
    }

    /// From now on the message's NOWEB `fileSha256` is not its file's.
    pub fn lie_about_sha256(&self, message_id: &str) {
        if let Some(m) = lock(&self.state).messages.get_mut(message_id) {
            m.claimed_sha256 = Sha256::digest(b"not the file").into();
        }
    }

    /// The `event` (`message` or `message.any`) webhook for a message added
    /// with [`FakeWaha::add_message`], its `media` as `shape` says
    /// ([`MediaShape::Downloaded`] downloads the file now).
    pub fn webhook(&self, message_id: &str, event: &str, shape: MediaShape) -> Value {
        let mut st = lock(&self.state);
        let url = (shape == MediaShape::Downloaded).then(|| st.download(message_id));
        let m = st
            .messages
            .get(message_id)
            .unwrap_or_else(|| panic!("webhook: unknown message {message_id}"));
        let media = match shape {
            MediaShape::Downloaded => m.media(url),
            MediaShape::Null => Value::Null,
            MediaShape::UrlNull => m.media(None),
            MediaShape::Failed => {
                let mut media = m.media(None);
                media["error"] = json!({"name": "Error", "message": "Media download failed"});
                media
            }
        };
        let engine = m.engine.as_str();
        json!({
            "id": format!("evt_{}", random_hex(26)),
            "timestamp": now_secs() * 1000,
            "event": event,
            "session": SESSION,
            "metadata": {},
            "me": {"id": ME, "pushName": "Archive test"},
            "payload": m.payload(message_id, media),
            "engine": engine,
            "environment": {"version": "2026.7.1", "engine": engine, "tier": "CORE", "browser": null},
        })
    }

    /// The `X-Webhook-Hmac` WAHA sends with `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        sign(&self.hmac_key, body)
    }

    /// The headers WAHA sends with `body`: the HMAC and its algorithm, a
    /// request id unique per request, the time in milliseconds.
    pub fn webhook_headers(&self, body: &[u8]) -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json".into()),
            ("x-webhook-hmac".into(), self.sign(body)),
            ("x-webhook-hmac-algorithm".into(), "sha512".into()),
            ("x-webhook-request-id".into(), random_hex(26)),
            (
                "x-webhook-timestamp".into(),
                (now_secs() * 1000).to_string(),
            ),
        ]
    }

    /// Delivers `body` to `url` as WAHA does, signed with `hmac_key` (the
    /// fake's, or a wrong one): resent after a pause while the answer is
    /// not 2xx, at most 3 times. Returns each answer's status.
    pub async fn deliver(&self, url: &str, body: &Value, hmac_key: &str) -> Vec<u16> {
        let raw = serde_json::to_vec(body).expect("serialize a webhook");
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for attempt in 0..DELIVERY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(DELIVERY_PAUSE).await;
            }
            let mut request = client.post(url).body(raw.clone());
            for (name, value) in self.webhook_headers(&raw) {
                let value = if name == "x-webhook-hmac" {
                    sign(hmac_key, &raw)
                } else {
                    value
                };
                request = request.header(name, value);
            }
            let status = request.send().await.map_or(0, |r| r.status().as_u16());
            statuses.push(status);
            if (200..300).contains(&status) {
                break;
            }
        }
        statuses
    }

    /// The URL of the newest file downloaded for `message_id`.
    pub fn media_url(&self, message_id: &str) -> Option<String> {
        let st = lock(&self.state);
        let path = st.messages.get(message_id)?.downloads.last()?.clone();
        Some(format!("{}{path}", st.base_url))
    }

    /// How many times WAHA downloaded `message_id`'s file (the webhook's
    /// and each re-download).
    pub fn downloads(&self, message_id: &str) -> usize {
        lock(&self.state)
            .messages
            .get(message_id)
            .map_or(0, |m| m.downloads.len())
    }

    /// File GETs received (refused ones included).
    pub fn file_gets(&self) -> usize {
        lock(&self.state).file_gets
    }

    /// Message-endpoint calls received (refused ones included).
    pub fn message_calls(&self) -> usize {
        lock(&self.state).message_calls
    }

    /// Requests refused for a wrong or missing `X-Api-Key`.
    pub fn refused_keys(&self) -> usize {
        lock(&self.state).refused_keys
    }

    /// Stops the server now (dropping the fake does the same).
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

/// Lower-case hex HMAC-SHA512 of `body` under `key`: WAHA's `X-Webhook-Hmac`.
pub fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl State {
    /// Downloads `message_id`'s file into the files folder under a new
    /// name; returns its URL.
    fn download(&mut self, message_id: &str) -> String {
        let m = self
            .messages
            .get_mut(message_id)
            .unwrap_or_else(|| panic!("download: unknown message {message_id}"));
        let path = format!(
            "/api/files/{SESSION}/{}-{}.{}",
            m.wa_id,
            random_hex(8),
            extension(&m.mimetype)
        );
        m.downloads.push(path.clone());
        self.files.insert(
            path.clone(),
            StoredFile {
                message_id: message_id.to_owned(),
                expires_at: Instant::now() + self.files_lifetime,
            },
        );
        format!("{}{path}", self.base_url)
    }
}

impl Message {
    /// `payload.media` with `url`.
    fn media(&self, url: Option<String>) -> Value {
        json!({"url": url, "mimetype": self.mimetype, "filename": self.filename, "error": null})
    }

    fn kind(&self) -> &'static str {
        match self.mimetype.split('/').next().unwrap_or("") {
            "image" => "image",
            "video" => "video",
            "audio" => "audio",
            _ => "document",
        }
    }

    /// The `WAMessage` with `media`, `_data` as the engine writes it.
    fn payload(&self, id: &str, media: Value) -> Value {
        let (from, to) = if self.from_me {
            (ME, self.chat_id.as_str())
        } else {
            (self.chat_id.as_str(), ME)
        };
        let kind = self.kind();
        let data = match self.engine {
            Engine::Webjs => json!({
                "id": {"fromMe": self.from_me, "remote": self.chat_id, "id": self.wa_id, "_serialized": id},
                "type": kind, "t": self.timestamp, "mimetype": self.mimetype,
            }),
            Engine::Noweb => {
                let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
                let mut stub = json!({
                    "url": "https://mmg.whatsapp.net/v/t62.7118-24/1_n.enc?ccb=11-4",
                    "mimetype": self.mimetype,
                    "fileSha256": b64(&self.claimed_sha256),
                    "fileLength": self.bytes.len().to_string(),
                    "mediaKey": b64(&Sha256::digest(self.wa_id.as_bytes())),
                    "fileEncSha256": b64(&Sha256::digest(&self.bytes[..self.bytes.len() / 2])),
                    "directPath": "/v/t62.7118-24/1_n.enc?ccb=11-4",
                    "mediaKeyTimestamp": self.timestamp.to_string(),
                });
                if let Some(name) = &self.filename {
                    stub["fileName"] = json!(name);
                }
                json!({
                    "key": {"remoteJid": self.chat_id, "fromMe": self.from_me, "id": self.wa_id},
                    "message": {format!("{kind}Message"): stub},
                    "messageTimestamp": self.timestamp,
                })
            }
            Engine::Gows => json!({
                "Info": {"Chat": self.chat_id, "IsFromMe": self.from_me, "ID": self.wa_id,
                    "Type": "media", "MediaType": kind, "Timestamp": self.timestamp},
                "Message": {format!("{kind}Message"): {"mimetype": self.mimetype}},
            }),
        };
        json!({
            "id": id,
            "timestamp": self.timestamp,
            "from": from,
            "fromMe": self.from_me,
            "source": if self.from_me { "api" } else { "app" },
            "to": to,
            "participant": null,
            "body": format!("a {kind}"),
            "hasMedia": true,
            "media": media,
            "ack": 1,
            "ackName": "SERVER",
            "_data": data,
        })
    }
}

/// WAHA names a file after its mimetype.
fn extension(mimetype: &str) -> &str {
    match mimetype {
        "image/jpeg" => "jpeg",
        "audio/ogg" | "audio/ogg; codecs=opus" => "oga",
        "application/pdf" => "pdf",
        other => other.rsplit('/').next().unwrap_or("bin"),
    }
}

fn waha_error(status: u16, message: &str) -> Response<Body> {
    http::json(status, &json!({"statusCode": status, "message": message}))
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if req.method() != Method::GET {
        return waha_error(405, "Method Not Allowed");
    }
    let is_file = matches!(segments.as_slice(), ["api", "files", ..]);
    let is_message = matches!(segments.as_slice(), ["api", _, "chats", _, "messages", _]);
    if !is_file && !is_message {
        return waha_error(404, &format!("Cannot GET {path}"));
    }
    {
        let mut st = lock(&state);
        if is_file {
            st.file_gets += 1;
        } else {
            st.message_calls += 1;
        }
        if api_key(&req) != Some(st.api_key.clone()) {
            st.refused_keys += 1;
            return waha_error(401, "Unauthorized");
        }
    }
    match segments.as_slice() {
        ["api", "files", ..] => serve_file(&state, &path),
        ["api", session, "chats", chat_id, "messages", message_id] => {
            let download = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == "downloadMedia=true"));
            message(&state, session, chat_id, message_id, download)
        }
        _ => waha_error(404, &format!("Cannot GET {path}")),
    }
}

/// `X-Api-Key`, or the `x-api-key` query parameter.
fn api_key(req: &Request<Incoming>) -> Option<String> {
    if let Some(v) = req.headers().get("x-api-key") {
        return v.to_str().ok().map(str::to_owned);
    }
    req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "x-api-key")
            .map(|(_, v)| v.into_owned())
    })
}

fn serve_file(state: &Mutex<State>, path: &str) -> Response<Body> {
    let mut st = lock(state);
    let Some(file) = st.files.get(path) else {
        return waha_error(404, &format!("Cannot GET {path}"));
    };
    if Instant::now() >= file.expires_at {
        // WAHA's cleanup removed it.
        st.files.remove(path);
        return waha_error(404, &format!("Cannot GET {path}"));
    }
    let m = &st.messages[&file.message_id];
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, m.mimetype.as_str())
        .header(CONTENT_LENGTH, m.bytes.len())
        .body(http::full(m.bytes.clone()))
        .expect("valid response")
}

fn message(
    state: &Mutex<State>,
    session: &str,
    chat_id: &str,
    message_id: &str,
    download: bool,
) -> Response<Body> {
    let mut st = lock(state);
    if session != SESSION {
        return waha_error(
            404,
            &format!("We didn't find a session with name '{session}'."),
        );
    }
    if let Some(status) = st.message_faults.pop_front() {
        return match status {
            422 => http::json(
                422,
                &json!({"statusCode": 422, "session": SESSION, "status": "STARTING",
                    "expected": ["WORKING"],
                    "message": "Session status is not as expected. Try again later or restart the session"}),
            ),
            s => waha_error(s, "Injected failure"),
        };
    }
    if st
        .messages
        .get(message_id)
        .is_none_or(|m| m.chat_id != chat_id)
    {
        return waha_error(404, "Message not found");
    }
    let media = if download {
        let url = st.download(message_id);
        st.messages[message_id].media(Some(url))
    } else {
        Value::Null
    };
    http::json(200, &st.messages[message_id].payload(message_id, media))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: &str, key: Option<&str>) -> u16 {
        let mut request = reqwest::Client::new().get(url);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send().await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn files_need_the_key_expire_after_their_lifetime_and_vanish_on_restart() {
        let fake = FakeWaha::start().await;
        let id = fake.add_message(
            Engine::Webjs,
            "1@c.us",
            false,
            vec![7; 10],
            "image/jpeg",
            None,
        );
        fake.set_files_lifetime(Duration::from_millis(300));
        fake.webhook(&id, "message", MediaShape::Downloaded);
        let url = fake.media_url(&id).unwrap();
        assert!(url.ends_with(".jpeg"), "{url}");
        assert_eq!(get(&url, None).await, 401);
        assert_eq!(get(&url, Some("wrong")).await, 401);
        assert_eq!(get(&url, Some(fake.api_key())).await, 200);
        let by_query = format!("{url}?x-api-key={}", fake.api_key());
        assert_eq!(get(&by_query, None).await, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(get(&url, Some(fake.api_key())).await, 404, "expired");

        fake.set_files_lifetime(DEFAULT_FILES_LIFETIME);
        let again = format!(
            "{}/api/{SESSION}/chats/1@c.us/messages/{id}?downloadMedia=true",
            fake.base_url()
        );
        assert_eq!(get(&again, Some(fake.api_key())).await, 200);
        let fresh = fake.media_url(&id).unwrap();
        assert_ne!(fresh, url, "downloaded again under a new name");
        assert_eq!(get(&fresh, Some(fake.api_key())).await, 200);
        fake.restart();
        assert_eq!(get(&fresh, Some(fake.api_key())).await, 404, "restarted");
        assert_eq!(fake.downloads(&id), 2);
        assert_eq!(fake.refused_keys(), 2);
    }

    #[tokio::test]
    async fn webhooks_are_signed_and_redelivered_until_answered_2xx() {
        let fake = FakeWaha::start().await;
        let answers = Arc::new(Mutex::new(vec![500u16, 200]));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s, key) = (
            Arc::clone(&answers),
            Arc::clone(&seen),
            fake.hmac_key().to_owned(),
        );
        let receiver = TestServer::start(move |req: Request<Incoming>| {
            let (a, s, key) = (Arc::clone(&a), Arc::clone(&s), key.clone());
            async move {
                let hmac = req.headers()["x-webhook-hmac"].to_str().unwrap().to_owned();
                let body = http::read_body(req, 1 << 20).await.unwrap();
                lock(&s).push(hmac == sign(&key, &body));
                let status = lock(&a).remove(0);
                http::text(status, "")
            }
        })
        .await;
        let id = fake.add_message(
            Engine::Noweb,
            "1@c.us",
            false,
            vec![1],
            "application/pdf",
            None,
        );
        let hook = fake.webhook(&id, "message", MediaShape::Downloaded);
        let statuses = fake
            .deliver(&receiver.base_url(), &hook, fake.hmac_key())
            .await;
        assert_eq!(statuses, [500, 200]);
        assert_eq!(*lock(&seen), [true, true]);
        assert_eq!(
            hook["payload"]["_data"]["message"]["documentMessage"]["fileSha256"]
                .as_str()
                .unwrap()
                .len(),
            44
        );
    }
}
