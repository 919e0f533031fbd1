//! Media types, media keys and the HKDF expansion that turns one into the
//! other's working keys.

use std::fmt;

use archiver_core::Sha256Digest;
use archiver_core::decode::{self, DecodeError};
use hkdf::Hkdf;
use sha2::Sha256;

/// Which HKDF info string a media message's keys are derived with.
///
/// The names on the wire vary (`sticker`, `stickerMessage`, `ptt`, `ptv`,
/// `gif`...); [`MediaType::from_name`] maps each to one of these four, as
/// Baileys' `MEDIA_HKDF_KEY_MAPPING` and whatsmeow's `classToMediaType` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaType {
    /// `WhatsApp Image Keys`: images and stickers.
    Image,
    /// `WhatsApp Video Keys`: videos, GIFs, round video notes (ptv).
    Video,
    /// `WhatsApp Audio Keys`: audio files and voice notes (ptt).
    Audio,
    /// `WhatsApp Document Keys`: documents.
    Document,
}

impl MediaType {
    /// The HKDF `info` for this type.
    pub fn hkdf_info(self) -> &'static [u8] {
        match self {
            MediaType::Image => b"WhatsApp Image Keys",
            MediaType::Video => b"WhatsApp Video Keys",
            MediaType::Audio => b"WhatsApp Audio Keys",
            MediaType::Document => b"WhatsApp Document Keys",
        }
    }

    /// The type for a message or content type name, with or without the
    /// `Message` suffix (`image`, `imageMessage`, `sticker`, `ptv`, `ptt`,
    /// `voice`, `gif`, `documentWithCaptionMessage`, ...). `None` for names
    /// that are not downloadable media.
    pub fn from_name(name: &str) -> Option<Self> {
        let base = name.strip_suffix("Message").unwrap_or(name);
        Some(match base {
            "image" | "sticker" => MediaType::Image,
            "video" | "gif" | "ptv" => MediaType::Video,
            "audio" | "voice" | "ptt" => MediaType::Audio,
            "document" | "documentWithCaption" => MediaType::Document,
            _ => return None,
        })
    }

    /// The lowercase name (`image`, `video`, `audio`, `document`).
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Image => "image",
            MediaType::Video => "video",
            MediaType::Audio => "audio",
            MediaType::Document => "document",
        }
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sender's 32-byte `mediaKey`. Whoever has it can read the file, so it
/// never prints (`Debug` shows `[redacted]`).
#[derive(Clone, PartialEq, Eq)]
pub struct MediaKey([u8; 32]);

impl MediaKey {
    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Decodes the key from a JSON field in any encoding gateways use
    /// (base64, base64url, hex, index-keyed object, Node Buffer).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, DecodeError> {
        let bytes = decode::bytes(value)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| DecodeError::UnsupportedShape("bytes that are not 32 long"))
    }

    /// The raw key, for re-encoding it in a request to the gateway.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Expands the key for `media_type` (HKDF-SHA256, no salt, 112 bytes).
    pub fn expand(&self, media_type: MediaType) -> MediaKeys {
        let mut okm = [0u8; 112];
        Hkdf::<Sha256>::new(None, &self.0)
            .expand(media_type.hkdf_info(), &mut okm)
            // 112 bytes is far below HKDF-SHA256's 255 * 32 limit.
            .expect("112 bytes is a valid HKDF-SHA256 output length");
        let mut keys = MediaKeys {
            iv: [0; 16],
            cipher_key: [0; 32],
            mac_key: [0; 32],
            ref_key: [0; 32],
        };
        keys.iv.copy_from_slice(&okm[0..16]);
        keys.cipher_key.copy_from_slice(&okm[16..48]);
        keys.mac_key.copy_from_slice(&okm[48..80]);
        keys.ref_key.copy_from_slice(&okm[80..112]);
        keys
    }
}

impl fmt::Debug for MediaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MediaKey([redacted])")
    }
}

/// The 112 expanded bytes, split as WhatsApp splits them.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaKeys {
    /// AES-CBC initialisation vector (bytes 0..16).
    pub iv: [u8; 16],
    /// AES-256 key (bytes 16..48).
    pub cipher_key: [u8; 32],
    /// HMAC-SHA256 key (bytes 48..80).
    pub mac_key: [u8; 32],
    /// Unused for downloads (bytes 80..112).
    pub ref_key: [u8; 32],
}

impl fmt::Debug for MediaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MediaKeys([redacted])")
    }
}

/// Everything needed to turn a downloaded CDN blob into a verified file:
/// what a Baileys media stub says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedMedia {
    /// Decides the HKDF info string.
    pub media_type: MediaType,
    /// The sender's key.
    pub media_key: MediaKey,
    /// sha256 of the encrypted blob (ciphertext and MAC), as the CDN serves it.
    pub file_enc_sha256: Sha256Digest,
    /// sha256 of the plaintext: what is archived.
    pub file_sha256: Sha256Digest,
    /// The plaintext length, when the message states it.
    pub file_length: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_name_maps_to_its_key_family() {
        for (name, ty) in [
            ("image", MediaType::Image),
            ("imageMessage", MediaType::Image),
            ("sticker", MediaType::Image),
            ("stickerMessage", MediaType::Image),
            ("video", MediaType::Video),
            ("gif", MediaType::Video),
            ("ptv", MediaType::Video),
            ("ptvMessage", MediaType::Video),
            ("audio", MediaType::Audio),
            ("audioMessage", MediaType::Audio),
            ("ptt", MediaType::Audio),
            ("voice", MediaType::Audio),
            ("document", MediaType::Document),
            ("documentMessage", MediaType::Document),
            ("documentWithCaptionMessage", MediaType::Document),
        ] {
            assert_eq!(MediaType::from_name(name), Some(ty), "{name}");
        }
        for name in ["conversation", "extendedTextMessage", "", "Message"] {
            assert_eq!(MediaType::from_name(name), None, "{name}");
        }
    }

    #[test]
    fn keys_never_print() {
        let key = MediaKey::from_bytes([7; 32]);
        let keys = key.expand(MediaType::Image);
        let shown = format!("{key:?} {keys:?}");
        assert!(!shown.contains('7'), "{shown}");
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        assert!(MediaKey::from_json(&serde_json::json!("AAAA")).is_err());
        assert!(MediaKey::from_json(&serde_json::json!([1, 2, 3])).is_err());
    }
}
