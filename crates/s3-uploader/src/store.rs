use archiver_core::StagedFile;

use crate::StoreError;

/// The largest object [`ObjectStore::get_small`] reads (16 MiB). Manifests
/// are a few hundred bytes; anything this large under a manifest key is not
/// one, and reading it whole would break the memory bound.
pub const MAX_SMALL_OBJECT_BYTES: u64 = 16 * 1024 * 1024;

/// Longest key either backend accepts, in bytes (the S3 limit).
const MAX_KEY_BYTES: usize = 1024;

/// Where archived files and manifests are written. One implementation per
/// backend (`fs`, `s3`); every implementation passes the same conformance
/// suite (`tests/backends`).
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores the spooled file under `key` (a full object key from
    /// [`Layout`](crate::Layout)).
    ///
    /// Content-addressed: if an object already exists at `key` with the same
    /// size, nothing is written and the result is
    /// [`PutOutcome::AlreadyPresent`]. The object never becomes visible
    /// partially or unverified.
    ///
    /// The staged file may be consumed: the fs backend moves it into place
    /// when it lives on the same filesystem (no copy). Callers delete
    /// `file.path` afterwards if it still exists.
    async fn put_blob(
        &self,
        key: &str,
        file: &StagedFile,
        content_type: Option<&str>,
    ) -> Result<PutOutcome, StoreError>;

    /// Writes a small JSON document (a manifest) atomically, replacing any
    /// previous one.
    async fn put_manifest(&self, key: &str, json: &[u8]) -> Result<(), StoreError>;

    /// Reads a small object (a manifest) whole; `Ok(None)` if it does not
    /// exist. Objects above [`MAX_SMALL_OBJECT_BYTES`] are an error.
    async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Cheap reachability check for `/readyz` (fs: the root is writable;
    /// s3: HeadBucket).
    async fn ping(&self) -> Result<(), StoreError>;

    /// `"fs"` or `"s3"`, for logs and metrics.
    fn backend_name(&self) -> &'static str;
}

/// What [`ObjectStore::put_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The bytes were written.
    Stored,
    /// An object of the same size already existed under the key; since the
    /// key is the content hash, nothing was written.
    AlreadyPresent,
}

/// Checks a key the same way for every backend: non-empty, at most 1024
/// bytes, relative, `/`-separated segments that are neither empty, `.` nor
/// `..`, no NUL. Keys from [`Layout`](crate::Layout) always pass; the check
/// keeps a bad key from escaping the fs root or meaning different things on
/// the two backends.
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        Some("empty")
    } else if key.len() > MAX_KEY_BYTES {
        Some("longer than 1024 bytes")
    } else if key.contains('\0') {
        Some("contains NUL")
    } else if key.starts_with('/') {
        Some("absolute")
    } else if key.split('/').any(|s| s.is_empty()) {
        Some("has an empty path segment")
    } else if key.split('/').any(|s| s == "." || s == "..") {
        Some("has a `.` or `..` segment")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_escape_or_mean_two_things_are_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a\0b",
            &"k".repeat(1025),
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a",
            "blobs/sha256/ab/abc.jpg",
            "p/messages/x/2026/01/02/a..b.json",
        ] {
            validate_key(good).unwrap();
        }
    }
}
