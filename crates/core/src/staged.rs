use std::path::PathBuf;

use crate::Sha256Digest;

/// A downloaded file waiting in the local spool, with what was measured while
/// it streamed in.
///
/// The fetch step produces it; the store consumes it. Because the sha256 is
/// known before the upload starts, the blob key (the hash) and every S3
/// checksum can be sent with the first byte, and nothing unverified ever
/// becomes visible in the archive. Whoever holds the value owns the file and
/// removes it when done (see `ARCHITECTURE.md`, "Why a spool file").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Where the bytes are, on local disk.
    pub path: PathBuf,
    /// How many bytes.
    pub size: u64,
    /// The sha256 of exactly those bytes.
    pub sha256: Sha256Digest,
}
