use std::path::Path;

use archiver_core::{Sha256Digest, StagedFile};
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::FetchError;

/// Write buffer in front of the spool file: network chunks are small (8-16
/// KiB), so batching them keeps the number of blocking writes low.
const WRITE_BUFFER: usize = 256 * 1024;

/// A spool file being written and hashed. Dropping it before [`finish`]
/// removes the file, so every error path (and a cancelled download) cleans up.
///
/// [`finish`]: SpoolWriter::finish
pub(crate) struct SpoolWriter {
    file: BufWriter<tokio::fs::File>,
    path: TempPath,
    hasher: Sha256,
    size: u64,
}

impl SpoolWriter {
    pub(crate) fn create(dir: &Path) -> Result<Self, FetchError> {
        let (file, path) = tempfile::Builder::new()
            .prefix("dl-")
            .suffix(".spool")
            .tempfile_in(dir)
            .map_err(|e| io_error("creating a spool file", &e))?
            .into_parts();
        Ok(Self {
            file: BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file)),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| io_error("writing the spool file", &e))?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Flushes and keeps the file.
    ///
    /// Not fsynced: the spool is scratch space. A crash before the upload
    /// leaves the job unacknowledged, so it downloads again; the fs store
    /// fsyncs the bytes itself before renaming them into the archive. An
    /// fsync here would force every download onto the disk (256 MiB of
    /// writeback for a 256 MiB video) only for the S3 store to read it back
    /// from the page cache and delete it.
    pub(crate) async fn finish(mut self) -> Result<StagedFile, FetchError> {
        self.file
            .flush()
            .await
            .map_err(|e| io_error("flushing the spool file", &e))?;
        let sha256 = Sha256Digest::from_bytes(self.hasher.finalize().into());
        let size = self.size;
        let path = self
            .path
            .keep()
            .map_err(|e| io_error("keeping the spool file", &e.error))?;
        Ok(StagedFile { path, size, sha256 })
    }
}

fn io_error(what: &str, e: &std::io::Error) -> FetchError {
    FetchError::Io(format!("{what}: {e}"))
}
