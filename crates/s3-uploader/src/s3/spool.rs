//! Re-reading the spool file before its bytes are committed: each part is
//! hashed (its checksum goes with it) and so is the whole file, which must
//! end where the fetch step said and hash to what it recorded.
//!
//! Reads run on the blocking pool, through one small buffer, so a large
//! file neither stalls the runtime nor costs memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use archiver_core::StagedFile;
use sha2::{Digest, Sha256};

use crate::StoreError;

/// Bytes hashed per read of the spool file.
const HASH_CHUNK: usize = 256 * 1024;

/// Reads the spool file part by part on the blocking pool, hashing each part
/// and the whole file as it goes, through one small buffer.
pub(super) struct SpoolReader {
    file: File,
    whole: Sha256,
    buf: Vec<u8>,
}

impl SpoolReader {
    pub(super) async fn open(path: &Path) -> Result<Self, StoreError> {
        let p = path.to_path_buf();
        let file = blocking_io(move || File::open(&p))
            .await
            .map_err(|e| StoreError::io("open staged file", path, e))?;
        Ok(Self {
            file,
            whole: Sha256::new(),
            buf: vec![0; HASH_CHUNK],
        })
    }

    /// Hashes the whole file and checks it against what the fetch step
    /// recorded, before any of it is sent.
    pub(super) async fn verify(file: &StagedFile, path: &Path) -> Result<(), StoreError> {
        let (reader, _) = Self::open(path).await?.hash_part(file.size, path).await?;
        reader.finish(file, path).await
    }

    /// The sha256 of the next `len` bytes (also fed to the whole-file hash).
    pub(super) async fn hash_part(
        self,
        len: u64,
        path: &Path,
    ) -> Result<(Self, [u8; 32]), StoreError> {
        let Self {
            mut file,
            mut whole,
            mut buf,
        } = self;
        let result = blocking_io(move || {
            let mut part = Sha256::new();
            let mut left = len;
            while left > 0 {
                let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                file.read_exact(&mut buf[..n])?;
                part.update(&buf[..n]);
                whole.update(&buf[..n]);
                left -= n as u64;
            }
            Ok((Self { file, whole, buf }, part.finalize().into()))
        })
        .await;
        result.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StoreError::SpoolMismatch {
                    path: path.to_path_buf(),
                    detail: "staged file is shorter than its recorded size".into(),
                }
            } else {
                StoreError::io("read staged file", path, e)
            }
        })
    }

    /// Checks that the file ended where expected and hashed to what the
    /// fetch step recorded.
    pub(super) async fn finish(self, file: &StagedFile, path: &Path) -> Result<(), StoreError> {
        let Self {
            file: mut f, whole, ..
        } = self;
        let extra = blocking_io(move || f.read(&mut [0u8; 1]))
            .await
            .map_err(|e| StoreError::io("read staged file", path, e))?;
        if extra != 0 {
            return Err(StoreError::SpoolMismatch {
                path: path.to_path_buf(),
                detail: format!("staged file is longer than its recorded size {}", file.size),
            });
        }
        let digest: [u8; 32] = whole.finalize().into();
        if digest != *file.sha256.as_bytes() {
            return Err(StoreError::SpoolMismatch {
                path: path.to_path_buf(),
                detail: format!(
                    "staged file hashes to sha256 {}, recorded {}",
                    hex::encode(digest),
                    file.sha256
                ),
            });
        }
        Ok(())
    }
}

async fn blocking_io<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}
