use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::Sha256Digest;

/// A downloaded file waiting to be stored, with what was measured while it
/// streamed in.
///
/// The fetch step produces it; the store consumes it. Because the sha256 is
/// known before the upload starts, the blob key (the hash) and every S3
/// checksum can be sent with the first byte, and nothing unverified ever
/// becomes visible in the archive. Whoever holds the value owns a spool
/// file and removes it when done (see `ARCHITECTURE.md`, "Why a spool
/// file").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Where the bytes are.
    pub body: StagedBody,
    /// How many bytes.
    pub size: u64,
    /// The sha256 of exactly those bytes.
    pub sha256: Sha256Digest,
}

/// Where a [`StagedFile`]'s bytes wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StagedBody {
    /// A spool file on local disk: any file too large for memory, or whose
    /// size was not announced before it arrived.
    Spool(PathBuf),
    /// In memory: a small file (at most `fetch.in_memory_max_bytes`), which
    /// costs no file to create, re-read and remove, and is hashed once. The
    /// bytes never left this process, so the stores send them without
    /// hashing them again.
    Memory(Bytes),
}

impl StagedFile {
    /// The spool file holding the bytes, if they are not in memory.
    pub fn spool_path(&self) -> Option<&Path> {
        match &self.body {
            StagedBody::Spool(path) => Some(path),
            StagedBody::Memory(_) => None,
        }
    }

    /// Where the bytes are, for error messages: the spool file's path, or
    /// `(memory)`.
    pub fn location(&self) -> PathBuf {
        self.spool_path()
            .map_or_else(|| PathBuf::from("(memory)"), Path::to_path_buf)
    }
}
