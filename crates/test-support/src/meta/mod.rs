//! Fakes of Meta's two WhatsApp Business APIs, each a real HTTP server on
//! `127.0.0.1:0`, behaving as providers.md sections 4 and 5 and
//! `sources/002_…` document, with faults to inject.
//!
//! - [`FakeOnPrem`] (`onprem`), the On-Premises API (the "WhatsApp
//!   Business API client"): login, the asynchronous media store and its
//!   callbacks, media downloads.
//! - [`FakeCloudApi`] (`cloudapi`), the Cloud API: the Graph media-info
//!   call, the lookaside media host with expiring links, signed webhooks.
//!
//! What they share lives here: both announce a file with the same media
//! object in `messages[]` (`id`, `mime_type`, `sha256`, `caption`,
//! `filename`) and serve its bytes the same way.

mod cloudapi;
mod onprem;

pub use cloudapi::{
    CLOUD_SENDER, DISPLAY_PHONE_NUMBER, FakeCloudApi, GRAPH_VERSION, GraphFault, PHONE_NUMBER_ID,
    sign,
};
pub use onprem::{FakeOnPrem, ONPREM_SENDER, ONPREM_USERNAME, StoreCallback};

use base64::Engine as _;
use bytes::Bytes;
use hyper::Response;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::http::{self, Body};

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

/// A media file registered with either fake.
#[derive(Debug, Clone)]
struct Media {
    /// `image`, `document`, `audio`, `video`, `voice` or `sticker`.
    kind: String,
    bytes: Bytes,
    mime_type: String,
    file_name: Option<String>,
    /// Serve other bytes of the same length (a corrupted store).
    corrupt: bool,
}

impl Media {
    fn new(kind: &str, bytes: Vec<u8>, mime_type: &str, file_name: Option<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            bytes: Bytes::from(bytes),
            mime_type: mime_type.to_owned(),
            file_name,
            corrupt: false,
        }
    }

    /// The `messages[]` entry from `sender` announcing this file as
    /// `media_id`: `from`, `id`, `timestamp`, `type` and the media object
    /// under the type's name (`caption` where the type has one).
    fn message(
        &self,
        sender: &str,
        media_id: &str,
        message_id: &str,
        timestamp: i64,
        hash: HashEncoding,
    ) -> Value {
        let mut media = json!({ "id": media_id, "mime_type": self.mime_type });
        if let Some(sha) = encode_hash(&self.bytes, hash) {
            media["sha256"] = json!(sha);
        }
        if matches!(self.kind.as_str(), "image" | "video" | "document") {
            media["caption"] = json!(format!("a {}", self.kind));
        }
        if let Some(name) = &self.file_name {
            media["filename"] = json!(name);
        }
        let mut message = json!({
            "from": sender,
            "id": message_id,
            "timestamp": timestamp.to_string(),
            "type": self.kind,
        });
        message[self.kind.as_str()] = media;
        message
    }

    /// A 200 with the file's bytes (inverted once corrupted), its type and
    /// its length.
    fn download(&self) -> Response<Body> {
        let bytes = if self.corrupt {
            Bytes::from(self.bytes.iter().map(|b| !b).collect::<Vec<u8>>())
        } else {
            self.bytes.clone()
        };
        Response::builder()
            .status(200)
            .header(CONTENT_TYPE, self.mime_type.as_str())
            .header(CONTENT_LENGTH, bytes.len())
            .body(http::full(bytes))
            .expect("valid response")
    }
}

/// The `contacts` of a webhook: the sender's profile.
fn contacts(sender: &str) -> Value {
    json!([{ "profile": { "name": "Kerry Fisher" }, "wa_id": sender }])
}
