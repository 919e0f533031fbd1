//! The spool: scratch files that downloads stream into (and, for a file
//! small enough, memory instead; see [`Staging`]).
//!
//! # Who may delete what (several processes, one `spool_dir`)
//!
//! Each [`Spool`] (one per process: the daemon builds one `Fetcher`) works in
//! its own subdirectory `{spool_dir}/proc-{random}/` and holds an exclusive
//! `flock` on that directory for as long as it lives. At startup,
//! [`Spool::open`] sweeps what dead processes left behind (a `kill -9`, an
//! OOM kill, a power cut): every `proc-*` directory whose lock it can take
//! belongs to no live process, so it is removed with its files; one whose
//! lock is held is a live replica's and is left alone.
//!
//! Why a lock rather than the other ways to tell a live owner: in
//! PostgreSQL mode several replicas may share one `spool_dir` (one volume,
//! several pods). A pid in the file name cannot say whether its owner
//! lives: replicas in containers each see their own pid namespace (all of
//! them are pid 1), and pids are reused after a restart. An age threshold
//! would either keep a crash's files for hours or delete a slow upload's
//! file. The kernel releases a `flock` when its holder dies, however it
//! dies, which is exactly the fact the sweep needs. A directory is created
//! under a temporary name (`.new-*`), locked, and only then renamed to
//! `proc-*`, so no sweep can ever see an unlocked `proc-*` directory of a
//! live process. If the filesystem does not support locks, the process
//! works on without one and sweeps cannot take one either, so they skip
//! every directory: leftovers stay, a live file is never deleted.
//!
//! Within an attempt, a [`SpoolWriter`] removes its file on every error and
//! when it is dropped half-written; once finished, the holder of the
//! [`StagedFile`] removes it (the worker does so with a drop guard).
//!
//! Files in `spool_dir` itself were written by versions before the
//! subdirectories; they are removed once a day old (nothing writes there
//! any more, and a day outlasts any upload still reading one during a
//! rolling upgrade).

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use archiver_core::{ByteSink, Sha256Digest, StagedBody, StagedFile};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::FetchError;

/// Write buffer in front of the spool file: network chunks are small (8-16
/// KiB), so batching them keeps the number of blocking writes low.
const WRITE_BUFFER: usize = 256 * 1024;

/// Prefix of a live (or dead, not yet swept) process's spool directory.
const PROCESS_DIR_PREFIX: &str = "proc-";

/// Prefix of a process directory before it is locked and renamed.
const NEW_DIR_PREFIX: &str = ".new-";

/// Files directly in `spool_dir`, or unrenamed `.new-*` directories, older
/// than this are leftovers (see the module docs).
const STALE_AGE: Duration = Duration::from_secs(24 * 3600);

/// This process's part of `spool_dir`: a directory locked for as long as
/// the value lives (see the module docs). Removed, if empty, when dropped.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    /// Holds the `flock` that tells sweeps this directory is in use; the
    /// kernel releases it when the process dies.
    _lock: Option<File>,
}

impl Spool {
    /// Creates `root` if missing, sweeps the leftovers of dead processes
    /// from it, then creates and locks this process's directory.
    pub(crate) fn open(root: &Path) -> Result<Self, FetchError> {
        fs::create_dir_all(root)
            .map_err(|e| io_error(&format!("creating spool dir {}", root.display()), &e))?;
        let removed = sweep(root);
        if removed > 0 {
            tracing::info!(spool_dir = %root.display(), removed, "removed spool leftovers of processes that are gone");
        }
        let new = tempfile::Builder::new()
            .prefix(NEW_DIR_PREFIX)
            .tempdir_in(root)
            .map_err(|e| io_error("creating this process's spool dir", &e))?;
        let lock = lock_dir(new.path());
        let name = new
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(NEW_DIR_PREFIX))
            .map(|suffix| format!("{PROCESS_DIR_PREFIX}{suffix}"))
            .ok_or_else(|| FetchError::Io("unexpected spool dir name".into()))?;
        let dir = root.join(name);
        fs::rename(new.path(), &dir)
            .map_err(|e| io_error("renaming this process's spool dir", &e))?;
        // Renamed away: there is nothing left for the TempDir to remove.
        let _ = new.keep();
        Ok(Self { dir, _lock: lock })
    }

    /// Where this process's spool files go.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Only if empty: a StagedFile handed out may still be in use.
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Opens `dir` and takes an exclusive `flock` on it; `None` (with a
/// warning) when the filesystem cannot lock.
fn lock_dir(dir: &Path) -> Option<File> {
    let locked = File::open(dir).and_then(|f| match f.try_lock() {
        Ok(()) => Ok(f),
        Err(TryLockError::WouldBlock) => Err(std::io::Error::other("already locked")),
        Err(TryLockError::Error(e)) => Err(e),
    });
    match locked {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot lock the spool dir; a crash's leftovers will not be swept");
            None
        }
    }
}

/// Removes what dead processes left in `root` (see the module docs);
/// returns how many entries went. Errors are logged, never fatal: a
/// leftover costs disk space, not correctness.
pub(crate) fn sweep(root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(root) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(meta) = entry.metadata() else { continue };
        let stale = meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_AGE);
        let result = if meta.is_dir() && name.starts_with(PROCESS_DIR_PREFIX) {
            let owner_gone = File::open(&path).map(|f| match f.try_lock() {
                Ok(()) => Some(f),
                Err(TryLockError::WouldBlock) => None,
                Err(TryLockError::Error(e)) => {
                    tracing::debug!(path = %path.display(), error = %e, "cannot lock; leaving it");
                    None
                }
            });
            match owner_gone {
                // Removed while holding the dead owner's lock, so that two
                // processes starting together do not both sweep it.
                Ok(Some(_lock)) => fs::remove_dir_all(&path).map(|()| true),
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            }
        } else if meta.is_dir() && name.starts_with(NEW_DIR_PREFIX) && stale {
            fs::remove_dir_all(&path).map(|()| true)
        } else if meta.is_file() && stale {
            fs::remove_file(&path).map(|()| true)
        } else {
            Ok(false)
        };
        match result {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove spool leftover")
            }
        }
    }
    removed
}

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
        Ok(StagedFile {
            body: StagedBody::Spool(path),
            size,
            sha256,
        })
    }
}

/// Where one download's bytes go while they are hashed: a spool file, or,
/// for a file whose size is known up front and at most
/// `fetch.in_memory_max_bytes`, one buffer of exactly that size.
///
/// Why memory for small files: for a typical 200 KiB image the spool file's
/// life (create, write, re-open to hash it again, re-open to send it,
/// unlink), each step a trip to the blocking pool, cost more CPU than the
/// bytes themselves (BENCHMARKS.md). Memory stays bounded by configuration:
/// at most `workers.concurrency` downloads run at once, each holding at
/// most `in_memory_max_bytes` (twice that while a WhatsApp-encrypted one is
/// decrypted).
pub(crate) enum Staging {
    Spool(SpoolWriter),
    Memory { buf: BytesMut, hasher: Sha256 },
}

impl Staging {
    /// A buffer for a file of exactly `len` bytes.
    pub(crate) fn memory(len: u64) -> Self {
        Staging::Memory {
            buf: BytesMut::with_capacity(usize::try_from(len).unwrap_or(0)),
            hasher: Sha256::new(),
        }
    }

    pub(crate) fn spool(dir: &Path) -> Result<Self, FetchError> {
        SpoolWriter::create(dir).map(Staging::Spool)
    }

    pub(crate) fn size(&self) -> u64 {
        match self {
            Staging::Spool(spool) => spool.size(),
            Staging::Memory { buf, .. } => buf.len() as u64,
        }
    }

    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        match self {
            Staging::Spool(spool) => spool.write(chunk).await,
            Staging::Memory { buf, hasher } => {
                hasher.update(chunk);
                buf.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    /// The staged file: the spool file flushed and kept (see
    /// [`SpoolWriter::finish`]), or the buffer frozen.
    pub(crate) async fn finish(self) -> Result<StagedFile, FetchError> {
        match self {
            Staging::Spool(spool) => spool.finish().await,
            Staging::Memory { buf, hasher } => Ok(StagedFile {
                size: buf.len() as u64,
                sha256: Sha256Digest::from_bytes(hasher.finalize().into()),
                body: StagedBody::Memory(buf.freeze()),
            }),
        }
    }
}

#[async_trait::async_trait]
impl ByteSink<FetchError> for Staging {
    async fn write(&mut self, chunk: Bytes) -> Result<(), FetchError> {
        Staging::write(self, &chunk).await
    }
}

fn io_error(what: &str, e: &std::io::Error) -> FetchError {
    FetchError::Io(format!("{what}: {e}"))
}
