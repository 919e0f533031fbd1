//! The archive: where verified media files and their manifests end up, on S3
//! (or any S3-compatible store) or in a local folder, behind one trait.
//!
//! This crate owns the [`ObjectStore`] trait and its two backends
//! ([`S3Store`], [`FsStore`]), the `[storage]` config section that picks one
//! ([`StorageConfig`], checked into [`StorageSettings`]), each account's
//! archive ([`Archives`]: the global store or the account's own, one store
//! per distinct configuration), the storage layout
//! ([`Layout`]), the manifest document ([`Manifest`]) and the store's error
//! type ([`StoreError`], which classifies itself for the queue through
//! [`archiver_core::Classify`]). It
//! must not know about providers, webhooks, the queue or the worker loop: it
//! is handed a finished [`StagedFile`](archiver_core::StagedFile) and a key,
//! and either stores exactly those bytes or fails.
//!
//! # Storage layout (a durable format: users' scripts depend on it)
//!
//! Both backends use the same keys; the fs backend maps `/` to directories
//! below its root.
//!
//! - Blob: `{prefix}blobs/sha256/{h[0..2]}/{h}{ext}`, where `h` is the
//!   lowercase hex sha256 of the bytes and `ext` comes from the provider's
//!   mime type via [`extension_for_mime`] (never from the sender's file name;
//!   none when the type is unknown). Content-addressed: the same file sent to
//!   a hundred chats is stored once, and nothing overwrites anything.
//! - Manifest: `{prefix}messages/{account}/{yyyy}/{mm}/{dd}/{message_id}.json`,
//!   dated by the message's UTC timestamp. `account` and `message_id` are
//!   percent-encoded byte by byte outside `[A-Za-z0-9._=-]` (uppercase hex,
//!   `%2F` for `/`, `%2B` for `+`), so that no id can escape its folder or
//!   collide with another; valid account names are unchanged by this.
//! - Another manifest of the same message, for other bytes (a second job of
//!   the message, or a later attempt, obtained a file with another sha256):
//!   `{prefix}messages/{account}/{yyyy}/{mm}/{dd}/{message_id}.d/{sha256}.json`,
//!   `sha256` lowercase hex. A manifest is never replaced by one for other
//!   bytes ([`put_message_manifest`]): the first stays where it was, each
//!   other one is written beside it, named by what it describes, so the
//!   name is the same on every retry. A folder rather than a longer file
//!   name: `{message_id}.json` may already fill a file-name segment (255
//!   bytes), and `.d` cannot end any manifest's name. Readers looking for
//!   a message's files read `{message_id}.json` and list `{message_id}.d/`.
//! - `{prefix}` is the configured prefix with a `/` appended when it is not
//!   empty and does not already end with one.
//!
//! A manifest is a JSON object with exactly the fields of [`Manifest`], all of
//! them always present (`null` when unknown):
//!
//! ```json
//! {"provider":"cloudapi","account":"meta-main","chat_id":"4915112345678",
//!  "message_id":"wamid.HBgM","media_id":"1234","sender":"4915112345678",
//!  "message_timestamp":"2026-11-03T10:15:00Z","mime_type":"image/jpeg",
//!  "file_name":null,"caption":"look","size":51234,
//!  "sha256":"<64 hex>","blob_key":"blobs/sha256/ab/ab…cd.jpg",
//!  "provider_sha256":"<64 hex>","verification":"provider-sha256",
//!  "archived_at":"2026-11-03T10:15:07.123Z"}
//! ```
//!
//! `verification` is one of `provider-sha256`, `whatsapp-enc+plain`,
//! `computed-only` ([`Verification`]). Readers must ignore fields they do not
//! know: later versions may add some, never rename or remove one.
//!
//! # Why spool, then upload
//!
//! The blob key *is* the sha256 of the bytes, and S3 wants the checksum of
//! each request with the request, so the hash must be known before the first
//! byte is sent; some providers vouch for no hash at all. The fetch step
//! therefore streams each download into a local spool file, hashing as it
//! goes, and hands over a `StagedFile {body, size, sha256}` (a small file's
//! body may be in memory instead: see `StagedBody`). This crate then
//! writes it so that an object never becomes visible partially or
//! unverified: fs writes are temp-file + fsync + rename + fsync(dir); S3 puts
//! carry `ChecksumSHA256` (the store re-verifies), files larger than one part
//! go multipart with one checksum per part, and every byte read back from the
//! spool is hashed again here and compared with `StagedFile::sha256` before
//! the object is committed. Memory stays bounded by part size × parallel
//! parts, never by file size.
//!
//! # Stream-through, when the hash is known in advance
//!
//! When the provider vouched for the file's sha256 before the download, the
//! blob key is known before the first byte arrives. The worker then asks
//! [`ObjectStore::begin_blob`] for a [`BlobUpload`] and the fetch step writes
//! the download into it as it arrives, with no spool file: the s3 backend
//! fills one part at a time in memory (hashing it and the whole file as the
//! bytes pass), uploads each full part with its checksum while the next one
//! fills, and calls CompleteMultipartUpload only after the whole file hashed
//! to the key (a file of at most one part is one conditional PutObject at the
//! end); the fs backend writes a temp file in `.tmp/` and renames it into
//! place after the same check. Bytes that hash to anything else are discarded
//! ([`Streamed::Refused`]: multipart aborted, temp file removed), so the
//! guarantee is the same as for a staged file. Memory: the s3 backend's
//! stream buffers are shared by all uploads (`storage.s3.stream_buffers`
//! buffers of `part_size` bytes); when none is free the worker stages the
//! file instead, so the bound holds whatever the number of uploads.
//!
//! # Reading back (scrub, admin lookups)
//!
//! [`ObjectStore::list`] streams the keys under a prefix in bytewise key
//! order, a page at a time (memory: one page); [`ObjectStore::read_hashed`]
//! re-reads an object while hashing it (memory: one chunk), so a scrub can
//! compare every blob with the sha256 its key names; [`ObjectStore::size_of`]
//! checks a manifest's blob without reading it; [`ObjectStore::presign_get`]
//! hands out a time-limited download URL where the backend has URLs (s3;
//! `None` for fs). Every backend passes the same conformance suite for these
//! too.
//!
//! # Errors
//!
//! [`StoreError`] is classified for the queue: network failures, timeouts,
//! 5xx, throttling (with the server's `Retry-After` when it gives one), local
//! I/O, and store-wide misconfiguration (access denied, no such bucket: the
//! store is broken, not the job, so jobs resume on their own once an operator
//! fixes it and `/readyz` reports it meanwhile) are retryable. A checksum the
//! store rejected or a spool file that no longer matches its recorded hash,
//! an invalid key (a segment longer than 255 bytes included, on both
//! backends), a local file name the filesystem refuses (`ENAMETOOLONG`),
//! and other 4xx rejections (`KeyTooLongError`, `InvalidArgument`, ...) are
//! permanent: sending the same request again cannot succeed. Error messages never contain credentials.

mod archives;
mod config;
mod error;
mod fs;
mod layout;
mod manifest;
mod s3;
mod store;

pub use archives::{Archive, Archives};
pub use config::{StorageConfig, StorageSettings};
pub use error::StoreError;
pub use fs::FsStore;
pub use layout::{Layout, extension_for_mime};
pub use manifest::{Manifest, Verification, put_message_manifest};
pub use s3::{S3Config, S3Settings, S3Store};
pub use store::{
    BlobUpload, MAX_LIST_PAGE, MAX_PRESIGN_TTL, MAX_SMALL_OBJECT_BYTES, ObjectDigest, ObjectInfo,
    ObjectPages, ObjectStore, PutOutcome, Streamed,
};
