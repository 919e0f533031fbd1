use archiver_core::{Direction, Sha256Digest, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Layout, ObjectStore, StoreError};

/// The JSON document written beside each archived message, at
/// [`Layout::manifest_key`](crate::Layout::manifest_key), after its blob.
///
/// A durable format: field names are what users' scripts read. Every field
/// is always written (`null` when unknown); readers ignore unknown fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Provider id (`greenapi`, `codechat`, `evolution`, `onprem`, `cloudapi`, `nxcloud`, `waha`).
    pub provider: String,
    /// The account name from the configuration.
    pub account: String,
    /// The chat the message belongs to, when the provider says.
    pub chat_id: Option<String>,
    /// The provider's message id, verbatim (the key holds it percent-encoded).
    pub message_id: String,
    /// The provider's media id, when it has one.
    pub media_id: Option<String>,
    /// Who sent the message, when the provider says.
    pub sender: Option<String>,
    /// `incoming` or `outgoing`, seen from the account, when the provider
    /// says (PRODUCT.md section 10).
    #[serde(default)]
    pub direction: Option<Direction>,
    /// When the message was sent, RFC 3339 UTC.
    pub message_timestamp: String,
    /// The provider's mime type, verbatim.
    pub mime_type: Option<String>,
    /// The sender's original file name (never used in keys).
    pub file_name: Option<String>,
    /// The message caption.
    pub caption: Option<String>,
    /// Size of the stored blob in bytes.
    pub size: u64,
    /// sha256 of the stored blob (lowercase hex).
    pub sha256: Sha256Digest,
    /// Full key of the blob, prefix included.
    pub blob_key: String,
    /// The hash the provider vouched for, when it vouched one (lowercase hex).
    pub provider_sha256: Option<Sha256Digest>,
    /// How the bytes were checked.
    pub verification: Verification,
    /// When the archive was written, RFC 3339 UTC.
    pub archived_at: String,
}

impl Manifest {
    /// The manifest as pretty-printed JSON, the bytes to hand to
    /// [`ObjectStore::put_manifest`](crate::ObjectStore::put_manifest).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and digests cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Writes `manifest` for its message (dated `message_at`) and returns the
/// key it was written under; never replaces a manifest of other bytes.
///
/// - No manifest at [`Layout::manifest_key`] yet: written there.
/// - One there for the same sha256 (a retry, a redelivery): written there
///   again, as before this rule existed (idempotent).
/// - One there for other bytes (or one that cannot be read as a manifest):
///   left alone; this one goes beside it, to
///   [`Layout::other_manifest_key`] (same sha256 there: idempotent too).
///
/// Two first attempts for one message racing each other can both find no
/// manifest; the later write then replaces the earlier (the stores have no
/// portable create-if-absent). The queue runs one attempt per job at a
/// time, so this needs two jobs of one message in flight together.
pub async fn put_message_manifest(
    store: &dyn ObjectStore,
    layout: &Layout,
    manifest: &Manifest,
    message_at: UnixMillis,
) -> Result<String, StoreError> {
    /// Just the field that decides, from a manifest of any version.
    #[derive(Deserialize)]
    struct Existing {
        sha256: Sha256Digest,
    }
    let (account, message_id) = (&manifest.account, &manifest.message_id);
    let primary = layout.manifest_key(account, message_at, message_id);
    let key = match store.get_small(&primary).await? {
        None => primary,
        Some(bytes) => match serde_json::from_slice::<Existing>(&bytes) {
            Ok(existing) if existing.sha256 == manifest.sha256 => primary,
            _ => layout.other_manifest_key(account, message_at, message_id, &manifest.sha256),
        },
    };
    store.put_manifest(&key, &manifest.to_json()).await?;
    Ok(key)
}

/// How the archived bytes were verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verification {
    /// `provider-sha256`: the sha256 of the bytes equals the one the provider
    /// sent (On-Premises, Cloud API).
    ProviderSha256,
    /// `whatsapp-enc+plain`: the encrypted download matched `fileEncSha256`
    /// and the decrypted bytes matched `fileSha256` (Baileys-based providers).
    #[serde(rename = "whatsapp-enc+plain")]
    WhatsappEncPlain,
    /// `computed-only`: the provider vouched no hash; the sha256 was computed
    /// while downloading and recorded.
    ComputedOnly,
}

impl Verification {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verification::ProviderSha256 => "provider-sha256",
            Verification::WhatsappEncPlain => "whatsapp-enc+plain",
            Verification::ComputedOnly => "computed-only",
        }
    }

    /// Whether the bytes were compared with a hash the provider vouched for
    /// (what the media API calls `verified`).
    pub fn checked_against_provider(self) -> bool {
        !matches!(self, Verification::ComputedOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn sample() -> Manifest {
        Manifest {
            provider: "cloudapi".into(),
            account: "meta-main".into(),
            chat_id: Some("4915112345678".into()),
            message_id: "wamid.HBgM+x/y==".into(),
            media_id: Some("1234".into()),
            sender: None,
            direction: Some(Direction::Incoming),
            message_timestamp: "2026-11-03T10:15:00Z".into(),
            mime_type: Some("image/jpeg".into()),
            file_name: None,
            caption: Some("look".into()),
            size: 3,
            sha256: Sha256Digest::parse(HEX).unwrap(),
            blob_key: format!("blobs/sha256/ba/{HEX}.jpg"),
            provider_sha256: Some(Sha256Digest::parse(HEX).unwrap()),
            verification: Verification::ProviderSha256,
            archived_at: "2026-11-03T10:15:07.123Z".into(),
        }
    }

    #[test]
    fn field_names_are_the_documented_ones() {
        let v: Value = serde_json::from_slice(&sample().to_json()).unwrap();
        assert_eq!(
            v,
            json!({
                "provider": "cloudapi",
                "account": "meta-main",
                "chat_id": "4915112345678",
                "message_id": "wamid.HBgM+x/y==",
                "media_id": "1234",
                "sender": null,
                "direction": "incoming",
                "message_timestamp": "2026-11-03T10:15:00Z",
                "mime_type": "image/jpeg",
                "file_name": null,
                "caption": "look",
                "size": 3,
                "sha256": HEX,
                "blob_key": format!("blobs/sha256/ba/{HEX}.jpg"),
                "provider_sha256": HEX,
                "verification": "provider-sha256",
                "archived_at": "2026-11-03T10:15:07.123Z",
            })
        );
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn verification_spellings() {
        for (v, s) in [
            (Verification::ProviderSha256, "provider-sha256"),
            (Verification::WhatsappEncPlain, "whatsapp-enc+plain"),
            (Verification::ComputedOnly, "computed-only"),
        ] {
            assert_eq!(serde_json::to_value(v).unwrap(), json!(s));
            assert_eq!(v.as_str(), s);
            assert_eq!(serde_json::from_value::<Verification>(json!(s)).unwrap(), v);
        }
        assert!(serde_json::from_value::<Verification>(json!("whatsapp-enc-plain")).is_err());
    }

    #[test]
    fn readers_tolerate_unknown_fields_and_missing_optionals() {
        let mut v = serde_json::to_value(sample()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.insert("added_later".into(), json!(1));
        obj.remove("caption");
        obj.remove("direction"); // manifests written before it existed
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(back.caption, None);
        assert_eq!(back.direction, None);
    }
}
