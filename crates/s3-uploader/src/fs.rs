//! The local-folder backend.
//!
//! Keys map to paths below the root (`/` separates directories). Every write
//! is atomic and durable: the bytes go to a temp file in `{root}/.tmp`, which
//! is fsynced, renamed over the destination, and the destination directory
//! is fsynced (as is each directory on the way, in its parent). A reader
//! therefore sees either no object or the whole object.
//!
//! What this store counts on but did not write itself is fsynced too before
//! it counts on it: a blob that is already there (dedup) is fsynced, with
//! its directory, before `put_blob` reports it present, since the manifest
//! that will name it is written next; and every directory on a key's path
//! is fsynced in its parent whether this call created it or found it (a
//! concurrent writer, or one that crashed, may have created it without
//! making it durable yet). An fsync of data that is already on disk is
//! cheap; a manifest naming a blob that a power cut took away is not.
//! `.tmp` is on
//! the same filesystem as the archive, so the rename is atomic; temp files a
//! crash left behind are removed by [`FsStore::open`] once a day old.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use archiver_core::{Sha256Digest, StagedBody, StagedFile};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::store::{
    check_announced, check_staged_bytes, clamp_page, validate_key, validate_prefix,
};
use crate::{
    BlobUpload, MAX_SMALL_OBJECT_BYTES, ObjectDigest, ObjectInfo, ObjectPages, ObjectStore,
    PutOutcome, StoreError, Streamed,
};

/// Name of the temp directory below the root; keys may not start with it.
const TMP_DIR: &str = ".tmp";

/// Temp files older than this are leftovers of a crash (no write lasts a day).
const STALE_TMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// Copy buffer for the cross-filesystem path.
const COPY_BUF: usize = 1024 * 1024;

/// An archive in a local folder (the default backend).
///
/// `put_blob` checks that a spool file still hashes to its recorded
/// sha256, then moves it into place when it is on the same filesystem as
/// the root: no copy, and the spool path no longer exists afterwards.
/// Otherwise it copies (hashing while copying) and leaves the spool file
/// alone. Either way the caller deletes the spool file if it still exists.
/// A file staged in memory is written through a temp file, as a manifest
/// is.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl FsStore {
    /// Opens (creating if needed) the archive folder at `root`, with its
    /// `.tmp` directory, and removes stale temp files. Blocking; call it at
    /// startup.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(|e| StoreError::io("create directory", root, e))?;
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(|e| StoreError::io("create directory", &tmp, e))?;
        let store = Self {
            root: root.to_path_buf(),
            tmp,
        };
        store.sweep_stale_temp_files();
        Ok(store)
    }

    fn sweep_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.tmp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP_AGE);
            if stale && let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove stale temp file");
            }
        }
    }

    /// The path for `key`, which must be valid and outside `.tmp`.
    fn path_for(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        if key.split('/').next() == Some(TMP_DIR) {
            return Err(StoreError::InvalidKey {
                key: key.to_owned(),
                reason: "`.tmp/` is reserved by the fs backend",
            });
        }
        Ok(self.root.join(key))
    }

    /// Whether a blob of `size` bytes is at `dest` already (made durable
    /// before this says so). An object of another size is reported and
    /// will be replaced.
    fn already_present(&self, dest: &Path, size: u64) -> Result<bool, StoreError> {
        let dir = parent_of(dest);
        match fs::metadata(dest) {
            Ok(m) if m.is_file() && m.len() == size => {
                // Maybe written by a process that crashed before its fsync:
                // durable before the caller writes a manifest naming it.
                self.create_dirs(dir)?;
                fsync_file(dest)?;
                fsync_dir(dir)?;
                Ok(true)
            }
            Ok(m) if m.is_dir() => Err(io_other("store", dest, "a directory is in the way")),
            Ok(m) => {
                tracing::warn!(
                    path = %dest.display(),
                    existing = m.len(),
                    size,
                    "replacing an object of the wrong size"
                );
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("stat", dest, e)),
        }
    }

    fn put_blob_blocking(&self, dest: &Path, file: &StagedFile) -> Result<PutOutcome, StoreError> {
        let dir = parent_of(dest);
        if self.already_present(dest, file.size)? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let path = match &file.body {
            StagedBody::Spool(path) => path,
            // Never on disk: written through a temp file like a manifest;
            // the bytes were hashed as they arrived and have not left
            // memory since.
            StagedBody::Memory(bytes) => {
                check_staged_bytes(file, bytes)?;
                self.put_small_blocking(dest, bytes)?;
                return Ok(PutOutcome::Stored);
            }
        };
        let staged = fs::metadata(path).map_err(|e| StoreError::io("stat staged file", path, e))?;
        if staged.len() != file.size {
            return Err(StoreError::SpoolMismatch {
                path: path.clone(),
                detail: format!(
                    "staged file is {} bytes, expected {}",
                    staged.len(),
                    file.size
                ),
            });
        }
        self.create_dirs(dir)?;
        if !self.same_filesystem(&staged) {
            self.copy_in(dest, file, path)?;
            return Ok(PutOutcome::Stored);
        }

        // Same filesystem: move the spool file in, after checking that it
        // still hashes to its recorded sha256 (what the key promises; about
        // 1 s per 1.7 GB with SHA-NI, small next to the download) and making
        // its bytes durable before its new name is.
        let mut staged_file =
            File::open(path).map_err(|e| StoreError::io("open staged file", path, e))?;
        check_digest(
            file,
            hash_reader(&mut staged_file, path, "read staged file", |_| Ok(()))?,
        )?;
        staged_file
            .sync_all()
            .map_err(|e| StoreError::io("fsync staged file", path, e))?;
        record_sync(path);
        drop(staged_file);
        match fs::rename(path, dest) {
            Ok(()) => {
                fsync_dir(dir)?;
                return Ok(PutOutcome::Stored);
            }
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {}
            Err(e) => return Err(StoreError::io("rename staged file to", dest, e)),
        }
        self.copy_in(dest, file, path)?;
        Ok(PutOutcome::Stored)
    }

    /// Whether a file with metadata `m` can be renamed into the archive.
    /// (A rename that fails with `EXDEV` anyway falls back to copying.)
    fn same_filesystem(&self, m: &fs::Metadata) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(&self.tmp).is_ok_and(|t| t.dev() == m.dev())
        }
        #[cfg(not(unix))]
        {
            let _ = m;
            true
        }
    }

    /// Copies the staged file to `dest` through a temp file, verifying size
    /// and sha256 of what was copied before it becomes visible.
    fn copy_in(&self, dest: &Path, file: &StagedFile, path: &Path) -> Result<(), StoreError> {
        let mut src = File::open(path).map_err(|e| StoreError::io("open staged file", path, e))?;
        let mut tmp = self.temp_file()?;
        let measured = hash_reader(&mut src, path, "read staged file", |chunk| {
            tmp.write_all(chunk)
                .map_err(|e| StoreError::io("write", tmp.path(), e))
        })?;
        check_digest(file, measured)?;
        self.commit(tmp, dest)
    }

    fn put_small_blocking(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        self.create_dirs(parent_of(dest))?;
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes)
            .map_err(|e| StoreError::io("write", tmp.path(), e))?;
        self.commit(tmp, dest)
    }

    /// fsync the temp file, rename it to `dest`, fsync `dest`'s directory.
    fn commit(&self, tmp: tempfile::NamedTempFile, dest: &Path) -> Result<(), StoreError> {
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io("fsync", tmp.path(), e))?;
        record_sync(tmp.path());
        tmp.persist(dest)
            .map_err(|e| StoreError::io("rename temp file to", dest, e.error))?;
        fsync_dir(parent_of(dest))
    }

    fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&self.tmp)
            .map_err(|e| StoreError::io("create temp file in", &self.tmp, e))
    }

    /// Creates `dir` and its missing ancestors below the root, and fsyncs
    /// each parent on the way, whether this call created the child or found
    /// it (see the module docs), so that the path survives a crash.
    fn create_dirs(&self, dir: &Path) -> Result<(), StoreError> {
        let rel = dir.strip_prefix(&self.root).unwrap_or(dir);
        let mut current = self.root.clone();
        for part in rel.components() {
            let next = current.join(part);
            match fs::create_dir(&next) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && next.is_dir() => {}
                Err(e) => return Err(StoreError::io("create directory", &next, e)),
            }
            fsync_dir(&current)?;
            current = next;
        }
        Ok(())
    }

    fn get_small_blocking(&self, path: &Path, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open", path, e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_SMALL_OBJECT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io("read", path, e))?;
        if bytes.len() as u64 > MAX_SMALL_OBJECT_BYTES {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                limit: MAX_SMALL_OBJECT_BYTES,
            });
        }
        Ok(Some(bytes))
    }

    fn read_hashed_blocking(&self, path: &Path) -> Result<Option<ObjectDigest>, StoreError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open", path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io("stat", path, e))?;
        if !meta.is_file() {
            return Ok(None);
        }
        let (size, digest) = hash_reader(&mut file, path, "read", |_| Ok(()))?;
        Ok(Some(ObjectDigest {
            size,
            sha256: Sha256Digest::from_bytes(digest),
        }))
    }

    fn ping_blocking(&self) -> Result<(), StoreError> {
        let mut probe = self.temp_file()?;
        probe
            .write_all(b"ping")
            .map_err(|e| StoreError::io("write", probe.path(), e))?;
        probe
            .close()
            .map_err(|e| StoreError::io("remove temp file in", &self.tmp, e))
    }
}

#[async_trait::async_trait]
impl ObjectStore for FsStore {
    async fn put_blob(
        &self,
        key: &str,
        file: &StagedFile,
        _content_type: Option<&str>,
    ) -> Result<PutOutcome, StoreError> {
        let dest = self.path_for(key)?;
        let (this, file) = (self.clone(), file.clone());
        blocking(move || this.put_blob_blocking(&dest, &file)).await
    }

    async fn begin_blob(
        &self,
        key: &str,
        sha256: Sha256Digest,
        _max_size: u64,
        _content_type: Option<&str>,
    ) -> Result<Option<Box<dyn BlobUpload>>, StoreError> {
        let dest = self.path_for(key)?;
        let this = self.clone();
        let upload = blocking(move || StreamedFile::create(this, dest, sha256)).await?;
        Ok(Some(Box::new(upload)))
    }

    async fn put_manifest(&self, key: &str, json: &[u8]) -> Result<(), StoreError> {
        let dest = self.path_for(key)?;
        let (this, json) = (self.clone(), json.to_vec());
        blocking(move || this.put_small_blocking(&dest, &json)).await
    }

    async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_for(key)?;
        let (this, key) = (self.clone(), key.to_owned());
        blocking(move || this.get_small_blocking(&path, &key)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let this = self.clone();
        blocking(move || this.ping_blocking()).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_for(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            // Durable, as every write here: a deletion that a power loss
            // undid would bring erased media back.
            Ok(()) => path.parent().map_or(Ok(()), fsync_dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", &path, e)),
        })
        .await
    }

    fn list(&self, prefix: &str, page_size: usize) -> ObjectPages {
        use futures_util::StreamExt as _;
        if let Err(e) = validate_prefix(prefix) {
            return futures_util::stream::once(async move { Err(e) }).boxed();
        }
        let page_size = clamp_page(page_size);
        let walk = Walk::new(self.root.clone(), prefix.to_owned());
        futures_util::stream::try_unfold(Some(walk), move |state| async move {
            let Some(mut walk) = state else {
                return Ok(None);
            };
            let (walk, page) = blocking(move || {
                let page = walk.next_page(page_size)?;
                Ok((walk, page))
            })
            .await?;
            if page.is_empty() {
                return Ok(None);
            }
            // A short page means the walk is over.
            let next = (page.len() == page_size).then_some(walk);
            Ok(Some((page, next)))
        })
        .boxed()
    }

    async fn read_hashed(&self, key: &str) -> Result<Option<ObjectDigest>, StoreError> {
        let path = self.path_for(key)?;
        let this = self.clone();
        blocking(move || this.read_hashed_blocking(&path)).await
    }

    async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path_for(key)?;
        blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("stat", &path, e)),
        })
        .await
    }

    /// A folder has no URLs to hand out.
    async fn presign_get(&self, key: &str, _ttl: Duration) -> Result<Option<String>, StoreError> {
        validate_key(key)?;
        Ok(None)
    }

    fn backend_name(&self) -> &'static str {
        "fs"
    }
}

/// A resumable depth-first walk of the archive folder in bytewise key
/// order, for [`ObjectStore::list`].
///
/// Holds, for each directory on the current path, its remaining entries,
/// sorted, and only those that can hold a key starting with the prefix.
/// A directory sorts as its name plus `/`, so that the walk yields keys in
/// exactly the order S3 lists them (`a-b` before `a/c`).
struct Walk {
    root: PathBuf,
    prefix: String,
    /// `None` until the root has been read.
    stack: Option<Vec<std::vec::IntoIter<WalkEntry>>>,
}

struct WalkEntry {
    /// The key, with a trailing `/` for a directory.
    key: String,
    is_dir: bool,
}

impl Walk {
    fn new(root: PathBuf, prefix: String) -> Self {
        Self {
            root,
            prefix,
            stack: None,
        }
    }

    /// The next up to `max` objects; empty when the walk is over.
    fn next_page(&mut self, max: usize) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut page = Vec::new();
        if self.stack.is_none() {
            let top = self.read_dir("")?;
            self.stack = Some(vec![top]);
        }
        while page.len() < max {
            let Some(frames) = self.stack.as_mut() else {
                break;
            };
            let Some(frame) = frames.last_mut() else {
                break;
            };
            let Some(entry) = frame.next() else {
                frames.pop();
                continue;
            };
            if entry.is_dir {
                let entries = self.read_dir(&entry.key)?;
                if let Some(frames) = self.stack.as_mut() {
                    frames.push(entries);
                }
                continue;
            }
            let path = self.root.join(&entry.key);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => page.push(ObjectInfo {
                    key: entry.key,
                    size: m.len(),
                }),
                // Removed or replaced since the directory was read.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("stat", &path, e)),
            }
        }
        Ok(page)
    }

    /// The entries of the directory at key prefix `dir` (`""` or ending
    /// with `/`) that can hold matching keys, sorted by key.
    fn read_dir(&self, dir: &str) -> Result<std::vec::IntoIter<WalkEntry>, StoreError> {
        let path = self.root.join(dir);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            // Removed since its parent was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_empty() => {
                return Ok(Vec::new().into_iter());
            }
            Err(e) => return Err(StoreError::io("list directory", &path, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list directory", &path, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %entry.path().display(), "skipping a file name that is not UTF-8");
                continue;
            };
            if dir.is_empty() && name == TMP_DIR {
                continue;
            }
            let file_type = entry
                .file_type()
                .map_err(|e| StoreError::io("stat", entry.path(), e))?;
            let entry = if file_type.is_dir() {
                WalkEntry {
                    key: format!("{dir}{name}/"),
                    is_dir: true,
                }
            } else if file_type.is_file() {
                WalkEntry {
                    key: format!("{dir}{name}"),
                    is_dir: false,
                }
            } else {
                // Symlinks and special files are not objects of this store.
                continue;
            };
            let wanted = entry.key.starts_with(&self.prefix)
                || (entry.is_dir && self.prefix.starts_with(&entry.key));
            if wanted {
                out.push(entry);
            }
        }
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(out.into_iter())
    }
}

/// A blob streamed into `.tmp/` ([`ObjectStore::begin_blob`]), hashed as
/// it is written, renamed into place by `finish` only if it hashes to its
/// key. Dropped unfinished, its temp file is removed.
struct StreamedFile {
    store: FsStore,
    dest: PathBuf,
    expected: Sha256Digest,
    /// Owns the temp file's name (removed on drop) and is what `commit`
    /// persists; `writer` writes through a second handle to it.
    tmp: tempfile::NamedTempFile,
    writer: tokio::io::BufWriter<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
    /// The download's length, when it announced one.
    announced: Option<u64>,
    /// A write failed (or was cancelled): `finish` refuses.
    broken: bool,
}

impl StreamedFile {
    fn create(store: FsStore, dest: PathBuf, expected: Sha256Digest) -> Result<Self, StoreError> {
        let tmp = store.temp_file()?;
        let handle = tmp
            .reopen()
            .map_err(|e| StoreError::io("open temp file", tmp.path(), e))?;
        Ok(Self {
            store,
            dest,
            expected,
            tmp,
            writer: tokio::io::BufWriter::with_capacity(
                COPY_BUF,
                tokio::fs::File::from_std(handle),
            ),
            hasher: Sha256::new(),
            size: 0,
            announced: None,
            broken: false,
        })
    }
}

#[async_trait::async_trait]
impl BlobUpload for StreamedFile {
    fn expect_length(&mut self, length: u64) {
        self.announced = Some(length);
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt as _;
        if self.broken {
            return Err(broken_stream(&self.dest));
        }
        self.broken = true;
        let key = self.dest.to_string_lossy();
        check_announced(&key, self.announced, self.size + chunk.len() as u64, false)?;
        self.hasher.update(&chunk);
        self.writer
            .write_all(&chunk)
            .await
            .map_err(|e| StoreError::io("write", self.tmp.path(), e))?;
        self.size += chunk.len() as u64;
        self.broken = false;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<Streamed, StoreError> {
        use tokio::io::AsyncWriteExt as _;
        if self.broken {
            return Err(broken_stream(&self.dest));
        }
        let sha256 = Sha256Digest::from_bytes(self.hasher.finalize_reset().into());
        let size = self.size;
        check_announced(&self.dest.to_string_lossy(), self.announced, size, true)?;
        if sha256 != self.expected {
            // The temp file goes with `self`.
            return Ok(Streamed::Refused { size, sha256 });
        }
        self.writer
            .flush()
            .await
            .map_err(|e| StoreError::io("write", self.tmp.path(), e))?;
        let StreamedFile {
            store, dest, tmp, ..
        } = *self;
        let outcome = blocking(move || {
            if store.already_present(&dest, size)? {
                return Ok(PutOutcome::AlreadyPresent);
            }
            store.create_dirs(parent_of(&dest))?;
            store.commit(tmp, &dest)?;
            Ok(PutOutcome::Stored)
        })
        .await?;
        Ok(Streamed::Archived { size, outcome })
    }
}

/// A streamed blob whose write failed: the bytes written are not the file.
fn broken_stream(dest: &Path) -> StoreError {
    StoreError::io(
        "stream blob",
        dest,
        std::io::Error::other("an earlier write failed; the upload is discarded"),
    )
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(io_other("run blocking task", Path::new(""), &e.to_string())),
    }
}

/// Reads `src` to the end, handing each chunk to `sink`; returns the byte
/// count and sha256 of what was read. `op` names the read in errors.
fn hash_reader(
    src: &mut File,
    path: &Path,
    op: &'static str,
    mut sink: impl FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(u64, [u8; 32]), StoreError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    let mut total: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(op, path, e)),
        };
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
        total += n as u64;
    }
    Ok((total, hasher.finalize().into()))
}

/// The staged file must be exactly what its `StagedFile` records.
fn check_digest(file: &StagedFile, (size, digest): (u64, [u8; 32])) -> Result<(), StoreError> {
    if size == file.size && digest == *file.sha256.as_bytes() {
        return Ok(());
    }
    Err(StoreError::SpoolMismatch {
        path: file.location(),
        detail: format!(
            "staged file has {size} bytes with sha256 {}, recorded {} bytes with sha256 {}",
            hex::encode(digest),
            file.size,
            file.sha256
        ),
    })
}

fn io_other(op: &'static str, path: &Path, msg: &str) -> StoreError {
    StoreError::io(op, path, io::Error::other(msg.to_owned()))
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Makes a directory's entries (a rename, a new child) durable.
fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    record_sync(dir);
    Ok(())
}

/// Makes the bytes of a file this store did not write itself durable.
fn fsync_file(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io("fsync", path, e))?;
    record_sync(path);
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Every path fsynced on this thread, for the durability tests.
    static SYNCED: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Notes a completed fsync (tests only; nothing in release builds).
fn record_sync(_path: &Path) {
    #[cfg(test)]
    SYNCED.with(|s| s.borrow_mut().push(_path.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use archiver_core::Sha256Digest;

    fn staged(dir: &Path, name: &str, bytes: &[u8]) -> StagedFile {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        StagedFile {
            body: StagedBody::Spool(path),
            size: bytes.len() as u64,
            sha256: Sha256Digest::from_bytes(Sha256::digest(bytes).into()),
        }
    }

    #[test]
    fn copy_path_verifies_and_leaves_the_staged_file() {
        let root = tempfile::tempdir().unwrap();
        let spool = tempfile::tempdir().unwrap();
        let store = FsStore::open(root.path()).unwrap();
        let file = staged(spool.path(), "a", b"hello");
        let dest = root.path().join("x/y/a.txt");
        store.create_dirs(parent_of(&dest)).unwrap();
        let path = file.location();
        store.copy_in(&dest, &file, &path).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert!(path.exists());

        let mut wrong = staged(spool.path(), "b", b"world");
        wrong.sha256 = file.sha256;
        let dest_b = root.path().join("x/y/b.txt");
        let err = store
            .copy_in(&dest_b, &wrong, &wrong.location())
            .unwrap_err();
        assert!(matches!(err, StoreError::SpoolMismatch { .. }), "{err}");
        assert!(!dest_b.exists());
        assert_eq!(
            fs::read_dir(&store.tmp).unwrap().count(),
            0,
            "temp file left"
        );
    }

    #[test]
    fn reserved_and_escaping_keys_are_rejected() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::open(root.path()).unwrap();
        for key in [".tmp/x", "../x", "/etc/passwd", "a/../../x"] {
            assert!(store.path_for(key).is_err(), "{key}");
        }
        assert_eq!(store.path_for("a/b").unwrap(), root.path().join("a/b"));
    }

    #[test]
    fn stale_temp_files_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::open(root.path()).unwrap();
        let old = store.tmp.join("put-old");
        let fresh = store.tmp.join("put-fresh");
        fs::write(&old, b"x").unwrap();
        fs::write(&fresh, b"x").unwrap();
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_TMP_AGE)
            .unwrap();
        FsStore::open(root.path()).unwrap();
        assert!(!old.exists());
        assert!(fresh.exists());
    }

    /// The paths fsynced on this thread by `f`.
    fn fsyncs_during(f: impl FnOnce()) -> Vec<PathBuf> {
        SYNCED.with(|s| s.borrow_mut().clear());
        f();
        SYNCED.with(|s| s.borrow_mut().split_off(0))
    }

    #[test]
    fn a_blob_already_present_is_fsynced_before_it_is_reported_present() {
        let root = tempfile::tempdir().unwrap();
        let spool = tempfile::tempdir().unwrap();
        let store = FsStore::open(root.path()).unwrap();
        let bytes = b"written by an attempt that crashed before its fsync";
        let dest = root.path().join("blobs/sha256/ab/abcd");
        // Put there behind this store's back, as a crashed process leaves it.
        fs::create_dir_all(parent_of(&dest)).unwrap();
        fs::write(&dest, bytes).unwrap();

        let file = staged(spool.path(), "s", bytes);
        let synced = fsyncs_during(|| {
            let outcome = store.put_blob_blocking(&dest, &file).unwrap();
            assert_eq!(outcome, PutOutcome::AlreadyPresent);
        });
        assert!(synced.contains(&dest), "blob not fsynced: {synced:?}");
        assert!(
            synced.contains(&parent_of(&dest).to_path_buf()),
            "its directory entry not fsynced: {synced:?}"
        );
    }

    #[test]
    fn directories_found_on_the_way_are_fsynced_in_their_parents() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::open(root.path()).unwrap();
        // Another writer created the directories and may not have fsynced
        // their parents yet.
        let dir = root.path().join("messages/acc/2026/01/02");
        fs::create_dir_all(&dir).unwrap();
        let synced = fsyncs_during(|| {
            store
                .put_small_blocking(&dir.join("m.json"), b"{}")
                .unwrap()
        });
        for parent in [
            root.path().to_path_buf(),
            root.path().join("messages"),
            root.path().join("messages/acc"),
            root.path().join("messages/acc/2026"),
            root.path().join("messages/acc/2026/01"),
            dir.clone(),
        ] {
            assert!(
                synced.contains(&parent),
                "{parent:?} not fsynced: {synced:?}"
            );
        }
    }

    #[tokio::test]
    async fn size_mismatch_of_the_staged_file_is_permanent() {
        use archiver_core::{Classify, ErrorClass};
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::open(root.path()).unwrap();
        let mut file = staged(root.path(), "s", b"abc");
        file.size = 4;
        let err = store.put_blob("k", &file, None).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
        assert!(!root.path().join("k").exists());
    }
}
