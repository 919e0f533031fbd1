//! The message shape Meta's two WhatsApp Business APIs share.
//!
//! On-Premises (`messages[]` at the top of the webhook) and Cloud API
//! (`entry[].changes[].value.messages[]`) announce a media file the same
//! way: `type` names a key holding `{id, mime_type, sha256, caption,
//! filename}`, beside the message `id`, `from` and a Unix `timestamp` in
//! seconds (a string on the wire, tolerated as a number; between 2009 and
//! the year 9999, see `archiver_core::bounds`). Only where the
//! message sits and what the job needs from around it differ, so the
//! adapters parse it here and build their own payloads. Both webhooks
//! announce only messages the business received: their jobs are
//! `incoming` (what the business sends comes back as `statuses`).

use archiver_core::Sha256Digest;
use serde_json::Value;

use crate::{MediaKind, ProviderError, non_empty, opt_string};

/// A media message as both APIs send it; `None` fields were absent or empty.
pub(crate) struct MediaMessage<'a> {
    /// `image`, `document`, ...: the message `type`, one of the adapter's.
    pub kind: &'a str,
    /// The object under `kind`.
    pub media: &'a Value,
    pub message_id: &'a str,
    pub media_id: &'a str,
    /// Unix milliseconds.
    pub message_at: i64,
    /// Lowercase hex, whichever encoding the provider used.
    pub sha256: Option<String>,
    pub mime_type: Option<String>,
    pub caption: Option<String>,
    pub file_name: Option<String>,
    pub sender: Option<String>,
}

impl MediaMessage<'_> {
    /// What `[accounts.rules]` call this media: the message `type`; a
    /// Cloud API `audio` with `voice: true` is a voice note (On-Premises
    /// has a `voice` type of its own).
    pub(crate) fn media_kind(&self) -> Option<MediaKind> {
        let voice = self.media.get("voice").and_then(Value::as_bool) == Some(true);
        MediaKind::from_message_type(self.kind, voice)
    }
}

/// Parses the message `m` found at `at` (for error messages). `Ok(None)`
/// for a message whose type is not one of `media_types` (text, location,
/// ...); an error names the missing or malformed field.
pub(crate) fn media_message<'a>(
    at: &str,
    m: &'a Value,
    media_types: &[&str],
) -> Result<Option<MediaMessage<'a>>, ProviderError> {
    let field = |rest: &str| format!("{at}.{rest}");
    let missing = |rest: &str| ProviderError::missing(&field(rest));
    let kind = m
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("type"))?;
    if !media_types.contains(&kind) {
        return Ok(None);
    }
    let media = m
        .get(kind)
        .filter(|v| v.is_object())
        .ok_or_else(|| missing(kind))?;
    let message_id = non_empty(m, "id").ok_or_else(|| missing("id"))?;
    crate::checked_id(message_id, &field("id"))?;
    let message_at = crate::message_time(m.get("timestamp"), &field("timestamp"))?;
    let media_id = non_empty(media, "id").ok_or_else(|| missing(&format!("{kind}.id")))?;
    crate::checked_id(media_id, &field(&format!("{kind}.id")))?;
    let sha256 = match media.get("sha256") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| Sha256Digest::parse(s).ok())
                .ok_or_else(|| {
                    ProviderError::BadPayload(format!(
                        "field `{}` is not a sha256 in hex or base64",
                        field(&format!("{kind}.sha256"))
                    ))
                })?
                .to_hex(),
        ),
    };
    // The sender is the chat of a one-to-one message: an id like the others.
    if let Some(from) = non_empty(m, "from") {
        crate::checked_id(from, &field("from"))?;
    }
    Ok(Some(MediaMessage {
        kind,
        media,
        message_id,
        media_id,
        message_at,
        sha256,
        mime_type: opt_string(media, "mime_type"),
        caption: opt_string(media, "caption"),
        file_name: opt_string(media, "filename"),
        sender: opt_string(m, "from"),
    }))
}

/// The webhook's sha256 as a job payload stored it (hex, written by
/// [`media_message`]), read back.
pub(crate) fn stored_sha256(hex: Option<&str>) -> Result<Option<Sha256Digest>, ProviderError> {
    hex.map(Sha256Digest::parse)
        .transpose()
        .map_err(|e| ProviderError::BadJob(format!("sha256: {e}")))
}
