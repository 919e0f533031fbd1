//! A fake Green API (green-api.com, WhatsApp HTTP API): a real HTTP server on
//! `127.0.0.1:0` serving both the API host (`apiUrl`) and the file host that
//! `downloadUrl`s point at, with faults to inject on either.
//!
//! Routes, as documented (providers.md §1, sources/000 and 003):
//! - `GET|HEAD /files/{idInstance}/{uuid}{ext}`: a file, `Content-Type` from
//!   its mime type, `Content-Length` exact. Unknown paths answer 404 with an
//!   S3-style XML error, like the real object storage.
//! - `POST /waInstance{idInstance}/downloadFile/{apiTokenInstance}` with
//!   `{"chatId","idMessage"}`: 200 `{"downloadUrl": <fresh link>}`; 400
//!   "File message encrypted url not found by chatId X and idMessage Y" for
//!   an unknown message; 401 for a wrong instance or token.
//! - `POST /waInstance{idInstance}/getMessage/{apiTokenInstance}` (the
//!   WhatsApp product's path; `/v3/` is the MAX product): the message JSON, or
//!   400 "Message not found by id 'X'".
//!
//! API errors carry the documented text in `{"code": N, "description": text}`.
//! The exact JSON envelope of Green API errors is not documented publicly
//! (UNCONFIRMED); clients should look for the text, not the shape.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use crate::http::{self, Body, TestServer};
use crate::ids::{random_hex, uuid_v4};
use crate::{lock, now_secs};

/// The fake instance's id (the console shows it as `idInstance`).
pub const ID_INSTANCE: &str = "1101000001";
/// The WhatsApp id of the fake instance's own phone (`instanceData.wid`).
pub const INSTANCE_WID: &str = "79876543210@c.us";
/// The member who "sent" messages in group chats (`senderData.sender`).
pub const GROUP_PARTICIPANT: &str = "79001234568@c.us";

/// A fault for one request, consumed in order, one per request.
///
/// On the file host ([`FakeGreenApi::inject_file_faults`]):
/// - `Status(s)`: answer `s` with an S3-style XML error body.
/// - `TooManyRequests`: 429 with `Retry-After: retry_after_secs`.
/// - `Stall(d)`: send the headers (200, full `Content-Length`), then no byte
///   for `d`, then the file (a client with a shorter read timeout gives up).
/// - `Truncate(n)`: 200 with the full `Content-Length`, send `n` bytes,
///   break the connection.
/// - `WrongBytes`: 200, same length, different bytes.
/// - `Gone`: 403 on this link from now on (the link "expired"); a
///   `downloadFile` call hands out a fresh link that works.
///
/// On `downloadFile` ([`FakeGreenApi::inject_api_faults`]): `Status(s)` answers
/// `s` (400 "instance in starting process try later", 500 "Internal error when
/// downloading file by chatId … and idMessage …", others the reason phrase),
/// `TooManyRequests` a 429 with `Retry-After`, `Stall(d)` answers normally after
/// `d`, `Truncate(n)` breaks the JSON answer after `n` bytes, `WrongBytes`
/// answers 200 with a body that is not JSON, `Gone` answers 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFault {
    Status(u16),
    TooManyRequests { retry_after_secs: u64 },
    Stall(Duration),
    Truncate(usize),
    WrongBytes,
    Gone,
}

/// The fake; stops when dropped.
#[derive(Debug)]
pub struct FakeGreenApi {
    server: TestServer,
    base_url: String,
    api_token: String,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    base_url: String,
    api_token: String,
    /// Download links by URL path; several links may share one file.
    links: HashMap<String, Link>,
    /// Messages by (chatId, idMessage).
    messages: HashMap<(String, String), Message>,
    api_faults: VecDeque<FileFault>,
    download_file_calls: usize,
    get_message_calls: usize,
}

#[derive(Debug)]
struct Link {
    file: Arc<FileData>,
    faults: VecDeque<FileFault>,
    gone: bool,
    hits: usize,
}

#[derive(Debug)]
struct FileData {
    bytes: Bytes,
    mime_type: String,
    file_name: String,
}

#[derive(Debug)]
struct Message {
    file: Arc<FileData>,
    /// The newest link handed out for this message.
    download_url: String,
    type_webhook: String,
    type_message: String,
    timestamp: i64,
}

impl FakeGreenApi {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0", &random_hex(50))
            .await
            .expect("bind the fake Green API on 127.0.0.1:0")
    }

    /// Starts the fake on a fixed address with a fixed token (the demo
    /// provider of `config/dev.toml`).
    pub async fn start_on(addr: &str, api_token: &str) -> std::io::Result<Self> {
        let api_token = api_token.to_owned();
        let state = Arc::new(Mutex::new(State {
            base_url: String::new(),
            api_token: api_token.clone(),
            links: HashMap::new(),
            messages: HashMap::new(),
            api_faults: VecDeque::new(),
            download_file_calls: 0,
            get_message_calls: 0,
        }));
        let handler_state = Arc::clone(&state);
        let server =
            TestServer::start_on(addr, move |req| handle(Arc::clone(&handler_state), req)).await?;
        let base_url = server.base_url();
        lock(&state).base_url = base_url.clone();
        Ok(Self {
            server,
            base_url,
            api_token,
            state,
        })
    }

    /// `http://127.0.0.1:PORT`: the `apiUrl` and the file host alike.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// `idInstance` ([`ID_INSTANCE`]).
    pub fn id_instance(&self) -> &str {
        ID_INSTANCE
    }

    /// `apiTokenInstance`, random per fake (50 hex digits, like real ones).
    pub fn api_token(&self) -> &str {
        &self.api_token
    }

    /// Registers a file message and returns its `downloadUrl`
    /// (`{base}/files/{idInstance}/{uuid}{ext}`, `ext` from the mime type).
    /// The message is "incoming", its `typeMessage` guessed from the mime
    /// type, until [`FakeGreenApi::file_webhook`] says otherwise.
    pub fn add_file(
        &self,
        chat_id: &str,
        id_message: &str,
        bytes: Vec<u8>,
        mime_type: &str,
        file_name: &str,
    ) -> String {
        let file = Arc::new(FileData {
            bytes: Bytes::from(bytes),
            mime_type: mime_type.to_owned(),
            file_name: file_name.to_owned(),
        });
        let mut st = lock(&self.state);
        let url = st.new_link(Arc::clone(&file));
        st.messages.insert(
            (chat_id.to_owned(), id_message.to_owned()),
            Message {
                file,
                download_url: url.clone(),
                type_webhook: "incomingMessageReceived".to_owned(),
                type_message: type_message_for(mime_type).to_owned(),
                timestamp: now_secs(),
            },
        );
        url
    }

    /// A webhook body announcing a file message, in the documented shape.
    /// `fileName` and `mimeType` come from the registered message (or the
    /// link); the message's type and timestamp are updated to match, so
    /// `getMessage` agrees with the webhook.
    pub fn file_webhook(
        &self,
        type_webhook: &str,
        type_message: &str,
        chat_id: &str,
        id_message: &str,
        download_url: &str,
        timestamp: i64,
    ) -> Value {
        let mut st = lock(&self.state);
        let path = link_path(&st.base_url, download_url).to_owned();
        let file = match st
            .messages
            .get_mut(&(chat_id.to_owned(), id_message.to_owned()))
        {
            Some(m) => {
                m.type_webhook = type_webhook.to_owned();
                m.type_message = type_message.to_owned();
                m.timestamp = timestamp;
                Some(Arc::clone(&m.file))
            }
            None => st.links.get(&path).map(|l| Arc::clone(&l.file)),
        };
        let (mime_type, file_name) = file
            .as_ref()
            .map(|f| (f.mime_type.as_str(), f.file_name.as_str()))
            .unwrap_or(("application/octet-stream", "file"));

        let mut file_data = json!({
            "downloadUrl": download_url,
            "caption": "",
            "fileName": file_name,
            "jpegThumbnail": "",
            "mimeType": mime_type,
            "isForwarded": false,
            "forwardingScore": 0,
        });
        match type_message {
            "imageMessage" | "stickerMessage" => file_data["isAnimated"] = json!(false),
            "videoMessage" => file_data["videoNote"] = json!(false),
            _ => {}
        }
        json!({
            "typeWebhook": type_webhook,
            "instanceData": {
                "idInstance": ID_INSTANCE.parse::<u64>().expect("numeric idInstance"),
                "wid": INSTANCE_WID,
                "typeInstance": "whatsapp",
            },
            "timestamp": timestamp,
            "idMessage": id_message,
            "senderData": sender_data(type_webhook, chat_id),
            "messageData": {
                "typeMessage": type_message,
                "fileMessageData": file_data,
            },
        })
    }

    /// Faults for the next GETs of `download_url`, one per request, in order.
    pub fn inject_file_faults(&self, download_url: &str, faults: Vec<FileFault>) {
        let mut st = lock(&self.state);
        let path = link_path(&st.base_url, download_url).to_owned();
        let link = st.links.get_mut(&path).unwrap_or_else(|| {
            panic!("inject_file_faults: {download_url} is not a link of this fake")
        });
        link.faults.extend(faults);
    }

    /// Faults for the next `downloadFile` calls, one per call, in order.
    pub fn inject_api_faults(&self, faults: Vec<FileFault>) {
        lock(&self.state).api_faults.extend(faults);
    }

    /// How many GETs `download_url` received (faulted ones included).
    pub fn file_hits(&self, download_url: &str) -> usize {
        let st = lock(&self.state);
        st.links
            .get(link_path(&st.base_url, download_url))
            .map_or(0, |l| l.hits)
    }

    /// How many `downloadFile` requests arrived (rejected ones included).
    pub fn download_file_calls(&self) -> usize {
        lock(&self.state).download_file_calls
    }

    /// How many `getMessage` requests arrived (rejected ones included).
    pub fn get_message_calls(&self) -> usize {
        lock(&self.state).get_message_calls
    }

    /// Stops the server now (dropping the fake does the same).
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

impl State {
    /// Registers a new link to `file` and returns its full URL.
    fn new_link(&mut self, file: Arc<FileData>) -> String {
        let path = format!(
            "/files/{ID_INSTANCE}/{}{}",
            uuid_v4(),
            ext_for(&file.mime_type, &file.file_name)
        );
        let url = format!("{}{path}", self.base_url);
        self.links.insert(
            path,
            Link {
                file,
                faults: VecDeque::new(),
                gone: false,
                hits: 0,
            },
        );
        url
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["files", ..]) => {
            let head = req.method() == Method::HEAD;
            serve_file(&state, &path, head)
        }
        (&Method::POST, [instance, method @ ("downloadFile" | "getMessage"), token])
            if instance.starts_with("waInstance") =>
        {
            let id = &instance["waInstance".len()..];
            let (id, token, method) = (id.to_owned(), (*token).to_owned(), *method);
            if method == "downloadFile" {
                download_file(&state, &id, &token, req).await
            } else {
                get_message(&state, &id, &token, req).await
            }
        }
        (_, [instance, _, _]) if instance.starts_with("waInstance") => {
            api_error(405, "Method Not Allowed")
        }
        _ => api_error(404, "Not Found"),
    }
}

fn serve_file(state: &Mutex<State>, path: &str, head: bool) -> Response<Body> {
    let (file, fault) = {
        let mut st = lock(state);
        let Some(link) = st.links.get_mut(path) else {
            return s3_error(404, "NoSuchKey", "The specified key does not exist.");
        };
        let fault = if head {
            link.gone.then_some(FileFault::Gone)
        } else {
            link.hits += 1;
            if link.gone {
                Some(FileFault::Gone)
            } else {
                link.faults.pop_front()
            }
        };
        if fault == Some(FileFault::Gone) {
            link.gone = true;
        }
        (Arc::clone(&link.file), fault)
    };
    let ok = |body: Body| {
        Response::builder()
            .status(200)
            .header(CONTENT_TYPE, file.mime_type.as_str())
            .header(CONTENT_LENGTH, file.bytes.len())
            .body(if head { http::empty() } else { body })
            .expect("valid response")
    };
    match fault {
        None => ok(http::full(file.bytes.clone())),
        Some(FileFault::Status(status)) => s3_error(status, s3_code(status), "Injected failure."),
        Some(FileFault::TooManyRequests { retry_after_secs }) => {
            let mut r = s3_error(429, "SlowDown", "Please reduce your request rate.");
            r.headers_mut().insert(RETRY_AFTER, retry_after_secs.into());
            r
        }
        Some(FileFault::Stall(delay)) => ok(http::slow_body(
            Bytes::new(),
            delay,
            file.bytes.clone(),
            false,
        )),
        Some(FileFault::Truncate(n)) => {
            let n = n.min(file.bytes.len());
            ok(http::slow_body(
                file.bytes.slice(..n),
                Duration::ZERO,
                Bytes::new(),
                true,
            ))
        }
        Some(FileFault::WrongBytes) => {
            let wrong: Vec<u8> = file.bytes.iter().map(|b| !b).collect();
            ok(http::full(wrong))
        }
        Some(FileFault::Gone) => s3_error(403, "AccessDenied", "Request has expired"),
    }
}

async fn download_file(
    state: &Mutex<State>,
    id: &str,
    token: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    lock(state).download_file_calls += 1;
    let (chat_id, id_message) = match authorized_ids(state, id, token, req).await {
        Ok(ids) => ids,
        Err(e) => return e.into_response(),
    };
    let fault = lock(state).api_faults.pop_front();
    let mut truncate = None;
    match fault {
        None => {}
        Some(FileFault::Status(status)) => {
            let text = match status {
                400 => "instance in starting process try later".to_owned(),
                500 => format!(
                    "Internal error when downloading file by chatId {chat_id} and idMessage {id_message}"
                ),
                s => reason(s).to_owned(),
            };
            return api_error(status, &text);
        }
        Some(FileFault::TooManyRequests { retry_after_secs }) => {
            let mut r = api_error(429, "Too Many Requests");
            r.headers_mut().insert(RETRY_AFTER, retry_after_secs.into());
            return r;
        }
        Some(FileFault::Stall(delay)) => tokio::time::sleep(delay).await,
        Some(FileFault::Truncate(n)) => truncate = Some(n),
        Some(FileFault::WrongBytes) => {
            return http::response(200, "application/json", "<html>Bad Gateway</html>");
        }
        Some(FileFault::Gone) => return api_error(403, "Forbidden"),
    }

    let url = {
        let mut st = lock(state);
        let key = (chat_id.clone(), id_message.clone());
        let Some(file) = st.messages.get(&key).map(|m| Arc::clone(&m.file)) else {
            drop(st);
            return api_error(
                400,
                &format!(
                    "File message encrypted url not found by chatId {chat_id} and idMessage {id_message}"
                ),
            );
        };
        let url = st.new_link(file);
        if let Some(m) = st.messages.get_mut(&key) {
            m.download_url = url.clone();
        }
        url
    };
    let answer = json!({ "downloadUrl": url });
    match truncate {
        None => http::json(200, &answer),
        Some(n) => http::truncated_json(&answer, n),
    }
}

async fn get_message(
    state: &Mutex<State>,
    id: &str,
    token: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    lock(state).get_message_calls += 1;
    let (chat_id, id_message) = match authorized_ids(state, id, token, req).await {
        Ok(ids) => ids,
        Err(e) => return e.into_response(),
    };
    let st = lock(state);
    let Some(m) = st.messages.get(&(chat_id.clone(), id_message.clone())) else {
        return api_error(400, &format!("Message not found by id '{id_message}'"));
    };
    let outgoing = m.type_webhook != "incomingMessageReceived";
    let mut body = json!({
        "type": if outgoing { "outgoing" } else { "incoming" },
        "idMessage": id_message,
        "timestamp": m.timestamp,
        "typeMessage": m.type_message,
        "chatId": chat_id,
        "isForwarded": false,
        "forwardingScore": 0,
        "downloadUrl": m.download_url,
        "caption": "",
        "fileName": m.file.file_name,
        "jpegThumbnail": "",
        "mimeType": m.file.mime_type,
        "deletedMessageId": "",
        "editedMessageId": "",
        "isEdited": false,
        "isDeleted": false,
    });
    if outgoing {
        body["statusMessage"] = json!("delivered");
        body["sendByApi"] = json!(m.type_webhook == "outgoingAPIMessageReceived");
    } else {
        let sender = sender_data("incomingMessageReceived", &chat_id);
        body["senderId"] = sender["sender"].clone();
        body["senderName"] = sender["senderName"].clone();
        body["senderContactName"] = sender["senderContactName"].clone();
    }
    if matches!(
        m.type_message.as_str(),
        "imageMessage" | "stickerMessage" | "videoMessage"
    ) {
        body["isAnimated"] = json!(false);
    }
    http::json(200, &body)
}

/// An API error answer: the status and the documented text.
struct ApiError(u16, &'static str);

impl ApiError {
    fn into_response(self) -> Response<Body> {
        api_error(self.0, self.1)
    }
}

/// Checks the `waInstance{id}` and token path segments, then reads the
/// `{"chatId","idMessage"}` body, validated as the docs describe.
async fn authorized_ids(
    state: &Mutex<State>,
    id: &str,
    token: &str,
    req: Request<Incoming>,
) -> Result<(String, String), ApiError> {
    if id != ID_INSTANCE || token != lock(state).api_token {
        return Err(ApiError(401, "Unauthorized"));
    }
    let body = http::read_body(req, 64 * 1024)
        .await
        .ok_or(ApiError(400, "Validation failed"))?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError(400, "Validation failed"))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    match (field("chatId"), field("idMessage")) {
        (_, Some(id)) if id.is_empty() => Err(ApiError(
            400,
            "Validation failed. Details: 'idMessage' is not allowed to be empty",
        )),
        (Some(chat), Some(id)) => Ok((chat, id)),
        _ => Err(ApiError(
            400,
            "Validation failed. Details: 'value' must have at least 2 keys",
        )),
    }
}

fn sender_data(type_webhook: &str, chat_id: &str) -> Value {
    let group = chat_id.ends_with("@g.us");
    let chat_name = if group { "Test group" } else { "Test contact" };
    if type_webhook == "incomingMessageReceived" {
        json!({
            "chatId": chat_id,
            "chatName": chat_name,
            "sender": if group { GROUP_PARTICIPANT } else { chat_id },
            "senderName": "Test contact",
            "senderContactName": "Test contact",
        })
    } else {
        json!({
            "chatId": chat_id,
            "chatName": chat_name,
            "sender": INSTANCE_WID,
            "senderName": "Test instance",
            "senderContactName": "",
        })
    }
}

fn api_error(status: u16, description: &str) -> Response<Body> {
    http::json(
        status,
        &json!({ "code": status, "description": description }),
    )
}

fn s3_error(status: u16, code: &str, message: &str) -> Response<Body> {
    http::response(
        status,
        "application/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ),
    )
}

fn s3_code(status: u16) -> &'static str {
    match status {
        403 => "AccessDenied",
        404 => "NoSuchKey",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "InjectedFault",
    }
}

fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The path part of one of this fake's links (`download_url` may be a full
/// URL on this fake or already a path).
fn link_path<'a>(base_url: &str, download_url: &'a str) -> &'a str {
    let path = download_url.strip_prefix(base_url).unwrap_or(download_url);
    path.split(['?', '#']).next().unwrap_or(path)
}

fn type_message_for(mime_type: &str) -> &'static str {
    match mime_type.split('/').next().unwrap_or("") {
        "image" if mime_type == "image/webp" => "stickerMessage",
        "image" => "imageMessage",
        "video" => "videoMessage",
        "audio" => "audioMessage",
        _ => "documentMessage",
    }
}

fn ext_for(mime_type: &str, file_name: &str) -> String {
    let known = match mime_type.split(';').next().unwrap_or("").trim() {
        "image/jpeg" => Some(".jpg"),
        "image/png" => Some(".png"),
        "image/webp" => Some(".webp"),
        "image/gif" => Some(".gif"),
        "video/mp4" => Some(".mp4"),
        "video/3gpp" => Some(".3gp"),
        "audio/ogg" => Some(".ogg"),
        "audio/mpeg" => Some(".mp3"),
        "audio/mp4" => Some(".m4a"),
        "application/pdf" => Some(".pdf"),
        "text/plain" => Some(".txt"),
        _ => None,
    };
    match known {
        Some(ext) => ext.to_owned(),
        None => match file_name.rsplit_once('.') {
            Some((_, ext))
                if !ext.is_empty()
                    && ext.len() <= 5
                    && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                format!(".{ext}")
            }
            _ => String::new(),
        },
    }
}
