//! A fake WhatsApp media CDN (`mmg.whatsapp.net`) serving end-to-end
//! encrypted blobs, with faults to inject.
//!
//! [`FakeWhatsappCdn::add_media`] encrypts a plaintext as a WhatsApp client
//! does (providers.md section 3: HKDF-SHA256 of a random `mediaKey` with the
//! media type's info string, AES-256-CBC with PKCS#7, the first 10 bytes of
//! HMAC-SHA256 over `iv || ciphertext` appended) and returns the media stub a
//! Baileys-based gateway would put in its webhook. This encryption is
//! written here, separately from the daemon's `whatsapp-media` crate (whose
//! correctness is pinned by independent test vectors), so an end-to-end test
//! does not merely check that one implementation agrees with itself.
//!
//! Routes: `GET /v/t62.7118-24/{id}_n.enc?...` (query ignored, as whatsmeow
//! appends its own) answers the blob as `application/octet-stream` with an
//! exact `Content-Length`; unknown paths answer 404.
//!
//! The gateway fakes ([`crate::codechat`], [`crate::evolution`]) look media up
//! here by `directPath` and `mediaKey` to play the gateway that decrypts
//! server-side (and that can still get a file the CDN no longer has, as the
//! real ones do by asking the sender's phone to upload it again).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::http::{self, Body, TestServer};

/// A fault for one GET of a blob, consumed in order, one per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdnFault {
    /// Answer this status once.
    Status(u16),
    /// 410 Gone on this blob from now on (the CDN forgot it).
    Gone,
    /// 200 with the blob, one byte flipped (same length).
    Tampered,
    /// 200 with the full `Content-Length`, `n` bytes, then a broken connection.
    Truncate(usize),
}

/// The media stub of an encrypted file, as a Baileys message carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaStub {
    /// `imageMessage`, `videoMessage`, `documentMessage`, ...
    pub message_type: String,
    /// `https://<cdn>/v/...enc?...&mms3=true` (here: this fake's address).
    pub url: String,
    /// The same path and query, without host and `mms3`.
    pub direct_path: String,
    /// The 32-byte key the blob is encrypted with.
    pub media_key: [u8; 32],
    /// sha256 of the plaintext.
    pub file_sha256: [u8; 32],
    /// sha256 of the blob (ciphertext and MAC).
    pub file_enc_sha256: [u8; 32],
    /// Plaintext length.
    pub file_length: u64,
    /// The mime type.
    pub mimetype: String,
    /// A document's file name.
    pub file_name: Option<String>,
}

impl std::fmt::Debug for MediaStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStub")
            .field("message_type", &self.message_type)
            .field("direct_path", &self.direct_path)
            .field("file_length", &self.file_length)
            .field("mimetype", &self.mimetype)
            .finish_non_exhaustive()
    }
}

impl MediaStub {
    /// The stub as protobuf `toJSON` writes it (CodeChat): bytes as standard
    /// base64, 64-bit integers as decimal strings.
    pub fn to_base64_json(&self) -> Value {
        let mut v = json!({
            "url": self.url,
            "mimetype": self.mimetype,
            "fileSha256": STANDARD.encode(self.file_sha256),
            "fileLength": self.file_length.to_string(),
            "mediaKey": STANDARD.encode(self.media_key),
            "fileEncSha256": STANDARD.encode(self.file_enc_sha256),
            "directPath": self.direct_path,
            "mediaKeyTimestamp": "1700000000",
        });
        self.add_type_fields(&mut v);
        v
    }

    /// The stub as Evolution writes it: `Uint8Array`s through
    /// `JSON.stringify`, i.e. index-keyed objects (`{"0":18,"1":217,...}`),
    /// and `fileLength` as a protobuf.js Long `{low, high, unsigned}`.
    pub fn to_index_keyed_json(&self) -> Value {
        let mut v = json!({
            "url": self.url,
            "mimetype": self.mimetype,
            "fileSha256": index_keyed(&self.file_sha256),
            "fileLength": {"low": self.file_length & 0xffff_ffff, "high": self.file_length >> 32, "unsigned": true},
            "mediaKey": index_keyed(&self.media_key),
            "fileEncSha256": index_keyed(&self.file_enc_sha256),
            "directPath": self.direct_path,
            "mediaKeyTimestamp": {"low": 1_700_000_000, "high": 0, "unsigned": false},
        });
        self.add_type_fields(&mut v);
        v
    }

    fn add_type_fields(&self, v: &mut Value) {
        match self.message_type.as_str() {
            "imageMessage" | "stickerMessage" => {
                v["height"] = json!(720);
                v["width"] = json!(1280);
            }
            "videoMessage" | "ptvMessage" => v["seconds"] = json!(12),
            "audioMessage" => {
                v["seconds"] = json!(7);
                v["ptt"] = json!(true);
            }
            "documentMessage" => {
                v["fileName"] = json!(self.file_name.clone().unwrap_or_else(|| "file".into()));
            }
            _ => {}
        }
    }

    /// The path part of `direct_path` (what this fake keys blobs by).
    pub fn path(&self) -> &str {
        self.direct_path
            .split('?')
            .next()
            .unwrap_or(&self.direct_path)
    }
}

/// A JS `Uint8Array` through `JSON.stringify`.
pub fn index_keyed(bytes: &[u8]) -> Value {
    Value::Object(
        bytes
            .iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), json!(b)))
            .collect(),
    )
}

/// The fake; stops when dropped.
#[derive(Debug)]
pub struct FakeWhatsappCdn {
    server: TestServer,
    base_url: String,
    registry: CdnRegistry,
}

/// A handle on the CDN's media, shared with the gateway fakes.
#[derive(Debug, Clone)]
pub struct CdnRegistry(Arc<Mutex<HashMap<String, Blob>>>);

#[derive(Debug)]
struct Blob {
    stub: MediaStub,
    blob: Bytes,
    plaintext: Bytes,
    faults: VecDeque<CdnFault>,
    gone: bool,
    hits: usize,
}

impl CdnRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Blob>> {
        crate::lock(&self.0)
    }

    /// What a gateway that decrypts server-side would answer for a stub:
    /// the plaintext, if `direct_path_or_url` names a blob here and
    /// `media_key` is its key (whether or not the CDN still serves it).
    pub fn plaintext(
        &self,
        direct_path_or_url: &str,
        media_key: &[u8],
    ) -> Option<(Bytes, MediaStub)> {
        let path = path_of(direct_path_or_url);
        let media = self.lock();
        let blob = media.get(path)?;
        (blob.stub.media_key.as_slice() == media_key)
            .then(|| (blob.plaintext.clone(), blob.stub.clone()))
    }

    /// [`CdnRegistry::plaintext`] of a media object as a gateway receives
    /// it in a download request (its `directPath`, else its `url`), with
    /// the key the gateway decoded from it.
    pub(crate) fn plaintext_of(
        &self,
        media: &serde_json::Value,
        media_key: Option<Vec<u8>>,
    ) -> Option<(Bytes, MediaStub)> {
        let path = media["directPath"]
            .as_str()
            .or_else(|| media["url"].as_str())?;
        self.plaintext(path, &media_key?)
    }
}

fn path_of(direct_path_or_url: &str) -> &str {
    let s = direct_path_or_url;
    let s = match s.find("://") {
        Some(i) => {
            let rest = &s[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => s,
    };
    s.split('?').next().unwrap_or(s)
}

impl FakeWhatsappCdn {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let registry = CdnRegistry(Arc::new(Mutex::new(HashMap::new())));
        let handler_registry = registry.clone();
        let server = TestServer::start(move |req| {
            let registry = handler_registry.clone();
            async move { serve(&registry, req) }
        })
        .await;
        let base_url = server.base_url();
        Self {
            server,
            base_url,
            registry,
        }
    }

    /// `http://127.0.0.1:PORT`: an account's `cdn_url`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The media, for the gateway fakes.
    pub fn registry(&self) -> CdnRegistry {
        self.registry.clone()
    }

    /// Encrypts `plaintext` with a fresh random key for `message_type`
    /// (`imageMessage`, `videoMessage`, `audioMessage`, `documentMessage`,
    /// `stickerMessage`, `ptvMessage`), stores the blob and returns its stub.
    pub fn add_media(
        &self,
        message_type: &str,
        plaintext: Vec<u8>,
        mimetype: &str,
        file_name: Option<&str>,
    ) -> MediaStub {
        let media_key: [u8; 32] = rand::random();
        let blob = encrypt(&media_key, message_type, &plaintext);
        let id: u64 = rand::random();
        let path = format!("/v/t62.7118-24/{id}_n.enc");
        let query = format!(
            "ccb=11-4&oh=01_Q5AaI{:016x}&oe={:08X}&_nc_sid=5e03e0",
            rand::random::<u64>(),
            0x7000_0000u32
        );
        let stub = MediaStub {
            message_type: message_type.to_owned(),
            url: format!("{}{path}?{query}&mms3=true", self.base_url),
            direct_path: format!("{path}?{query}"),
            media_key,
            file_sha256: Sha256::digest(&plaintext).into(),
            file_enc_sha256: Sha256::digest(&blob).into(),
            file_length: plaintext.len() as u64,
            mimetype: mimetype.to_owned(),
            file_name: file_name.map(str::to_owned),
        };
        self.registry.lock().insert(
            path,
            Blob {
                stub: stub.clone(),
                blob: Bytes::from(blob),
                plaintext: Bytes::from(plaintext),
                faults: VecDeque::new(),
                gone: false,
                hits: 0,
            },
        );
        stub
    }

    /// Faults for the next GETs of this blob, one per request, in order.
    pub fn inject_faults(&self, stub: &MediaStub, faults: Vec<CdnFault>) {
        let mut media = self.registry.lock();
        let blob = media
            .get_mut(stub.path())
            .expect("inject_faults: not a blob of this CDN");
        blob.faults.extend(faults);
    }

    /// The encrypted blob as stored (before any fault).
    pub fn blob(&self, stub: &MediaStub) -> Bytes {
        self.registry
            .lock()
            .get(stub.path())
            .map(|b| b.blob.clone())
            .expect("blob: not a blob of this CDN")
    }

    /// How many GETs this blob received (faulted ones included).
    pub fn hits(&self, stub: &MediaStub) -> usize {
        self.registry.lock().get(stub.path()).map_or(0, |b| b.hits)
    }

    /// Stops the server now (dropping the fake does the same).
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

fn serve(registry: &CdnRegistry, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return http::text(405, "Method Not Allowed");
    }
    let (blob, fault) = {
        let mut media = registry.lock();
        let Some(blob) = media.get_mut(req.uri().path()) else {
            return http::text(404, "Not Found");
        };
        blob.hits += 1;
        let fault = if blob.gone {
            Some(CdnFault::Gone)
        } else {
            blob.faults.pop_front()
        };
        if fault == Some(CdnFault::Gone) {
            blob.gone = true;
        }
        (blob.blob.clone(), fault)
    };
    let len = blob.len();
    let ok = |body: Body| {
        Response::builder()
            .status(200)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .body(body)
            .expect("valid response")
    };
    match fault {
        None => ok(http::full(blob)),
        Some(CdnFault::Status(status)) => http::text(status, "injected failure"),
        Some(CdnFault::Gone) => http::text(410, "Gone"),
        Some(CdnFault::Tampered) => {
            let mut bytes = blob.to_vec();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            ok(http::full(bytes))
        }
        Some(CdnFault::Truncate(n)) => ok(http::slow_body(
            blob.slice(..n.min(blob.len())),
            std::time::Duration::ZERO,
            Bytes::new(),
            true,
        )),
    }
}

/// The HKDF info string of a message type.
fn hkdf_info(message_type: &str) -> &'static [u8] {
    match message_type {
        "imageMessage" | "stickerMessage" => b"WhatsApp Image Keys",
        "videoMessage" | "ptvMessage" => b"WhatsApp Video Keys",
        "audioMessage" => b"WhatsApp Audio Keys",
        _ => b"WhatsApp Document Keys",
    }
}

/// A WhatsApp client's upload encryption: `ciphertext || mac[..10]`.
pub fn encrypt(media_key: &[u8; 32], message_type: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut expanded = [0u8; 112];
    Hkdf::<Sha256>::new(None, media_key)
        .expand(hkdf_info(message_type), &mut expanded)
        .expect("112 is a valid HKDF length");
    let (iv, rest) = expanded.split_at(16);
    let (cipher_key, rest) = rest.split_at(32);
    let mac_key = &rest[..32];
    let mut buf = vec![0u8; plaintext.len() + 16];
    buf[..plaintext.len()].copy_from_slice(plaintext);
    let ciphertext_len = cbc::Encryptor::<Aes256>::new(cipher_key.into(), iv.into())
        .encrypt_padded_mut::<Pkcs7>(&mut buf, plaintext.len())
        .expect("room for the padding")
        .len();
    buf.truncate(ciphertext_len);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("any key length");
    mac.update(iv);
    mac.update(&buf);
    buf.extend_from_slice(&mac.finalize().into_bytes()[..10]);
    buf
}
