//! One attempt at one job: resolve, fetch, verify, store.

use std::sync::atomic::AtomicU64;

use crate::telemetry::{self, Stage};
use archiver_core::{Classify, Clock, ErrorClass, Sha256Digest, UnixMillis};
use media_fetch::{Answer, FetchError, Fetcher, ThroughError};
use providers::{JobRef, MediaSource, Provider, ProviderError, Resolution, ResolvedMedia};
use retry_queue::{BlobRef, Erasures, JobRecord, Lease, QueueError};
use s3_uploader::{
    Layout, Manifest, ObjectStore, PutOutcome, StoreError, Streamed, Verification,
    put_message_manifest,
};
use whatsapp_media::{DecryptError, EncryptedMedia};

/// How many attempts a hash mismatch is retried before the job is dead: a
/// mismatch can be a corrupted transfer once, but not every time.
const HASH_MISMATCH_PATIENCE: u32 = 3;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job's account is no longer configured.
    #[error("account {0:?} is not configured")]
    UnknownAccount(String),
    /// The provider adapter failed (API error, media unavailable, ...).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The download failed.
    #[error("download failed: {0}")]
    Fetch(FetchError),
    /// The file is larger than the account's `rules.max_file_bytes` or
    /// `fetch.max_file_bytes` (dead reason `too-large`, PRODUCT.md section
    /// 10): announced so by the provider (`announced`, nothing downloaded),
    /// or met while downloading (the download stopped at the cap).
    #[error("too-large: {}", too_large_text(*limit, *announced))]
    TooLarge {
        /// The cap that applied, in bytes.
        limit: u64,
        /// The size the provider announced, when that decided.
        announced: Option<u64>,
    },
    /// The bytes are not the ones the provider vouched for.
    #[error("sha256 mismatch: provider says {expected}, bytes are {actual}")]
    HashMismatch {
        /// What the provider vouched for.
        expected: Sha256Digest,
        /// What the downloaded bytes hash to.
        actual: Sha256Digest,
        /// Which attempt found it.
        attempt: u32,
    },
    /// A WhatsApp-encrypted download failed one of the checks (or could not
    /// be read); the message names the check.
    #[error("WhatsApp media check failed: {error}")]
    Decrypt {
        /// Which check, and what it found.
        error: DecryptError,
        /// Which attempt found it.
        attempt: u32,
    },
    /// Writing to the archive failed.
    #[error("archive write failed: {0}")]
    Store(#[from] StoreError),
    /// The manifest could not be serialized (a bug, not a condition).
    #[error("manifest: {0}")]
    Manifest(String),
    /// The blob's use could not be recorded in the queue's blob index
    /// (an erasure is deleting that blob right now, or the queue is
    /// unavailable); nothing was written.
    #[error("blob index: {0}")]
    BlobIndex(QueueError),
}

fn too_large_text(limit: u64, announced: Option<u64>) -> String {
    match announced {
        Some(size) => format!(
            "the provider announced {size} bytes, over the {limit}-byte limit; not downloaded"
        ),
        None => {
            format!("the file is larger than the {limit}-byte limit; the download stopped there")
        }
    }
}

impl From<FetchError> for JobError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::TooLarge { limit } => JobError::TooLarge {
                limit,
                announced: None,
            },
            other => JobError::Fetch(other),
        }
    }
}

impl JobError {
    /// A short, bounded label for metrics (`dead_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            JobError::TooLarge { .. } => "too-large",
            JobError::UnknownAccount(_) => "unknown_account",
            JobError::Provider(ProviderError::MediaUnavailable(_)) => "media_unavailable",
            JobError::Provider(_) => "provider_error",
            JobError::Fetch(_) => "download_failed",
            JobError::HashMismatch { .. } => "hash_mismatch",
            JobError::Decrypt { .. } => "whatsapp_check_failed",
            JobError::Store(_) => "store_failed",
            JobError::Manifest(_) => "manifest",
            JobError::BlobIndex(_) => "blob_index",
        }
    }
}

impl Classify for JobError {
    fn class(&self) -> ErrorClass {
        match self {
            JobError::UnknownAccount(_) | JobError::Manifest(_) | JobError::TooLarge { .. } => {
                ErrorClass::Permanent
            }
            JobError::Provider(e) => e.class(),
            JobError::Fetch(e) => e.class(),
            JobError::Store(e) => e.class(),
            JobError::BlobIndex(e) => e.class(),
            JobError::HashMismatch { attempt, .. } if *attempt < HASH_MISMATCH_PATIENCE => {
                ErrorClass::Transient
            }
            JobError::HashMismatch { .. } => ErrorClass::Permanent,
            // Same patience as a plain hash mismatch: a corrupted transfer
            // once, maybe; the same failed check every time, no.
            JobError::Decrypt { error, attempt }
                if error.is_mismatch() && *attempt >= HASH_MISMATCH_PATIENCE =>
            {
                ErrorClass::Permanent
            }
            JobError::Decrypt { error, .. } => error.class(),
        }
    }
}

/// What an archived job produced.
#[derive(Debug, Clone)]
pub struct Processed {
    /// Where the bytes are.
    pub blob_key: String,
    /// Where the manifest is.
    pub manifest_key: String,
    /// How many bytes.
    pub size: u64,
    /// Whether the blob was new or already archived (same content elsewhere).
    pub outcome: PutOutcome,
    /// How the bytes were verified.
    pub verification: Verification,
    /// When the manifest says it was archived (from the injected clock).
    pub archived_at: UnixMillis,
    /// Whether the bytes went straight from the download into the store
    /// (stream-through) rather than through the spool or memory first.
    pub streamed: bool,
}

/// How an attempt that did not fail ended.
#[derive(Debug, Clone)]
pub(crate) enum Attempted {
    /// Verified and archived.
    Archived(Processed),
    /// The provider is preparing the file; wait for its event.
    Parked {
        /// How long to wait at most.
        timeout: std::time::Duration,
        /// Why.
        reason: String,
    },
}

/// Everything an attempt needs, borrowed from the worker.
pub(crate) struct Attempt<'a> {
    pub(crate) fetcher: &'a Fetcher,
    pub(crate) store: &'a dyn ObjectStore,
    pub(crate) layout: &'a Layout,
    pub(crate) clock: &'a dyn Clock,
    /// Where the attempt records each blob's use before writing it
    /// (`None`: a queue that keeps no blob index).
    pub(crate) blob_index: Option<BlobIndex<'a>>,
}

/// The queue's blob reference index, as one lease writes to it: erasure
/// deletes a blob only when no message names it, so a message's use of a
/// blob is recorded before the blob is written (`retry_queue::Erasures`).
pub(crate) struct BlobIndex<'a> {
    pub(crate) erasures: &'a dyn Erasures,
    pub(crate) lease: &'a Lease,
    /// The archive's store (`s3_uploader::Archive::store_id`).
    pub(crate) store_id: &'a str,
}

impl Attempt<'_> {
    /// Runs one attempt. `progress` counts downloaded bytes.
    pub(crate) async fn run(
        &self,
        provider: &dyn Provider,
        job: &JobRecord,
        progress: &AtomicU64,
    ) -> Result<Attempted, JobError> {
        let started = tokio::time::Instant::now();
        let reference = |link_dead| JobRef {
            message_id: &job.message_id,
            media_id: job.media_id.as_deref(),
            payload: &job.payload,
            attempt: job.attempts,
            last_error: job.last_error.as_deref(),
            link_dead,
        };
        // The account's cap (`rules.max_file_bytes`); the fetcher holds
        // every download to `fetch.max_file_bytes` too.
        let cap = provider.max_file_bytes();
        let mut resolved = match resolve(provider, reference(false), cap).await? {
            Ok(resolved) => resolved,
            Err(parked) => return Ok(parked),
        };
        // Streamed through to the store, or staged. A dead link, met either
        // way, is replaced once per attempt by a fresh resolution. From
        // here on every spool file is owned by a `SpoolFile`, which removes
        // it however this attempt ends: success, error, or this future
        // being dropped (shutdown grace over, lease lost).
        let mut fresh_link_asked = false;
        let staged = loop {
            let dead = match self
                .stream_through(job, &resolved, progress, started)
                .await?
            {
                Streaming::Archived(processed) => return Ok(Attempted::Archived(processed)),
                Streaming::LinkDead(e) => e,
                Streaming::Declined => match self.obtain(&resolved.source, progress).await {
                    Err(e) if e.is_link_dead() => e,
                    other => break other?,
                },
            };
            if fresh_link_asked {
                return Err(dead.into());
            }
            tracing::info!(job_id = %job.id, error = %dead, "download link is dead; asking the provider for a fresh one");
            fresh_link_asked = true;
            resolved = match resolve(provider, reference(true), cap).await? {
                Ok(resolved) => resolved,
                Err(parked) => return Ok(parked),
            };
        };
        let staged = SpoolFile(staged);
        let staged = match &resolved.encryption {
            Some(media) => {
                let plain = decrypt(media, &staged.0, job.attempts).await;
                drop(staged); // the encrypted file is not needed any more
                SpoolFile(plain?)
            }
            None => staged,
        };
        // Inline bytes, and a decrypted file whose encrypted form was let
        // through with the cipher's overhead, are held to the cap here.
        if let Some(limit) = cap.filter(|cap| staged.0.size > *cap) {
            return Err(JobError::TooLarge {
                limit,
                announced: None,
            });
        }
        telemetry::stage(Stage::Download, started.elapsed());
        let uploading = tokio::time::Instant::now();
        let processed = self.verify_and_store(job, &resolved, &staged.0).await?;
        telemetry::stage(Stage::Upload, uploading.elapsed());
        Ok(Attempted::Archived(processed))
    }

    /// Streams the download straight into the store, when the provider
    /// vouched for the file's sha256 so that its key is known before the
    /// first byte (see `s3_uploader::BlobUpload`): no spool file, and the
    /// store makes the blob visible only if the bytes hash to that key.
    /// [`Streaming::Declined`] when the file must be staged instead: no
    /// hash vouched for, WhatsApp-encrypted bytes (decrypted from the
    /// spool), a base64-in-JSON answer or inline bytes, or the store said
    /// not now (no free stream buffer, object lock).
    async fn stream_through(
        &self,
        job: &JobRecord,
        resolved: &ResolvedMedia,
        progress: &AtomicU64,
        started: tokio::time::Instant,
    ) -> Result<Streaming, JobError> {
        let (Some(expected), None, MediaSource::Download { request, hosts }) = (
            resolved.expected_sha256,
            &resolved.encryption,
            &resolved.source,
        ) else {
            return Ok(Streaming::Declined);
        };
        if request.answer != Answer::File {
            return Ok(Streaming::Declined);
        }
        let mime = resolved.details.mime_type.as_deref();
        let blob_key = self.layout.blob_key(&expected, mime);
        let max_size = self.fetcher.max_bytes_for(request);
        let Some(mut upload) = self
            .store
            .begin_blob(&blob_key, expected, max_size, mime)
            .await?
        else {
            return Ok(Streaming::Declined);
        };
        // Before the first byte goes up; a refusal drops `upload`, which
        // writes nothing.
        self.record_use(job, resolved, &blob_key).await?;
        // Any early return drops `upload`, which discards what it holds.
        match self
            .fetcher
            .download_through(request, hosts, progress, &mut upload)
            .await
        {
            Ok(_) => {}
            Err(ThroughError::Fetch(e)) if e.is_link_dead() => return Ok(Streaming::LinkDead(e)),
            Err(ThroughError::Fetch(e)) => return Err(e.into()),
            Err(ThroughError::Sink(e)) => return Err(JobError::Store(e)),
        }
        // The parts went up while the bytes came in; what remains (the
        // last part, the commit, the manifest) counts as the upload.
        telemetry::stage(Stage::Download, started.elapsed());
        let uploading = tokio::time::Instant::now();
        let processed = match upload.finish().await? {
            Streamed::Refused { sha256, .. } => {
                return Err(JobError::HashMismatch {
                    expected,
                    actual: sha256,
                    attempt: job.attempts,
                });
            }
            Streamed::Archived { size, outcome } => {
                let blob = StoredBlob {
                    key: blob_key,
                    size,
                    sha256: expected,
                    outcome,
                    verification: Verification::ProviderSha256,
                    streamed: true,
                };
                self.write_manifest(job, resolved, blob).await?
            }
        };
        telemetry::stage(Stage::Upload, uploading.elapsed());
        Ok(Streaming::Archived(processed))
    }

    /// Puts the bytes into a spool file or memory, hashed.
    async fn obtain(
        &self,
        source: &MediaSource,
        progress: &AtomicU64,
    ) -> Result<archiver_core::StagedFile, FetchError> {
        match source {
            MediaSource::Download { request, hosts } => {
                self.fetcher.download(request, hosts, progress).await
            }
            MediaSource::Inline(bytes) => self.fetcher.stage_bytes(bytes).await,
        }
    }

    async fn verify_and_store(
        &self,
        job: &JobRecord,
        resolved: &ResolvedMedia,
        staged: &archiver_core::StagedFile,
    ) -> Result<Processed, JobError> {
        let verification = match resolved.expected_sha256 {
            Some(expected) if expected != staged.sha256 => {
                return Err(JobError::HashMismatch {
                    expected,
                    actual: staged.sha256,
                    attempt: job.attempts,
                });
            }
            // Decrypted and checked against fileEncSha256, the MAC and
            // fileSha256 (which is `expected` here) on the way.
            Some(_) if resolved.encryption.is_some() => Verification::WhatsappEncPlain,
            Some(_) => Verification::ProviderSha256,
            None => Verification::ComputedOnly,
        };
        let mime = resolved.details.mime_type.as_deref();
        let blob_key = self.layout.blob_key(&staged.sha256, mime);
        self.record_use(job, resolved, &blob_key).await?;
        let outcome = self.store.put_blob(&blob_key, staged, mime).await?;
        let blob = StoredBlob {
            key: blob_key,
            size: staged.size,
            sha256: staged.sha256,
            outcome,
            verification,
            streamed: false,
        };
        self.write_manifest(job, resolved, blob).await
    }

    /// Records in the queue's blob index that the job's message names
    /// `blob_key`, before the blob is written (see [`BlobIndex`]).
    async fn record_use(
        &self,
        job: &JobRecord,
        resolved: &ResolvedMedia,
        blob_key: &str,
    ) -> Result<(), JobError> {
        let Some(index) = &self.blob_index else {
            return Ok(());
        };
        let blob = BlobRef {
            store: index.store_id.to_owned(),
            blob_key: blob_key.to_owned(),
            account: job.account.clone(),
            message_id: job.message_id.clone(),
            chat_id: resolved.details.chat_id.clone(),
            message_at: job.message_at,
        };
        index
            .erasures
            .record_ref(index.lease, &blob)
            .await
            .map_err(JobError::BlobIndex)
    }

    /// Writes the manifest of a stored blob.
    async fn write_manifest(
        &self,
        job: &JobRecord,
        resolved: &ResolvedMedia,
        blob: StoredBlob,
    ) -> Result<Processed, JobError> {
        let details = &resolved.details;
        let archived_at = self.clock.now_ms();
        let manifest = Manifest {
            provider: job.provider.to_string(),
            account: job.account.clone(),
            chat_id: details.chat_id.clone(),
            message_id: job.message_id.clone(),
            media_id: job.media_id.clone(),
            sender: details.sender.clone(),
            direction: details.direction,
            message_timestamp: rfc3339(job.message_at),
            mime_type: details.mime_type.clone(),
            file_name: details.file_name.clone(),
            caption: details.caption.clone(),
            size: blob.size,
            sha256: blob.sha256,
            blob_key: blob.key.clone(),
            provider_sha256: resolved.expected_sha256,
            verification: blob.verification,
            archived_at: rfc3339(archived_at),
        };
        // Beside, never over, a manifest of this message for other bytes.
        let manifest_key =
            put_message_manifest(self.store, self.layout, &manifest, job.message_at).await?;
        Ok(Processed {
            blob_key: blob.key,
            manifest_key,
            size: blob.size,
            outcome: blob.outcome,
            verification: blob.verification,
            archived_at,
            streamed: blob.streamed,
        })
    }
}

/// How [`Attempt::stream_through`] ended, when it did not fail.
enum Streaming {
    /// Streamed, verified and archived.
    Archived(Processed),
    /// Not streamed: stage the file.
    Declined,
    /// The download link was dead before any byte (nothing was written).
    LinkDead(FetchError),
}

/// A blob in the archive, verified, on its way into a manifest.
struct StoredBlob {
    key: String,
    size: u64,
    sha256: Sha256Digest,
    outcome: PutOutcome,
    verification: Verification,
    /// Streamed through rather than staged.
    streamed: bool,
}

/// Asks the provider where the file is, held to the account's `cap`:
/// `Ok(Err(parked))` when the provider says to wait for its event.
async fn resolve(
    provider: &dyn Provider,
    reference: JobRef<'_>,
    cap: Option<u64>,
) -> Result<Result<ResolvedMedia, Attempted>, JobError> {
    match provider.resolve(reference).await? {
        Resolution::Fetch(resolved) => capped(resolved, cap).map(Ok),
        Resolution::Park { timeout, reason } => Ok(Err(Attempted::Parked { timeout, reason })),
    }
}

/// What WhatsApp's encryption adds to a file: PKCS#7 padding (up to one
/// AES block) and the 10-byte MAC.
const ENCRYPTION_OVERHEAD: u64 = 16 + 10;

/// `resolved`, refused as too large when the provider announced a size over
/// the account's `cap`, else with `cap` on its download (plus the encryption's overhead
/// for an encrypted blob: the cap is on the file).
fn capped(mut resolved: ResolvedMedia, cap: Option<u64>) -> Result<ResolvedMedia, JobError> {
    let Some(cap) = cap else {
        return Ok(resolved);
    };
    if let Some(size) = resolved.size.filter(|size| *size > cap) {
        return Err(JobError::TooLarge {
            limit: cap,
            announced: Some(size),
        });
    }
    if let MediaSource::Download { request, .. } = &mut resolved.source {
        let overhead = if resolved.encryption.is_some() {
            ENCRYPTION_OVERHEAD
        } else {
            0
        };
        request.max_file_bytes = Some(cap.saturating_add(overhead));
    }
    Ok(resolved)
}

/// Authenticates and decrypts a WhatsApp-encrypted spool file into a new
/// plaintext spool file beside it (on a blocking thread: it is file I/O and
/// AES). If this future is dropped, the plaintext file is removed when the
/// blocking work ends.
async fn decrypt(
    media: &EncryptedMedia,
    encrypted: &archiver_core::StagedFile,
    attempt: u32,
) -> Result<archiver_core::StagedFile, JobError> {
    let (media, encrypted) = (media.clone(), encrypted.clone());
    let fail = |error| JobError::Decrypt { error, attempt };
    let plain = tokio::task::spawn_blocking(move || {
        // A spool file's plaintext goes beside it; one in memory stays there.
        let dir = encrypted
            .spool_path()
            .and_then(std::path::Path::parent)
            .unwrap_or(std::path::Path::new("."));
        whatsapp_media::decrypt_file(&media, &encrypted, dir)
    })
    .await
    .map_err(|e| fail(DecryptError::Io(format!("decryption task failed: {e}"))))?
    .map_err(fail)?;
    plain.keep().map_err(fail)
}

/// Owns a staged file for the rest of an attempt and removes its spool
/// file (if it has one) when dropped: on success, on error, and when the
/// attempt's future is dropped mid-way. (The fs store may already have
/// moved it into the archive.)
#[derive(Debug)]
struct SpoolFile(archiver_core::StagedFile);

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let Some(path) = self.0.spool_path() else {
            return;
        };
        // A plain unlink: quick enough for async code, and Drop cannot await.
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove spool file");
        }
    }
}

/// RFC 3339 UTC with seconds, as every API and manifest time is written.
pub(crate) fn rfc3339(ms: archiver_core::UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use archiver_core::{AccountName, ProviderKind, StagedFile};
    use media_fetch::FetchConfig;
    use providers::{MediaDetails, ParsedWebhook, WebhookRequest};
    use s3_uploader::{ObjectDigest, ObjectPages};
    use tokio::sync::Notify;

    /// A provider that resolves every message to `media`.
    #[derive(Debug)]
    struct ResolvingProvider {
        account: AccountName,
        media: ResolvedMedia,
    }

    const BYTES: &[u8] = b"the media file";

    /// `BYTES`, inline, no hash vouched for.
    fn inline_media() -> ResolvedMedia {
        ResolvedMedia {
            source: MediaSource::Inline(bytes::Bytes::from_static(BYTES)),
            expected_sha256: None,
            details: MediaDetails::default(),
            encryption: None,
            size: None,
        }
    }

    #[async_trait::async_trait]
    impl Provider for ResolvingProvider {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Cloudapi
        }
        fn account(&self) -> &AccountName {
            &self.account
        }
        fn webhook_auth_configured(&self) -> bool {
            true
        }
        fn authenticate_head(
            &self,
            _: &http::HeaderMap,
            _: Option<&str>,
        ) -> Result<(), ProviderError> {
            unimplemented!("not a webhook test")
        }
        fn parse_webhook(&self, _: &WebhookRequest<'_>) -> Result<ParsedWebhook, ProviderError> {
            unimplemented!("not a webhook test")
        }
        async fn resolve(&self, _: JobRef<'_>) -> Result<Resolution, ProviderError> {
            Ok(Resolution::Fetch(self.media.clone()))
        }
    }

    /// What [`ScriptedStore::put_blob`] does with the spool file: nothing
    /// (and succeeds, as the S3 store does), fail, or never return.
    #[derive(Debug, Clone, Copy)]
    enum PutBlob {
        Succeed,
        Fail,
        Hang,
    }

    #[derive(Debug)]
    struct ScriptedStore {
        put_blob: PutBlob,
        /// Notified once `put_blob` holds the spool file.
        uploading: Arc<Notify>,
    }

    #[async_trait::async_trait]
    impl ObjectStore for ScriptedStore {
        async fn put_blob(
            &self,
            key: &str,
            file: &StagedFile,
            _: Option<&str>,
        ) -> Result<PutOutcome, StoreError> {
            assert!(
                file.spool_path().is_some_and(std::path::Path::exists),
                "the store is handed a spool file"
            );
            self.uploading.notify_one();
            match self.put_blob {
                PutBlob::Succeed => Ok(PutOutcome::Stored),
                PutBlob::Fail => Err(StoreError::Config(format!("cannot store {key}"))),
                PutBlob::Hang => std::future::pending().await,
            }
        }
        async fn put_manifest(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            Ok(())
        }
        async fn get_small(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn list(&self, _: &str, _: usize) -> ObjectPages {
            unimplemented!("not a listing test")
        }
        async fn read_hashed(&self, _: &str) -> Result<Option<ObjectDigest>, StoreError> {
            unimplemented!("not a scrub test")
        }
        async fn size_of(&self, _: &str) -> Result<Option<u64>, StoreError> {
            unimplemented!("not a scrub test")
        }
        async fn presign_get(&self, _: &str, _: Duration) -> Result<Option<String>, StoreError> {
            Ok(None)
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        fn backend_name(&self) -> &'static str {
            "scripted"
        }
    }

    struct Env {
        spool: tempfile::TempDir,
        fetcher: Fetcher,
        store: ScriptedStore,
        layout: Layout,
        provider: ResolvingProvider,
        job: JobRecord,
    }

    impl Env {
        fn new(put_blob: PutBlob) -> Self {
            let spool = tempfile::tempdir().unwrap();
            // Every file in the spool: these tests are about its cleanup.
            let fetcher = Fetcher::new(FetchConfig {
                spool_dir: spool.path().to_owned(),
                in_memory_max_bytes: 0,
                ..FetchConfig::default()
            })
            .unwrap();
            let account = AccountName::new("evo").unwrap();
            let job = JobRecord {
                id: "evo:m1".into(),
                account: account.as_str().to_owned(),
                provider: ProviderKind::Evolution,
                state: archiver_core::JobState::Leased,
                attempts: 1,
                deadline: i64::MAX,
                next_attempt_at: 0,
                last_error: None,
                created_at: 0,
                updated_at: 0,
                message_id: "m1".into(),
                media_id: None,
                message_at: 0,
                payload: serde_json::Value::Null,
            };
            Self {
                spool,
                fetcher,
                store: ScriptedStore {
                    put_blob,
                    uploading: Arc::new(Notify::new()),
                },
                layout: Layout::default(),
                provider: ResolvingProvider {
                    account,
                    media: inline_media(),
                },
                job,
            }
        }

        async fn attempt(&self) -> Result<Attempted, JobError> {
            let attempt = Attempt {
                blob_index: None,
                fetcher: &self.fetcher,
                store: &self.store,
                layout: &self.layout,
                clock: &archiver_core::SystemClock,
            };
            attempt
                .run(&self.provider, &self.job, &AtomicU64::new(0))
                .await
        }

        fn spool_files(&self) -> Vec<PathBuf> {
            test_support::files_under(self.spool.path())
        }
    }

    #[tokio::test]
    async fn the_spool_file_is_removed_after_a_successful_attempt() {
        let env = Env::new(PutBlob::Succeed);
        let done = env.attempt().await.unwrap();
        assert!(matches!(done, Attempted::Archived(_)), "{done:?}");
        assert!(env.spool_files().is_empty(), "{:?}", env.spool_files());
    }

    #[tokio::test]
    async fn the_spool_file_is_removed_after_a_failed_attempt() {
        let env = Env::new(PutBlob::Fail);
        let err = env.attempt().await.unwrap_err();
        assert!(matches!(err, JobError::Store(_)), "{err}");
        assert!(env.spool_files().is_empty(), "{:?}", env.spool_files());
    }

    #[tokio::test]
    async fn the_spool_file_is_removed_when_the_attempt_is_dropped_mid_upload() {
        let env = Env::new(PutBlob::Hang);
        let uploading = env.store.uploading.clone();
        {
            let attempt = env.attempt();
            tokio::pin!(attempt);
            tokio::select! {
                result = &mut attempt => panic!("the upload never ends: {result:?}"),
                _ = uploading.notified() => {}
            }
            assert_eq!(env.spool_files().len(), 1, "the file being uploaded");
            // Dropped here, as the worker drops a job at the end of the
            // shutdown grace or when its lease is lost.
        }
        assert!(env.spool_files().is_empty(), "{:?}", env.spool_files());
    }

    fn resolved(size: Option<u64>, encryption: Option<EncryptedMedia>) -> ResolvedMedia {
        let url = url::Url::parse("https://cdn.example/file").unwrap();
        ResolvedMedia {
            source: MediaSource::download(
                media_fetch::DownloadRequest::get(url),
                media_fetch::HostPolicy::new(["cdn.example"]),
            ),
            expected_sha256: None,
            details: MediaDetails::default(),
            encryption,
            size,
        }
    }

    fn download_cap(resolved: &ResolvedMedia) -> Option<u64> {
        match &resolved.source {
            MediaSource::Download { request, .. } => request.max_file_bytes,
            MediaSource::Inline(_) => unreachable!("a download"),
        }
    }

    #[test]
    fn a_file_announced_over_the_account_s_cap_is_too_large_before_any_download() {
        let err = capped(resolved(Some(1001), None), Some(1000)).unwrap_err();
        assert!(
            matches!(
                err,
                JobError::TooLarge {
                    limit: 1000,
                    announced: Some(1001)
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.label(), "too-large");
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert!(err.to_string().starts_with("too-large: "), "{err}");
        let at_cap = capped(resolved(Some(1000), None), Some(1000)).unwrap();
        assert_eq!(
            download_cap(&at_cap),
            Some(1000),
            "the cap travels with the download"
        );
        let unknown = capped(resolved(None, None), Some(1000)).unwrap();
        assert_eq!(download_cap(&unknown), Some(1000));
        let no_rule = capped(resolved(Some(u64::MAX), None), None).unwrap();
        assert_eq!(download_cap(&no_rule), None, "only fetch.max_file_bytes");
    }

    #[test]
    fn an_encrypted_download_may_pass_the_cap_by_the_cipher_s_overhead() {
        let media = EncryptedMedia {
            media_type: whatsapp_media::MediaType::Image,
            media_key: whatsapp_media::MediaKey::from_json(&serde_json::json!(
                "EtkHwPvSijrLUj6c18dK3vtU+ONrCzMSYbOJYY0FqTw="
            ))
            .unwrap(),
            file_enc_sha256: Sha256Digest::from_bytes([0; 32]),
            file_sha256: Sha256Digest::from_bytes([0; 32]),
            file_length: None,
        };
        let encrypted = capped(resolved(None, Some(media)), Some(1000)).unwrap();
        assert_eq!(download_cap(&encrypted), Some(1000 + ENCRYPTION_OVERHEAD));
    }

    #[test]
    fn a_download_stopped_at_a_cap_is_dead_too_large_and_other_fetch_errors_are_not() {
        let err = JobError::from(FetchError::TooLarge { limit: 1000 });
        assert!(
            matches!(
                err,
                JobError::TooLarge {
                    limit: 1000,
                    announced: None
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.label(), "too-large");
        assert_eq!(
            err.to_string(),
            "too-large: the file is larger than the 1000-byte limit; the download stopped there"
        );
        let other = JobError::from(FetchError::Timeout("slow".into()));
        assert_eq!(other.label(), "download_failed");
    }

    #[test]
    fn a_failed_whatsapp_check_is_retried_then_permanent_and_named() {
        let mismatch = |attempt| JobError::Decrypt {
            error: DecryptError::HmacMismatch,
            attempt,
        };
        assert_eq!(mismatch(1).class(), ErrorClass::Transient);
        assert_eq!(
            mismatch(HASH_MISMATCH_PATIENCE - 1).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            mismatch(HASH_MISMATCH_PATIENCE).class(),
            ErrorClass::Permanent
        );
        assert!(
            mismatch(1).to_string().contains("HMAC mismatch"),
            "{}",
            mismatch(1)
        );
        let io = JobError::Decrypt {
            error: DecryptError::Io("disk full".into()),
            attempt: 9,
        };
        assert_eq!(io.class(), ErrorClass::Transient, "I/O is never a verdict");
    }

    // --- Stream-through -----------------------------------------------------

    /// The fs store, through which every blob must stream: a staged one
    /// fails the test. `streams: false` makes it decline every stream.
    #[derive(Debug)]
    struct StreamingOnly {
        inner: s3_uploader::FsStore,
        root: PathBuf,
        streams: bool,
    }

    #[async_trait::async_trait]
    impl ObjectStore for StreamingOnly {
        async fn put_blob(
            &self,
            key: &str,
            file: &StagedFile,
            content_type: Option<&str>,
        ) -> Result<PutOutcome, StoreError> {
            assert!(!self.streams, "a vouched-for download was staged");
            self.inner.put_blob(key, file, content_type).await
        }
        async fn begin_blob(
            &self,
            key: &str,
            sha256: Sha256Digest,
            max_size: u64,
            content_type: Option<&str>,
        ) -> Result<Option<Box<dyn s3_uploader::BlobUpload>>, StoreError> {
            if !self.streams {
                return Ok(None);
            }
            self.inner
                .begin_blob(key, sha256, max_size, content_type)
                .await
        }
        async fn put_manifest(&self, key: &str, json: &[u8]) -> Result<(), StoreError> {
            self.inner.put_manifest(key, json).await
        }
        async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get_small(key).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn list(&self, prefix: &str, page_size: usize) -> ObjectPages {
            self.inner.list(prefix, page_size)
        }
        async fn read_hashed(&self, key: &str) -> Result<Option<ObjectDigest>, StoreError> {
            self.inner.read_hashed(key).await
        }
        async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
            self.inner.size_of(key).await
        }
        async fn presign_get(&self, _: &str, _: Duration) -> Result<Option<String>, StoreError> {
            Ok(None)
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
        fn backend_name(&self) -> &'static str {
            "fs"
        }
    }

    /// Serves `served` at `/file`, vouched for as `vouched`, and runs one
    /// attempt into an fs archive that streams (or not).
    async fn attempt_download(
        served: &'static [u8],
        vouched: &[u8],
        streams: bool,
    ) -> (Result<Attempted, JobError>, StreamingOnly) {
        let server = test_support::http::TestServer::start(move |_req| async move {
            test_support::http::response(200, "video/mp4", served)
        })
        .await;
        let env = Env::new(PutBlob::Succeed);
        let fetcher = Fetcher::new(FetchConfig {
            spool_dir: env.spool.path().to_owned(),
            allow_private_networks: true,
            ..FetchConfig::default()
        })
        .unwrap();
        let archive = tempfile::tempdir().unwrap().keep();
        let store = StreamingOnly {
            inner: s3_uploader::FsStore::open(&archive).unwrap(),
            root: archive,
            streams,
        };
        let url = url::Url::parse(&format!("{}/file", server.base_url())).unwrap();
        let provider = ResolvingProvider {
            account: AccountName::new("meta").unwrap(),
            media: ResolvedMedia {
                source: MediaSource::download(
                    media_fetch::DownloadRequest::get(url),
                    media_fetch::HostPolicy::new(["127.0.0.1"]),
                ),
                expected_sha256: Some(sha256_of(vouched)),
                details: MediaDetails {
                    mime_type: Some("video/mp4".into()),
                    ..MediaDetails::default()
                },
                encryption: None,
                size: None,
            },
        };
        let layout = Layout::default();
        let attempt = Attempt {
            blob_index: None,
            fetcher: &fetcher,
            store: &store,
            layout: &layout,
            clock: &archiver_core::SystemClock,
        };
        let result = attempt.run(&provider, &env.job, &AtomicU64::new(0)).await;
        (result, store)
    }

    const VIDEO: &[u8] = b"a video the provider vouched for";

    fn sha256_of(bytes: &[u8]) -> Sha256Digest {
        use sha2::Digest as _;
        Sha256Digest::from_bytes(sha2::Sha256::digest(bytes).into())
    }

    #[tokio::test]
    async fn a_download_whose_hash_was_vouched_for_streams_into_the_store() {
        let (result, store) = attempt_download(VIDEO, VIDEO, true).await;
        let Attempted::Archived(done) = result.unwrap() else {
            panic!("not archived")
        };
        assert_eq!(done.verification, Verification::ProviderSha256);
        assert_eq!(done.outcome, PutOutcome::Stored);
        assert_eq!(done.size, VIDEO.len() as u64);
        let digest = store.read_hashed(&done.blob_key).await.unwrap().unwrap();
        assert_eq!(digest.sha256, sha256_of(VIDEO));
        assert!(store.get_small(&done.manifest_key).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn streamed_bytes_other_than_vouched_for_are_a_mismatch_and_never_archived() {
        let (result, store) = attempt_download(b"something else", VIDEO, true).await;
        let err = result.unwrap_err();
        assert!(matches!(err, JobError::HashMismatch { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Transient, "first attempt");
        let key = Layout::default().blob_key(&sha256_of(VIDEO), Some("video/mp4"));
        assert_eq!(store.size_of(&key).await.unwrap(), None);
        let files = test_support::files_under(&store.root);
        assert!(files.is_empty(), "nothing in the archive: {files:?}");
    }

    #[tokio::test]
    async fn a_store_that_declines_the_stream_gets_the_file_staged() {
        let (result, _store) = attempt_download(VIDEO, VIDEO, false).await;
        assert!(matches!(result.unwrap(), Attempted::Archived(_)));
    }
}
