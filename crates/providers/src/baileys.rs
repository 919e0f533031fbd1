//! What the two Baileys-based gateways (CodeChat, Evolution) share: the
//! WhatsApp media stub inside their webhooks, and the direct CDN download of
//! the encrypted blob it points at (providers.md sections 2 and 3).
//!
//! A stub is `{url, directPath, mediaKey, fileSha256, fileEncSha256,
//! fileLength, mimetype, ...}`. Byte fields arrive as base64 (CodeChat,
//! protobuf `toJSON`) or as index-keyed objects (Evolution's `Uint8Array`s),
//! 64-bit fields as numbers, strings or `{low,high}`: all go through
//! `archiver_core::decode`. The parsed stub is stored in the job payload in
//! one canonical form (base64 key, hex hashes) and read back at resolve time.

use archiver_core::decode;
use archiver_core::{Secret, Sha256Digest};
use media_fetch::{DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use whatsapp_media::{EncryptedMedia, MediaKey, MediaType};

use crate::config::AccountKeys;
use crate::{
    Direction, MediaDetails, MediaKind, MediaSource, ProviderError, ResolvedMedia, invalid,
    opt_string,
};

/// Message types whose content is a downloadable media stub.
pub(crate) const MEDIA_MESSAGES: [&str; 7] = [
    "imageMessage",
    "videoMessage",
    "audioMessage",
    "documentMessage",
    "stickerMessage",
    "ptvMessage",
    "documentWithCaptionMessage",
];

/// The WhatsApp CDN host Baileys falls back to (`DEF_MEDIA_HOST`).
pub(crate) const DEFAULT_CDN_URL: &str = "https://mmg.whatsapp.net";

/// `cdn_url`'s default in the CodeChat and Evolution account tables.
pub(crate) fn default_cdn_url() -> String {
    DEFAULT_CDN_URL.to_owned()
}

/// Hosts CDN downloads may reach unless the account lists its own.
pub(crate) const DEFAULT_CDN_HOSTS: [&str; 1] = ["*.whatsapp.net"];
/// Baileys and whatsmeow send this `Origin` to the CDN.
const CDN_ORIGIN: &str = "https://web.whatsapp.com";

/// How an account of a Baileys-based gateway gets the bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Download the encrypted blob from the CDN and decrypt it here; ask the
    /// gateway only when the CDN says the blob is gone (403/404/410).
    #[default]
    Direct,
    /// Always ask the gateway for the decrypted file.
    Provider,
}

/// A media stub, decoded and validated, as stored in the job payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stub {
    /// `imageMessage`, `documentMessage`, ...
    pub(crate) message_type: String,
    pub(crate) url: Option<String>,
    pub(crate) direct_path: Option<String>,
    /// Standard base64 (the form the gateways' download endpoints take).
    pub(crate) media_key: Option<String>,
    pub(crate) file_sha256: Sha256Digest,
    pub(crate) file_enc_sha256: Option<Sha256Digest>,
    pub(crate) file_length: Option<u64>,
    pub(crate) mimetype: Option<String>,
    pub(crate) file_name: Option<String>,
    pub(crate) caption: Option<String>,
    /// `ptt: true`: an audio message that is a voice note.
    #[serde(default)]
    pub(crate) ptt: bool,
}

/// The value at `key` unless it is absent or null.
fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|v| !v.is_null())
}

/// Finds the media message in a message object: the one named by
/// `message_type` when given, else the first media key present. Returns the
/// type name and the stub object, descending into
/// `documentWithCaptionMessage.message.documentMessage`.
pub(crate) fn find_media<'a>(
    message: &'a Value,
    message_type: Option<&str>,
) -> Option<(&'a str, &'a Value)> {
    let (name, content) = match message_type {
        Some(t) => MEDIA_MESSAGES
            .iter()
            .find(|m| **m == t)
            .and_then(|m| message.get(*m).map(|c| (*m, c)))?,
        None => MEDIA_MESSAGES
            .iter()
            .find_map(|m| message.get(*m).map(|c| (*m, c)))?,
    };
    Some(unwrap_document_with_caption(name, content))
}

/// `documentWithCaptionMessage` wraps a document: `{message:{documentMessage}}`.
pub(crate) fn unwrap_document_with_caption<'a>(
    name: &'a str,
    content: &'a Value,
) -> (&'a str, &'a Value) {
    if name == "documentWithCaptionMessage"
        && let Some(inner) = content.pointer("/message/documentMessage")
    {
        return ("documentMessage", inner);
    }
    (name, content)
}

impl Stub {
    /// Decodes the stub at `at` (a path used in error messages, such as
    /// `data.content`). `fileSha256` is always required: it is what the
    /// archived bytes are checked against. With `needs_download`, so are
    /// `mediaKey`, `fileEncSha256` and `directPath` or `url`, without which
    /// the file cannot be fetched and verified.
    pub(crate) fn parse(
        message_type: &str,
        content: &Value,
        at: &str,
        needs_download: bool,
    ) -> Result<Self, ProviderError> {
        if !content.is_object() {
            return Err(ProviderError::missing(at));
        }
        let field = |key: &str| format!("{at}.{key}");
        let digest = |key: &str| -> Result<Option<Sha256Digest>, ProviderError> {
            present(content, key)
                .map(|v| Sha256Digest::from_json(v).map_err(|e| invalid(&field(key), e)))
                .transpose()
        };
        let file_sha256 =
            digest("fileSha256")?.ok_or_else(|| ProviderError::missing(&field("fileSha256")))?;
        let file_enc_sha256 = digest("fileEncSha256")?;
        let media_key = present(content, "mediaKey")
            .map(|v| MediaKey::from_json(v).map_err(|e| invalid(&field("mediaKey"), e)))
            .transpose()?;
        let file_length = present(content, "fileLength")
            .map(|v| decode::u64_field(v).map_err(|e| invalid(&field("fileLength"), e)))
            .transpose()?;
        let url = opt_string(content, "url");
        let direct_path = opt_string(content, "directPath");
        if needs_download {
            if media_key.is_none() {
                return Err(ProviderError::missing(&field("mediaKey")));
            }
            if file_enc_sha256.is_none() {
                return Err(ProviderError::missing(&field("fileEncSha256")));
            }
            if url.is_none() && direct_path.is_none() {
                return Err(ProviderError::missing(&field("directPath")));
            }
        }
        if let Some(path) = &direct_path
            && !path.starts_with('/')
        {
            return Err(invalid(&field("directPath"), "does not start with `/`"));
        }
        Ok(Stub {
            message_type: message_type.to_owned(),
            url,
            direct_path,
            media_key: media_key.map(|k| encode_base64(k.expose())),
            file_sha256,
            file_enc_sha256,
            file_length,
            mimetype: opt_string(content, "mimetype"),
            file_name: opt_string(content, "fileName"),
            caption: opt_string(content, "caption"),
            ptt: content.get("ptt").and_then(Value::as_bool) == Some(true),
        })
    }

    /// What `[accounts.rules]` call this media: the message type, an
    /// `audioMessage` with `ptt` being a voice note.
    pub(crate) fn kind(&self) -> Option<MediaKind> {
        MediaKind::from_message_type(&self.message_type, self.ptt)
    }

    /// The HKDF key family.
    pub(crate) fn media_type(&self) -> MediaType {
        MediaType::from_name(&self.message_type).unwrap_or(MediaType::Document)
    }

    /// CodeChat's `contentType`: `image|video|audio|document|sticker`.
    pub(crate) fn content_type(&self) -> &'static str {
        match self.message_type.as_str() {
            "stickerMessage" => "sticker",
            _ => self.media_type().as_str(),
        }
    }

    /// The media key as raw bytes.
    fn media_key(&self) -> Result<MediaKey, ProviderError> {
        let text = self
            .media_key
            .as_deref()
            .ok_or_else(|| ProviderError::BadJob("no mediaKey stored".into()))?;
        MediaKey::from_json(&Value::String(text.to_owned()))
            .map_err(|e| ProviderError::BadJob(format!("stored mediaKey: {e}")))
    }

    /// What decryption needs.
    pub(crate) fn encrypted_media(&self) -> Result<EncryptedMedia, ProviderError> {
        Ok(EncryptedMedia {
            media_type: self.media_type(),
            media_key: self.media_key()?,
            file_enc_sha256: self
                .file_enc_sha256
                .ok_or_else(|| ProviderError::BadJob("no fileEncSha256 stored".into()))?,
            file_sha256: self.file_sha256,
            file_length: self.file_length,
        })
    }

    /// Facts for the manifest.
    pub(crate) fn details(
        &self,
        chat_id: Option<String>,
        sender: Option<String>,
        direction: Option<Direction>,
    ) -> MediaDetails {
        MediaDetails {
            mime_type: self.mimetype.clone(),
            file_name: self.file_name.clone(),
            caption: self.caption.clone(),
            chat_id,
            sender,
            direction,
        }
    }

    /// The CDN URL of the encrypted blob, as Baileys builds it: `cdn_url +
    /// directPath`, or `url` when there is no `directPath`.
    pub(crate) fn cdn_url(&self, cdn_url: &str) -> Result<url::Url, ProviderError> {
        let text = match &self.direct_path {
            Some(path) => format!("{}{path}", cdn_url.trim_end_matches('/')),
            None => self
                .url
                .clone()
                .ok_or_else(|| ProviderError::BadJob("no directPath or url stored".into()))?,
        };
        url::Url::parse(&text).map_err(|e| {
            ProviderError::MediaUnavailable(format!("the media's CDN address is not a URL: {e}"))
        })
    }

    /// The direct CDN download: the encrypted blob, decrypted and checked by
    /// the pipeline (`whatsapp-enc+plain`).
    pub(crate) fn direct(
        &self,
        cdn_url: &str,
        hosts: &HostPolicy,
        details: MediaDetails,
    ) -> Result<ResolvedMedia, ProviderError> {
        let request = DownloadRequest::get(self.cdn_url(cdn_url)?)
            .with_header(http::header::ORIGIN, Secret::new(CDN_ORIGIN));
        Ok(ResolvedMedia {
            source: MediaSource::download(request, hosts.clone()),
            expected_sha256: Some(self.file_sha256),
            encryption: Some(self.encrypted_media()?),
            details,
            size: self.file_length,
        })
    }
}

/// The direction a Baileys key's `fromMe` states (`keyFromMe` in
/// CodeChat's flattened records); `None` when it is absent or not a
/// boolean.
pub(crate) fn direction(from_me: Option<&Value>) -> Option<Direction> {
    from_me.and_then(Value::as_bool).map(|own| {
        if own {
            Direction::Outgoing
        } else {
            Direction::Incoming
        }
    })
}

/// Standard padded base64.
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a whole file sent as base64 (standard or URL-safe, padded or not,
/// with a `data:...;base64,` prefix tolerated).
pub(crate) fn decode_file_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    let text = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(";base64,")?.1,
        None => text,
    };
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .into_iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// Whether a gateway webhook (`{event, instance, data}`) announces new
/// messages: its `event` is `messages.upsert`, which may be spelled
/// `MESSAGES_UPSERT`. A body without `event` is refused (400).
pub(crate) fn is_upsert(body: &Value) -> Result<bool, ProviderError> {
    let event = body
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::missing("event"))?;
    Ok(event
        .replace('_', ".")
        .eq_ignore_ascii_case("messages.upsert"))
}

/// The download hosts of an account: its own list, or the CDN defaults,
/// plus the host of its configured `cdn_url` (the operator's own choice).
/// A list entry that names no host is a config error in `errors`.
pub(crate) fn cdn_hosts(
    account: AccountKeys<'_>,
    cdn_url: Option<&url::Url>,
    errors: &mut Vec<String>,
) -> HostPolicy {
    let mut hosts = account.download_hosts(DEFAULT_CDN_HOSTS, errors);
    if let Some(host) = cdn_url.and_then(url::Url::host_str) {
        hosts.push(host.to_owned());
    }
    HostPolicy::new(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{KEY_B64, SHA_B64, SHA_HEX, indexed};
    use serde_json::json;

    fn stub_json() -> Value {
        json!({
            "url": "https://mmg.whatsapp.net/v/t62.7118-24/1_n.enc?ccb=11-4&oe=652D4E40&mms3=true",
            "directPath": "/v/t62.7118-24/1_n.enc?ccb=11-4&oe=652D4E40",
            "mediaKey": KEY_B64,
            "fileSha256": SHA_B64,
            "fileEncSha256": SHA_B64,
            "fileLength": "92941",
            "mimetype": "image/jpeg",
            "caption": "hi",
            "mediaKeyTimestamp": "1701768972"
        })
    }

    #[test]
    fn base64_and_index_keyed_stubs_decode_to_the_same_payload() {
        let a = Stub::parse("imageMessage", &stub_json(), "data.content", true).unwrap();
        let mut evo = stub_json();
        let sha = decode::bytes(&json!(SHA_B64)).unwrap();
        evo["mediaKey"] = indexed(KEY_B64);
        evo["fileSha256"] = indexed(SHA_B64);
        evo["fileEncSha256"] = json!({"type": "Buffer", "data": sha});
        evo["fileLength"] = json!({"low": 92941, "high": 0, "unsigned": true});
        let b = Stub::parse("imageMessage", &evo, "data.content", true).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.media_key.as_deref(), Some(KEY_B64));
        assert_eq!(a.file_sha256.to_hex(), SHA_HEX);
        assert_eq!(a.file_length, Some(92941));
        assert_eq!(
            serde_json::to_value(&a).unwrap()["file_sha256"],
            json!(SHA_HEX)
        );
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        for (key, value, needs_download, named) in [
            ("fileSha256", Value::Null, false, "data.content.fileSha256"),
            (
                "fileSha256",
                json!("AAAA"),
                false,
                "data.content.fileSha256",
            ),
            ("mediaKey", Value::Null, true, "data.content.mediaKey"),
            ("mediaKey", json!({"0": 1}), false, "data.content.mediaKey"),
            (
                "fileEncSha256",
                Value::Null,
                true,
                "data.content.fileEncSha256",
            ),
            ("fileLength", json!("12a"), false, "data.content.fileLength"),
            (
                "directPath",
                json!("v/no-slash"),
                false,
                "data.content.directPath",
            ),
        ] {
            let mut content = stub_json();
            content[key] = value;
            let err =
                Stub::parse("imageMessage", &content, "data.content", needs_download).unwrap_err();
            assert!(matches!(err, ProviderError::BadPayload(_)));
            assert!(err.to_string().contains(named), "{key}: {err}");
        }
        let mut no_path = stub_json();
        no_path["directPath"] = Value::Null;
        no_path["url"] = Value::Null;
        let err = Stub::parse("imageMessage", &no_path, "data.content", true).unwrap_err();
        assert!(err.to_string().contains("directPath"), "{err}");
        // Without a download, only the plaintext hash is needed.
        let only_hash = json!({"fileSha256": SHA_B64});
        assert!(Stub::parse("imageMessage", &only_hash, "m", false).is_ok());
    }

    #[test]
    fn errors_never_echo_the_media_key() {
        let mut content = stub_json();
        content["fileSha256"] = json!("not a hash");
        let err = Stub::parse("imageMessage", &content, "c", true).unwrap_err();
        assert!(!err.to_string().contains(KEY_B64));
    }

    #[test]
    fn the_cdn_url_is_cdn_url_plus_direct_path_else_url() {
        let stub = Stub::parse("imageMessage", &stub_json(), "c", true).unwrap();
        assert_eq!(
            stub.cdn_url("http://127.0.0.1:9/").unwrap().as_str(),
            "http://127.0.0.1:9/v/t62.7118-24/1_n.enc?ccb=11-4&oe=652D4E40"
        );
        let mut content = stub_json();
        content["directPath"] = Value::Null;
        let stub = Stub::parse("imageMessage", &content, "c", true).unwrap();
        assert!(
            stub.cdn_url(DEFAULT_CDN_URL)
                .unwrap()
                .as_str()
                .ends_with("mms3=true")
        );
    }

    #[test]
    fn content_types_and_key_families() {
        let stub = |t: &str| Stub::parse(t, &stub_json(), "c", true).unwrap();
        assert_eq!(stub("stickerMessage").content_type(), "sticker");
        assert_eq!(stub("stickerMessage").media_type(), MediaType::Image);
        assert_eq!(stub("ptvMessage").content_type(), "video");
        assert_eq!(stub("audioMessage").content_type(), "audio");
        assert_eq!(stub("documentMessage").content_type(), "document");
    }

    #[test]
    fn a_document_with_caption_is_unwrapped() {
        let message = json!({"documentWithCaptionMessage": {"message": {"documentMessage": {"fileSha256": SHA_B64}}}});
        let (name, content) = find_media(&message, None).unwrap();
        assert_eq!(name, "documentMessage");
        assert_eq!(content["fileSha256"], SHA_B64);
        assert!(find_media(&json!({"conversation": "hi"}), None).is_none());
        assert!(find_media(&message, Some("imageMessage")).is_none());
    }

    #[test]
    fn file_base64_in_every_flavour() {
        for text in [
            "3q2+7w==",
            "3q2+7w",
            "3q2-7w",
            "data:image/jpeg;base64,3q2+7w==",
        ] {
            assert_eq!(
                decode_file_base64(text).unwrap(),
                [0xde, 0xad, 0xbe, 0xef],
                "{text}"
            );
        }
        assert!(decode_file_base64("!!").is_none());
    }

    #[test]
    fn upsert_event_spellings() {
        let event = |e: &str| is_upsert(&json!({ "event": e }));
        assert!(event("messages.upsert").unwrap());
        assert!(event("MESSAGES_UPSERT").unwrap());
        assert!(!event("messages.update").unwrap());
        assert!(is_upsert(&json!({"data": {}})).is_err());
    }

    #[test]
    fn timestamps_in_any_encoding() {
        for v in [
            json!(1_700_000_000),
            json!("1700000000"),
            json!({"low": 1_700_000_000, "high": 0}),
        ] {
            assert_eq!(
                crate::message_time(Some(&v), "t").unwrap(),
                1_700_000_000_000
            );
        }
        assert!(
            crate::message_time(None, "data.messageTimestamp")
                .unwrap_err()
                .to_string()
                .contains("data.messageTimestamp")
        );
        assert!(crate::message_time(Some(&json!(0)), "t").is_err());
    }
}
