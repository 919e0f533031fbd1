use std::time::Duration;

use archiver_core::{ByteSink, Sha256Digest, StagedFile};
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::StoreError;

/// The largest object [`ObjectStore::get_small`] reads (16 MiB). Manifests
/// are a few hundred bytes; anything this large under a manifest key is not
/// one, and reading it whole would break the memory bound.
pub const MAX_SMALL_OBJECT_BYTES: u64 = 16 * 1024 * 1024;

/// Longest key either backend accepts, in bytes (the S3 limit).
const MAX_KEY_BYTES: usize = 1024;

/// Longest `/`-separated segment of a key, in bytes: a file name on the
/// common local filesystems (ext4, XFS, btrfs: `NAME_MAX`). S3 has no such
/// limit, but a key must mean the same on both backends, and an archive
/// must be copyable between them.
const MAX_SEGMENT_BYTES: usize = 255;

/// The most objects one page of [`ObjectStore::list`] holds (S3's own
/// maximum for ListObjectsV2).
pub const MAX_LIST_PAGE: usize = 1000;

/// The longest lifetime of a presigned URL (S3's limit: 7 days).
pub const MAX_PRESIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// One object found by [`ObjectStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The full key, prefix included.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// What [`ObjectStore::read_hashed`] measured while reading an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectDigest {
    /// Bytes read.
    pub size: u64,
    /// sha256 of the bytes read.
    pub sha256: Sha256Digest,
}

/// The pages of a listing, in key order; see [`ObjectStore::list`].
pub type ObjectPages = BoxStream<'static, Result<Vec<ObjectInfo>, StoreError>>;

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

    /// Starts a blob whose content hash is known before its bytes are
    /// (stream-through): the caller writes the bytes into the returned
    /// [`BlobUpload`] as they arrive and calls [`BlobUpload::finish`], which
    /// makes the object visible under `key` only if the bytes hash to
    /// `sha256` (and otherwise discards them and says what they hash to).
    /// Dropping the upload unfinished discards what was written. Nothing
    /// partial or unverified is ever visible under `key`.
    ///
    /// `max_size` is the most bytes the file can have (the download's
    /// cap). `Ok(None)`: not now, stage the file and use
    /// [`ObjectStore::put_blob`]. The s3 backend says so when its stream
    /// buffers (`storage.s3.stream_buffers`) are all in use or zero, when
    /// `max_size` would not fit in 10,000 parts of `part_size`, and under
    /// object lock (whose `put_blob` checks for the blob before writing,
    /// so that a retained object is never written twice); a backend
    /// without stream-through says so always (the default).
    async fn begin_blob(
        &self,
        key: &str,
        sha256: Sha256Digest,
        max_size: u64,
        content_type: Option<&str>,
    ) -> Result<Option<Box<dyn BlobUpload>>, StoreError> {
        let _ = (key, sha256, max_size, content_type);
        Ok(None)
    }

    /// Writes a small JSON document (a manifest) atomically, replacing any
    /// previous one at `key`. To write a message's manifest, use
    /// [`put_message_manifest`](crate::put_message_manifest), which never
    /// replaces a manifest of other bytes.
    async fn put_manifest(&self, key: &str, json: &[u8]) -> Result<(), StoreError>;

    /// Reads a small object (a manifest) whole; `Ok(None)` if it does not
    /// exist. Objects above [`MAX_SMALL_OBJECT_BYTES`] are an error.
    async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Cheap reachability check for `/readyz` (fs: the root is writable;
    /// s3: HeadBucket).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Lists the objects whose keys start with `prefix` (`""`: every
    /// object), in ascending bytewise key order (as S3 lists them), as a
    /// stream of pages of at most `page_size` objects (clamped to
    /// 1..=[`MAX_LIST_PAGE`]; the last page may be shorter, an empty
    /// listing yields no page).
    ///
    /// Memory is bounded by one page, never by the number of objects: the
    /// s3 backend asks for the next page only when the stream is polled
    /// again (ListObjectsV2 with a continuation token); the fs backend
    /// walks the tree depth-first, holding the sorted entries of the
    /// directories on the current path only (the layout fans blobs out over
    /// 256 directories). The fs backend's own `.tmp/` is never listed.
    /// Objects written during a listing may or may not appear in it.
    fn list(&self, prefix: &str, page_size: usize) -> ObjectPages;

    /// Reads the object at `key` from its first byte to its last, hashing
    /// as it streams (memory: one chunk, whatever the object's size), and
    /// returns what was read; `Ok(None)` if there is no object at `key`.
    /// This is how a scrub re-verifies a blob against its key.
    async fn read_hashed(&self, key: &str) -> Result<Option<ObjectDigest>, StoreError>;

    /// The size of the object at `key`, without reading it (fs: metadata;
    /// s3: HeadObject); `Ok(None)` if there is none.
    async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError>;

    /// A URL that GETs `key` without credentials until `ttl` has passed (at
    /// most [`MAX_PRESIGN_TTL`]), for backends that have such URLs (s3);
    /// `Ok(None)` for those that do not (fs). No request is made and the
    /// object's existence is not checked. The URL is a bearer credential:
    /// never log it.
    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>, StoreError>;

    /// Deletes the object at `key` (an erasure); deleting a key that does
    /// not exist is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// `"fs"` or `"s3"`, for logs and metrics.
    fn backend_name(&self) -> &'static str;
}

/// A blob being written as its bytes arrive; see
/// [`ObjectStore::begin_blob`]. Dropped unfinished, it discards what was
/// written (the s3 backend aborts its multipart upload in a spawned task).
#[async_trait::async_trait]
pub trait BlobUpload: Send {
    /// The file's length, when the download announced it, before the first
    /// chunk. Both backends then refuse a file that is not of that length;
    /// the s3 backend with `pipe_parts` sends a file of several parts
    /// straight into its part requests, with no part buffer at all. Ignored
    /// by default.
    fn expect_length(&mut self, length: u64) {
        let _ = length;
    }

    /// Takes the next chunk of the file. Memory is bounded by the backend's
    /// configuration, never by the file's size: the s3 backend holds at
    /// most one part being filled and its parts in flight, and waits for a
    /// free stream buffer before filling the next (or, piped, two chunks on
    /// their way into the part's request).
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError>;

    /// Commits the object if the bytes written hash to the key's sha256;
    /// otherwise discards them and answers [`Streamed::Refused`].
    async fn finish(self: Box<Self>) -> Result<Streamed, StoreError>;
}

#[async_trait::async_trait]
impl ByteSink<StoreError> for Box<dyn BlobUpload> {
    fn expect_length(&mut self, length: u64) {
        BlobUpload::expect_length(self.as_mut(), length);
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        BlobUpload::write(self.as_mut(), chunk).await
    }
}

/// Holds a streamed blob to the length its download announced
/// ([`BlobUpload::expect_length`]): an error once `size` bytes (written so
/// far, or in all when `finished`) are more, or in the end fewer. Both
/// backends check it, so a cut-off download is never stored even when the
/// provider vouched for the hash of what did arrive.
pub(crate) fn check_announced(
    key: &str,
    announced: Option<u64>,
    size: u64,
    finished: bool,
) -> Result<(), StoreError> {
    let problem = match announced {
        Some(length) if size > length => {
            format!("more bytes than the {length} the download announced")
        }
        Some(length) if finished && size < length => {
            format!("the download announced {length} bytes and ended after {size}")
        }
        _ => return Ok(()),
    };
    Err(StoreError::io(
        "stream blob",
        key,
        std::io::Error::other(problem),
    ))
}

/// How a streamed blob ended ([`BlobUpload::finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streamed {
    /// The bytes matched the key: stored, or already there.
    Archived {
        /// Bytes written.
        size: u64,
        /// Whether the object was written or already present.
        outcome: PutOutcome,
    },
    /// The bytes hash to something else than the key's sha256; nothing
    /// was made visible.
    Refused {
        /// Bytes written.
        size: u64,
        /// What they hash to.
        sha256: Sha256Digest,
    },
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

/// Checks that bytes staged in memory are as long as their record says,
/// for every backend alike (their sha256 was taken as they arrived, and
/// they have not left memory since).
pub(crate) fn check_staged_bytes(file: &StagedFile, bytes: &[u8]) -> Result<(), StoreError> {
    if bytes.len() as u64 == file.size {
        return Ok(());
    }
    Err(StoreError::SpoolMismatch {
        path: file.location(),
        detail: format!(
            "staged bytes are {} long, expected {}",
            bytes.len(),
            file.size
        ),
    })
}

/// Checks a key the same way for every backend: non-empty, at most 1024
/// bytes, relative, `/`-separated segments of at most 255 bytes that are
/// neither empty, `.` nor `..`, no NUL. Keys from [`Layout`](crate::Layout) always pass; the check
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
    } else if key.split('/').any(|s| s.len() > MAX_SEGMENT_BYTES) {
        Some("has a segment longer than 255 bytes")
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

/// Checks a listing prefix: empty, or a key prefix that is not absolute
/// and contains no NUL (it need not end at a `/`).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    let reason = if prefix.len() > MAX_KEY_BYTES {
        Some("longer than 1024 bytes")
    } else if prefix.contains('\0') {
        Some("contains NUL")
    } else if prefix.starts_with('/') {
        Some("absolute")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(StoreError::InvalidKey {
            key: prefix.to_owned(),
            reason,
        }),
    }
}

/// `page_size` clamped to 1..=[`MAX_LIST_PAGE`].
pub(crate) fn clamp_page(page_size: usize) -> usize {
    page_size.clamp(1, MAX_LIST_PAGE)
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
            &format!("messages/a/{}.json", "m".repeat(251)),
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a",
            "blobs/sha256/ab/abc.jpg",
            "p/messages/x/2026/01/02/a..b.json",
            &format!("messages/a/{}.json", "m".repeat(250)),
        ] {
            validate_key(good).unwrap();
        }
    }
}
