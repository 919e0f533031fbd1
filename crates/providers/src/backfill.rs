//! Shared pieces of [`Provider::backfill`](crate::Provider::backfill).
//!
//! Meta-shaped references (On-Premises, Cloud API) are
//! `{"media_id", "message_id", "timestamp", "type"?, "mime_type"?,
//! "sha256"?, "caption"?, "filename"?, "from"?, "group_id"?,
//! "phone_number_id"?}`: [`meta_message`] rewrites one into the `messages[]`
//! item its webhook would have carried, so each adapter makes the job with
//! the very code that parses webhooks (same id, same payload), and
//! `Account::backfilled` refuses one whose deadline has passed.

use serde_json::{Map, Value, json};

use crate::ProviderError;

/// Meta's media message types; `document` when the reference has no `type`
/// (the type only labels the message: the bytes come from the media id).
const META_MEDIA_TYPES: [&str; 5] = ["image", "document", "audio", "video", "sticker"];

/// The webhook `messages[]` item a Meta-shaped reference stands for.
pub(crate) fn meta_message(reference: &Value) -> Result<Value, ProviderError> {
    crate::json_object(reference)?;
    let text = |key: &str| {
        reference
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let media_id = text("media_id").ok_or_else(|| ProviderError::missing("media_id"))?;
    let message_id = text("message_id").ok_or_else(|| ProviderError::missing("message_id"))?;
    let timestamp = crate::message_time(reference.get("timestamp"), "timestamp")? / 1000;
    let kind = text("type").unwrap_or("document");
    if !META_MEDIA_TYPES.contains(&kind) {
        return Err(ProviderError::BadPayload(format!(
            "type {kind:?} is not a media type ({})",
            META_MEDIA_TYPES.join(", ")
        )));
    }
    let mut media = Map::new();
    media.insert("id".into(), json!(media_id));
    for key in ["mime_type", "sha256", "caption", "filename"] {
        if let Some(v) = text(key) {
            media.insert(key.into(), json!(v));
        }
    }
    let mut message = json!({
        "id": message_id,
        "timestamp": timestamp.to_string(),
        "type": kind,
        kind: media,
    });
    for key in ["from", "group_id"] {
        if let Some(v) = text(key) {
            message[key] = json!(v);
        }
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meta_reference_becomes_the_webhook_s_message() {
        let m = meta_message(&json!({
            "media_id": "1234", "message_id": "wamid.X", "timestamp": 1_767_225_600,
            "type": "image", "mime_type": "image/jpeg", "from": "4915", "extra": true,
        }))
        .unwrap();
        assert_eq!(
            m,
            json!({"id": "wamid.X", "timestamp": "1767225600", "type": "image",
                   "image": {"id": "1234", "mime_type": "image/jpeg"}, "from": "4915"})
        );
        let m =
            meta_message(&json!({"media_id": "1", "message_id": "w", "timestamp": "1767225600"}))
                .unwrap();
        assert_eq!(m["type"], "document");
        for (bad, field) in [
            (
                json!({"message_id": "w", "timestamp": 1767225600}),
                "media_id",
            ),
            (
                json!({"media_id": "1", "timestamp": 1767225600}),
                "message_id",
            ),
            (json!({"media_id": "1", "message_id": "w"}), "timestamp"),
            (
                json!({"media_id": "1", "message_id": "w", "timestamp": 7}),
                "timestamp",
            ),
            (
                json!({"media_id": "1", "message_id": "w", "timestamp": 1767225600, "type": "text"}),
                "type",
            ),
            (json!("x"), "object"),
        ] {
            let err = meta_message(&bad).unwrap_err().to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }
}
