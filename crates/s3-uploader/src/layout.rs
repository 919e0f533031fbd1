use archiver_core::{Sha256Digest, UnixMillis};
use chrono::{DateTime, Datelike, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Bytes escaped in key segments built from ids: everything outside
/// `[A-Za-z0-9._=-]`. `=` stays because base64-style WhatsApp ids end with
/// it; `/` and `+` (also base64) and everything else are escaped.
const KEY_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'_')
    .remove(b'=')
    .remove(b'-');

/// Builds object keys: the storage layout of `PRODUCT.md` section 5, which
/// is a durable format (see the crate documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Empty, or ends with `/`.
    prefix: String,
}

impl Layout {
    /// A layout below `prefix`. A `/` is appended to a non-empty prefix that
    /// lacks one, so `"media"` and `"media/"` mean the same folder.
    pub fn new(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// The normalized prefix (empty, or ending with `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}blobs/sha256/{h[0..2]}/{h}{ext}`, `ext` from
    /// [`extension_for_mime`] (none for an unknown or absent type).
    pub fn blob_key(&self, sha256: &Sha256Digest, mime_type: Option<&str>) -> String {
        let h = sha256.to_hex();
        let ext = mime_type.and_then(extension_for_mime).unwrap_or("");
        format!("{}blobs/sha256/{}/{h}{ext}", self.prefix, &h[..2])
    }

    /// `{prefix}messages/{account}/{yyyy}/{mm}/{dd}/{message_id}.json`, dated
    /// in UTC. `account` and `message_id` are percent-encoded outside
    /// `[A-Za-z0-9._=-]`, so a `/` or `+` in a message id cannot escape the
    /// folder. A timestamp outside chrono's range files under 1970/01/01.
    pub fn manifest_key(&self, account: &str, message_at: UnixMillis, message_id: &str) -> String {
        format!(
            "{}{}.json",
            self.day_folder(account, message_at),
            utf8_percent_encode(message_id, KEY_SEGMENT),
        )
    }

    /// `{prefix}messages/{account}/{yyyy}/{mm}/{dd}/{message_id}.d/{sha256}.json`:
    /// where a manifest goes when the message already has one at
    /// [`Layout::manifest_key`] for other bytes (see the crate docs).
    pub fn other_manifest_key(
        &self,
        account: &str,
        message_at: UnixMillis,
        message_id: &str,
        sha256: &Sha256Digest,
    ) -> String {
        format!(
            "{}{}.json",
            self.other_manifests_prefix(account, message_at, message_id),
            sha256.to_hex()
        )
    }

    /// `{prefix}messages/{account}/{yyyy}/{mm}/{dd}/{message_id}.d/`: the
    /// folder of [`Layout::other_manifest_key`], to list.
    pub fn other_manifests_prefix(
        &self,
        account: &str,
        message_at: UnixMillis,
        message_id: &str,
    ) -> String {
        format!(
            "{}{}.d/",
            self.day_folder(account, message_at),
            utf8_percent_encode(message_id, KEY_SEGMENT),
        )
    }

    /// `{prefix}messages/{account}/{yyyy}/{mm}/{dd}/`, dated in UTC.
    fn day_folder(&self, account: &str, message_at: UnixMillis) -> String {
        let date = DateTime::<Utc>::from_timestamp_millis(message_at).unwrap_or_default();
        format!(
            "{}messages/{}/{:04}/{:02}/{:02}/",
            self.prefix,
            utf8_percent_encode(account, KEY_SEGMENT),
            date.year(),
            date.month(),
            date.day(),
        )
    }
}

/// The blob-key extension (with its dot) for a mime type, from the table of
/// `PRODUCT.md` section 5. Parameters are ignored (`audio/ogg; codecs=opus`
/// is `.ogg`) and the type is matched case-insensitively; unknown types give
/// `None`.
pub fn extension_for_mime(mime: &str) -> Option<&'static str> {
    let essence = mime.split(';').next().unwrap_or("").trim();
    let ext = match essence.to_ascii_lowercase().as_str() {
        "image/jpeg" => ".jpg",
        "image/png" => ".png",
        "image/webp" => ".webp",
        "image/gif" => ".gif",
        "video/mp4" => ".mp4",
        "video/3gpp" => ".3gp",
        "audio/ogg" => ".ogg",
        "audio/mpeg" => ".mp3",
        "audio/mp4" => ".m4a",
        "audio/aac" => ".aac",
        "audio/amr" => ".amr",
        "application/pdf" => ".pdf",
        "text/plain" => ".txt",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => ".docx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => ".xlsx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => ".pptx",
        "application/msword" => ".doc",
        "application/vnd.ms-excel" => ".xls",
        "application/zip" => ".zip",
        _ => return None,
    };
    Some(ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    // sha256("abc")
    const HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn digest() -> Sha256Digest {
        Sha256Digest::parse(HEX).unwrap()
    }

    #[test]
    fn every_extension_in_the_table() {
        let table = [
            ("image/jpeg", ".jpg"),
            ("image/png", ".png"),
            ("image/webp", ".webp"),
            ("image/gif", ".gif"),
            ("video/mp4", ".mp4"),
            ("video/3gpp", ".3gp"),
            ("audio/ogg", ".ogg"),
            ("audio/mpeg", ".mp3"),
            ("audio/mp4", ".m4a"),
            ("audio/aac", ".aac"),
            ("audio/amr", ".amr"),
            ("application/pdf", ".pdf"),
            ("text/plain", ".txt"),
            (
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                ".docx",
            ),
            (
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                ".xlsx",
            ),
            (
                "application/vnd.openxmlformats-officedocument.presentationml.presentation",
                ".pptx",
            ),
            ("application/msword", ".doc"),
            ("application/vnd.ms-excel", ".xls"),
            ("application/zip", ".zip"),
        ];
        for (mime, ext) in table {
            assert_eq!(extension_for_mime(mime), Some(ext), "{mime}");
            assert_eq!(
                Layout::default().blob_key(&digest(), Some(mime)),
                format!("blobs/sha256/ba/{HEX}{ext}")
            );
        }
    }

    #[test]
    fn parameters_and_case_are_ignored() {
        assert_eq!(extension_for_mime("audio/ogg; codecs=opus"), Some(".ogg"));
        assert_eq!(extension_for_mime("audio/ogg;codecs=opus"), Some(".ogg"));
        assert_eq!(extension_for_mime(" Image/JPEG "), Some(".jpg"));
        assert_eq!(
            extension_for_mime("text/plain; charset=utf-8"),
            Some(".txt")
        );
    }

    #[test]
    fn unknown_types_give_no_extension() {
        for mime in [
            "",
            "false",
            "application/octet-stream",
            "image/heic",
            "audio/ogg/x",
            ";",
        ] {
            assert_eq!(extension_for_mime(mime), None, "{mime:?}");
        }
        assert_eq!(
            Layout::default().blob_key(&digest(), Some("application/x-whatever")),
            format!("blobs/sha256/ba/{HEX}")
        );
        assert_eq!(
            Layout::default().blob_key(&digest(), None),
            format!("blobs/sha256/ba/{HEX}")
        );
    }

    #[test]
    fn prefix_gets_one_trailing_slash() {
        assert_eq!(Layout::new("").prefix(), "");
        assert_eq!(Layout::new("media").prefix(), "media/");
        assert_eq!(Layout::new("media/").prefix(), "media/");
        assert_eq!(
            Layout::new("a/b").blob_key(&digest(), Some("image/png")),
            format!("a/b/blobs/sha256/ba/{HEX}.png")
        );
    }

    #[test]
    fn manifest_key_is_dated_in_utc() {
        // 2026-01-01T00:30:00Z is still 2025-12-31 in New York; UTC decides.
        let at = 1_767_227_400_000;
        assert_eq!(
            Layout::new("p").manifest_key("green-main", at, "ABC123"),
            "p/messages/green-main/2026/01/01/ABC123.json"
        );
        // One millisecond before midnight UTC.
        assert_eq!(
            Layout::default().manifest_key("a", 1_767_225_599_999, "m"),
            "messages/a/2025/12/31/m.json"
        );
        assert_eq!(
            Layout::default().manifest_key("a", 0, "m"),
            "messages/a/1970/01/01/m.json"
        );
        assert_eq!(
            Layout::default().manifest_key("a", i64::MAX, "m"),
            "messages/a/1970/01/01/m.json"
        );
    }

    #[test]
    fn a_manifest_for_other_bytes_is_named_by_message_id_and_sha256() {
        let l = Layout::new("p");
        let at = 1_767_227_400_000;
        assert_eq!(
            l.other_manifest_key("a", at, "wamid.X/Y", &digest()),
            format!("p/messages/a/2026/01/01/wamid.X%2FY.d/{HEX}.json")
        );
        assert!(
            l.other_manifest_key("a", at, "m", &digest())
                .starts_with(&l.other_manifests_prefix("a", at, "m"))
        );
        // A folder named `.d` cannot be any message's manifest (`.json`),
        // not even that of a message whose id ends in `.d`.
        assert_eq!(
            l.manifest_key("a", at, "m.d"),
            "p/messages/a/2026/01/01/m.d.json"
        );
    }

    #[test]
    fn message_ids_are_percent_encoded_outside_the_safe_set() {
        let l = Layout::default();
        assert_eq!(
            l.manifest_key("a", 0, "wamid.HBgL+Nj/Aw==_x-y"),
            "messages/a/1970/01/01/wamid.HBgL%2BNj%2FAw==_x-y.json"
        );
        assert_eq!(
            l.manifest_key("a", 0, "../../etc"),
            "messages/a/1970/01/01/..%2F..%2Fetc.json"
        );
        assert_eq!(
            l.manifest_key("a", 0, "true_123@c.us_3EB0 é%"),
            "messages/a/1970/01/01/true_123%40c.us_3EB0%20%C3%A9%25.json"
        );
        // Distinct ids stay distinct: `%` itself is escaped.
        assert_ne!(
            l.manifest_key("a", 0, "a/b"),
            l.manifest_key("a", 0, "a%2Fb")
        );
        assert_eq!(
            l.manifest_key("x/y", 0, "m"),
            "messages/x%2Fy/1970/01/01/m.json"
        );
    }
}
