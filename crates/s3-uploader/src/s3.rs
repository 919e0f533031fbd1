//! The S3 backend (AWS S3 or any S3-compatible store).
//!
//! Integrity: the client is built with
//! `RequestChecksumCalculation::WhenRequired`, and every upload carries the
//! `ChecksumSHA256` we computed ourselves, in a header (PutObject also names
//! the algorithm, which AWS wants for object-lock puts). (Left to itself the
//! SDK would compute checksums over streamed bodies with the
//! `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER` framing, which Garage
//! rejects.) The store recomputes and refuses a mismatch, so nothing damaged
//! in transit is stored. We also hash every byte we read from the spool and
//! compare with `StagedFile::sha256` before the object is committed: a part
//! checksum only proves a part, and not every S3-compatible store checks
//! checksums at all.
//!
//! Shape of an upload: HeadObject (same size already there: done); up to
//! `part_size` bytes: the spool hashed and checked, then one PutObject;
//! larger: multipart, each part hashed from the spool and then sent with its
//! checksum, at most `max_parallel_parts` in flight, CompleteMultipartUpload
//! only after the whole-file hash matched, AbortMultipartUpload on any
//! failure (and, spawned, if the upload future is dropped half-way).
//!
//! Memory: bodies are streamed from the spool file by the SDK
//! (`ByteStream::read_from`, 64 KiB at a time), never buffered whole, so an
//! upload holds a few hundred KiB whatever `part_size` and the file size.
//! Reading each part twice (once to hash it, once to send it) costs page
//! cache hits, not disk reads. A streamed body is sent as `UNSIGNED-PAYLOAD`
//! under SigV4, which also saves the SDK a sha256 pass over every byte; the
//! `ChecksumSHA256` header still makes the store verify the content.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use archiver_core::{Secret, StagedFile};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode,
    ServerSideEncryption, StorageClass,
};
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::store::{clamp_page, validate_key, validate_prefix};
use crate::{
    MAX_SMALL_OBJECT_BYTES, ObjectDigest, ObjectInfo, ObjectPages, ObjectStore, PutOutcome,
    StoreError,
};

const MIB: u64 = 1024 * 1024;
/// S3's smallest part (except the last).
const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest part.
const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// S3's most parts per upload.
const MAX_PARTS: u64 = 10_000;
/// More parallel parts than this buys nothing and costs memory.
const MAX_PARALLEL_PARTS: usize = 64;

/// Connect timeout for every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt of a small request (Head*, Get of a manifest, Create/Abort).
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// CompleteMultipartUpload can take minutes on AWS for large objects.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for the next chunk of an object being read.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Slowest upload rate tolerated before an attempt is abandoned as stalled.
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 64 * 1024;

/// Settings of the S3 backend (`[storage.s3]`). A plain struct: the daemon's
/// config layer fills it, [`S3Config::validate`] checks it without I/O, and
/// [`S3Store::connect`] builds the client.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Region (default `us-east-1`; S3-compatible stores usually accept it).
    pub region: String,
    /// Endpoint URL of an S3-compatible store (`http://127.0.0.1:3900`);
    /// `None` for AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`{endpoint}/{bucket}/{key}`), which most
    /// S3-compatible stores need.
    pub force_path_style: bool,
    /// Static credentials; when both are `None` the standard AWS credential
    /// chain is used (environment, profile, web identity, ECS, IMDS).
    pub access_key_id: Option<Secret>,
    /// See `access_key_id`.
    pub secret_access_key: Option<Secret>,
    /// `"AES256"` or `"aws:kms"`.
    pub server_side_encryption: Option<String>,
    /// KMS key for `aws:kms` (bucket default key otherwise).
    pub kms_key_id: Option<String>,
    /// Storage class of blobs (`STANDARD_IA`, `GLACIER_IR`, ...). Manifests
    /// always stay in the bucket's default class, so that they can be read
    /// back without a restore.
    pub storage_class: Option<String>,
    /// `"GOVERNANCE"` or `"COMPLIANCE"`: every blob and manifest is written
    /// with this object-lock retention (the bucket must have object lock
    /// enabled).
    pub object_lock_mode: Option<String>,
    /// Retention in days, from the time of writing; required with `object_lock_mode`.
    pub object_lock_days: Option<u32>,
    /// Multipart threshold and part size (default 8 MiB, at least 5 MiB).
    /// Files up to this size are sent in one PutObject. Raised automatically
    /// for files that would need more than 10,000 parts.
    pub part_size: u64,
    /// Parts of one file in flight at once (default 4). Memory per upload
    /// is a 64 KiB read buffer per part in flight, whatever `part_size`.
    pub max_parallel_parts: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            server_side_encryption: None,
            kms_key_id: None,
            storage_class: None,
            object_lock_mode: None,
            object_lock_days: None,
            part_size: 8 * MIB,
            max_parallel_parts: 4,
        }
    }
}

impl S3Config {
    /// Every problem with these settings, worded with the config key names
    /// (empty when usable). No I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if !bucket_ok {
            problems.push(format!(
                "bucket: {:?} is not a bucket name (3-63 characters of a-z, 0-9, '-', '.', '_')",
                self.bucket
            ));
        }
        if self.region.trim().is_empty() {
            problems.push("region: must not be empty".into());
        }
        if let Some(ep) = &self.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            problems.push(format!(
                "endpoint: {ep:?} must start with http:// or https://"
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            problems.push(
                "access_key_id, secret_access_key: give both, or neither to use the AWS credential chain"
                    .into(),
            );
        }
        match self.server_side_encryption.as_deref() {
            None | Some("AES256") => {
                if self.kms_key_id.is_some() {
                    problems
                        .push("kms_key_id: requires server_side_encryption = \"aws:kms\"".into());
                }
            }
            Some("aws:kms") => {}
            Some(other) => problems.push(format!(
                "server_side_encryption: {other:?} is not \"AES256\" or \"aws:kms\""
            )),
        }
        if self
            .storage_class
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            problems.push("storage_class: must not be empty when set".into());
        }
        match (self.object_lock_mode.as_deref(), self.object_lock_days) {
            (None, None) => {}
            (Some("GOVERNANCE" | "COMPLIANCE"), Some(days)) if days > 0 => {}
            (Some("GOVERNANCE" | "COMPLIANCE"), Some(_)) => {
                problems.push("object_lock_days: must be at least 1".into())
            }
            (Some(m @ ("GOVERNANCE" | "COMPLIANCE")), None) => problems.push(format!(
                "object_lock_days: required with object_lock_mode = {m:?}"
            )),
            (Some(other), _) => problems.push(format!(
                "object_lock_mode: {other:?} is not \"GOVERNANCE\" or \"COMPLIANCE\""
            )),
            (None, Some(_)) => {
                problems.push("object_lock_mode: required with object_lock_days".into())
            }
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            problems.push(format!(
                "part_size: {} is outside 5 MiB ({MIN_PART_SIZE}) ..= 5 GiB ({MAX_PART_SIZE})",
                self.part_size
            ));
        }
        if !(1..=MAX_PARALLEL_PARTS).contains(&self.max_parallel_parts) {
            problems.push(format!(
                "max_parallel_parts: {} is outside 1..={MAX_PARALLEL_PARTS}",
                self.max_parallel_parts
            ));
        }
        problems
    }
}

/// An archive in an S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    cfg: Arc<S3Config>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.cfg.bucket)
            .field("region", &self.cfg.region)
            .field("endpoint", &self.cfg.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Validates `cfg` and builds the client. Does no request (credentials
    /// from the AWS chain are resolved on first use); call
    /// [`ObjectStore::ping`] to check the bucket.
    pub async fn connect(cfg: S3Config) -> Result<Self, StoreError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(StoreError::Config(problems.join("; ")));
        }
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(cfg.region.clone()));
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "media-archiver-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(SMALL_REQUEST_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            cfg: Arc::new(cfg),
        })
    }

    /// A URL that GETs `key` without credentials until `ttl` has passed
    /// (at most 7 days). The URL is a bearer credential: do not log it.
    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        validate_key(key)?;
        let presign = PresigningConfig::expires_in(ttl)
            .map_err(|e| StoreError::Config(format!("presign_ttl: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .presigned(presign)
            .await
            .map_err(|e| self.err("PresignGetObject", key, e))?;
        Ok(request.uri().to_owned())
    }

    /// One ListObjectsV2 page after `token`; the objects and the next token.
    async fn list_page(
        &self,
        prefix: &str,
        page_size: usize,
        token: Option<String>,
    ) -> Result<(Vec<ObjectInfo>, Option<String>), StoreError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.cfg.bucket)
            .prefix(prefix)
            .max_keys(i32::try_from(page_size).unwrap_or(1000))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| self.err("ListObjectsV2", prefix, e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_owned(),
                    size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                })
            })
            .collect();
        let next = match out.is_truncated() {
            Some(true) => out.next_continuation_token().map(str::to_owned),
            _ => None,
        };
        Ok((objects, next))
    }

    fn err<E>(&self, op: &'static str, key: &str, e: aws_sdk_s3::error::SdkError<E>) -> StoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        StoreError::from_sdk(op, &self.cfg.bucket, key, e)
    }

    /// The part size for a file of `size` bytes: the configured one, raised
    /// (to whole MiB) when 10,000 parts would not hold the file.
    fn part_size_for(&self, size: u64) -> u64 {
        let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        self.cfg.part_size.max(needed)
    }

    /// GetObject; `None` when there is no such key.
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, StoreError> {
        let result = self
            .client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.err("GetObject", key, e)),
        }
    }

    /// HeadObject: `Some(size)` if an object exists, `None` if not. A 403
    /// also gives `None`: write-only credentials (PutObject without
    /// GetObject) are a sound policy for an archive, and re-uploading an
    /// identical content-addressed object is harmless.
    async fn existing_size(&self, key: &str) -> Result<Option<i64>, StoreError> {
        let result = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(-1))),
            Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                Some(404) => Ok(None),
                Some(403) => {
                    tracing::debug!(
                        key,
                        "HeadObject denied; uploading without the existence check"
                    );
                    Ok(None)
                }
                _ => Err(self.err("HeadObject", key, e)),
            },
        }
    }

    /// The upload-time timeout for a body of `len` bytes.
    fn upload_timeout(len: u64) -> aws_sdk_s3::config::Builder {
        let attempt = SMALL_REQUEST_TIMEOUT + Duration::from_secs(len / MIN_UPLOAD_BYTES_PER_SEC);
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(attempt)
                .build(),
        )
    }

    fn retain_until(&self) -> Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)> {
        let mode = self.cfg.object_lock_mode.as_deref()?;
        let days = i64::from(self.cfg.object_lock_days?);
        let until = chrono::Utc::now().timestamp() + days * 86_400;
        Some((
            ObjectLockMode::from(mode),
            aws_sdk_s3::primitives::DateTime::from_secs(until),
        ))
    }

    /// One PutObject of `body`, declaring `sha256` as its checksum. The
    /// caller has checked that `body` hashes to `sha256`; the store checks
    /// again.
    pub(crate) async fn put_single(
        &self,
        key: &str,
        body: Body<'_>,
        sha256: &[u8; 32],
        content_type: Option<&str>,
        is_blob: bool,
    ) -> Result<(), StoreError> {
        let len = body.len();
        let body = body.into_stream().await?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .content_length(len as i64)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(b64(sha256))
            .metadata("sha256", hex::encode(sha256))
            .set_content_type(content_type.map(str::to_owned))
            .set_server_side_encryption(
                self.cfg
                    .server_side_encryption
                    .as_deref()
                    .map(ServerSideEncryption::from),
            )
            .set_ssekms_key_id(self.cfg.kms_key_id.clone())
            .body(body);
        if is_blob {
            req = req.set_storage_class(self.cfg.storage_class.as_deref().map(StorageClass::from));
        }
        if let Some((mode, until)) = self.retain_until() {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        req.customize()
            .config_override(Self::upload_timeout(len))
            .send()
            .await
            .map_err(|e| self.err("PutObject", key, e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &str,
        file: &StagedFile,
        content_type: Option<&str>,
        part_size: u64,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .metadata("sha256", file.sha256.to_hex())
            .set_content_type(content_type.map(str::to_owned))
            .set_server_side_encryption(
                self.cfg
                    .server_side_encryption
                    .as_deref()
                    .map(ServerSideEncryption::from),
            )
            .set_ssekms_key_id(self.cfg.kms_key_id.clone())
            .set_storage_class(self.cfg.storage_class.as_deref().map(StorageClass::from));
        if let Some((mode, until)) = self.retain_until() {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        let created = req
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Rejected {
                op: "CreateMultipartUpload",
                key: key.to_owned(),
                status: 200,
                code: String::new(),
                message: "no UploadId in the response".into(),
            })?
            .to_owned();
        let mut guard = AbortGuard {
            store: Some(self.clone()),
            key: key.to_owned(),
            upload_id: upload_id.clone(),
        };
        match self
            .upload_parts_and_complete(key, &upload_id, file, part_size)
            .await
        {
            Ok(()) => {
                guard.store = None;
                Ok(())
            }
            Err(e) => {
                if let Some(store) = guard.store.take() {
                    store.abort(key, &upload_id).await;
                }
                Err(e)
            }
        }
    }

    async fn upload_parts_and_complete(
        &self,
        key: &str,
        upload_id: &str,
        file: &StagedFile,
        part_size: u64,
    ) -> Result<(), StoreError> {
        let path = Arc::new(file.path.clone());
        let mut reader = SpoolReader::open(&path).await?;
        let mut in_flight: JoinSet<Result<CompletedPart, StoreError>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut part_number = 0i32;
        while offset < file.size {
            // At most `max_parallel_parts` parts are in flight: wait for a free
            // slot before reading the next part.
            while in_flight.len() >= self.cfg.max_parallel_parts {
                parts.push(join_part(&mut in_flight).await?);
            }
            let len = part_size.min(file.size - offset);
            let (r, digest) = reader.hash_part(len, &path).await?;
            reader = r;
            part_number += 1;
            let part = (path.clone(), offset, len);
            offset += len;
            let (store, key, upload_id) = (self.clone(), key.to_owned(), upload_id.to_owned());
            in_flight.spawn(async move {
                let (path, offset, len) = part;
                let body = Body::File {
                    path: &path,
                    offset,
                    len,
                };
                store
                    .upload_part(&key, &upload_id, part_number, body, &digest)
                    .await
            });
        }
        while !in_flight.is_empty() {
            parts.push(join_part(&mut in_flight).await?);
        }
        reader.finish(file).await?;

        parts.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(CONNECT_TIMEOUT)
                        .operation_attempt_timeout(COMPLETE_TIMEOUT)
                        .build(),
                ),
            )
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
        Ok(())
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Body<'_>,
        sha256: &[u8; 32],
    ) -> Result<CompletedPart, StoreError> {
        let len = body.len();
        let body = body.into_stream().await?;
        let checksum = b64(sha256);
        let out = self
            .client
            .upload_part()
            .bucket(&self.cfg.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(len as i64)
            .checksum_sha256(&checksum)
            .body(body)
            .customize()
            .config_override(Self::upload_timeout(len))
            .send()
            .await
            .map_err(|e| self.err("UploadPart", key, e))?;
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .checksum_sha256(checksum)
            .build())
    }

    /// Best effort: a failure is logged (a bucket lifecycle rule
    /// `AbortIncompleteMultipartUpload` catches what is left).
    async fn abort(&self, key: &str, upload_id: &str) {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = result {
            let e = self.err("AbortMultipartUpload", key, e);
            tracing::warn!(key, error = %e, "could not abort a failed multipart upload");
        }
    }

    /// Hashes the whole spool file and checks it against what the fetch
    /// step recorded, before any of it is sent.
    async fn verify_spool(&self, file: &StagedFile) -> Result<(), StoreError> {
        let (reader, _) = SpoolReader::open(&file.path)
            .await?
            .hash_part(file.size, &file.path)
            .await?;
        reader.finish(file).await
    }
}

/// Aborts the multipart upload, in a spawned task, if dropped while armed
/// (the upload future was cancelled half-way).
struct AbortGuard {
    store: Option<S3Store>,
    key: String,
    upload_id: String,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(store) = self.store.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (key, upload_id) = (
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.upload_id),
            );
            rt.spawn(async move { store.abort(&key, &upload_id).await });
        }
    }
}

/// What an upload sends: a small buffer (manifests) or a byte range of the
/// spool file, streamed by the SDK.
pub(crate) enum Body<'a> {
    Memory(Bytes),
    File {
        path: &'a std::path::Path,
        offset: u64,
        len: u64,
    },
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Memory(bytes) => bytes.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    async fn into_stream(self) -> Result<ByteStream, StoreError> {
        match self {
            Body::Memory(bytes) => Ok(ByteStream::from(bytes)),
            Body::File { path, offset, len } => ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| StoreError::io("open staged file", path, std::io::Error::other(e))),
        }
    }
}

/// Bytes hashed per read of the spool file.
const HASH_CHUNK: usize = 256 * 1024;

/// Reads the spool file part by part on the blocking pool, hashing each part
/// and the whole file as it goes, through one small buffer.
struct SpoolReader {
    file: File,
    whole: Sha256,
    buf: Vec<u8>,
}

impl SpoolReader {
    async fn open(path: &std::path::Path) -> Result<Self, StoreError> {
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

    /// The sha256 of the next `len` bytes (also fed to the whole-file hash).
    async fn hash_part(
        self,
        len: u64,
        path: &std::path::Path,
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
    async fn finish(self, file: &StagedFile) -> Result<(), StoreError> {
        let Self {
            file: mut f, whole, ..
        } = self;
        let extra = blocking_io(move || f.read(&mut [0u8; 1]))
            .await
            .map_err(|e| StoreError::io("read staged file", &file.path, e))?;
        if extra != 0 {
            return Err(StoreError::SpoolMismatch {
                path: file.path.clone(),
                detail: format!("staged file is longer than its recorded size {}", file.size),
            });
        }
        let digest: [u8; 32] = whole.finalize().into();
        if digest != *file.sha256.as_bytes() {
            return Err(StoreError::SpoolMismatch {
                path: file.path.clone(),
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

async fn join_part(
    set: &mut JoinSet<Result<CompletedPart, StoreError>>,
) -> Result<CompletedPart, StoreError> {
    match set.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Some(Err(e)) => Err(StoreError::io(
            "upload part",
            "",
            std::io::Error::other(e.to_string()),
        )),
        None => Err(StoreError::io(
            "upload part",
            "",
            std::io::Error::other("no part in flight"),
        )),
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

fn b64(digest: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put_blob(
        &self,
        key: &str,
        file: &StagedFile,
        content_type: Option<&str>,
    ) -> Result<PutOutcome, StoreError> {
        validate_key(key)?;
        match self.existing_size(key).await? {
            Some(size) if size == file.size as i64 => return Ok(PutOutcome::AlreadyPresent),
            Some(size) => {
                tracing::warn!(
                    key,
                    existing = size,
                    size = file.size,
                    "replacing an object of the wrong size"
                )
            }
            None => {}
        }
        let part_size = self.part_size_for(file.size);
        if file.size <= part_size {
            self.verify_spool(file).await?;
            let body = Body::File {
                path: &file.path,
                offset: 0,
                len: file.size,
            };
            self.put_single(key, body, file.sha256.as_bytes(), content_type, true)
                .await?;
        } else {
            self.put_multipart(key, file, content_type, part_size)
                .await?;
        }
        Ok(PutOutcome::Stored)
    }

    async fn put_manifest(&self, key: &str, json: &[u8]) -> Result<(), StoreError> {
        validate_key(key)?;
        let digest: [u8; 32] = Sha256::digest(json).into();
        self.put_single(
            key,
            Body::Memory(Bytes::copy_from_slice(json)),
            &digest,
            Some("application/json"),
            false,
        )
        .await
    }

    async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        validate_key(key)?;
        let Some(out) = self.get_object(key).await? else {
            return Ok(None);
        };
        let too_large = || StoreError::TooLarge {
            key: key.to_owned(),
            limit: MAX_SMALL_OBJECT_BYTES,
        };
        if out.content_length().unwrap_or(0) as u64 > MAX_SMALL_OBJECT_BYTES {
            return Err(too_large());
        }
        let mut body = out.body;
        let mut bytes = Vec::new();
        let deadline = tokio::time::Instant::now() + SMALL_REQUEST_TIMEOUT;
        loop {
            let chunk = match tokio::time::timeout_at(deadline, body.try_next()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => return Ok(Some(bytes)),
                Ok(Err(e)) => {
                    return Err(StoreError::Unreachable {
                        op: "GetObject",
                        key: key.to_owned(),
                        detail: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                    });
                }
                Err(_) => {
                    return Err(StoreError::Unreachable {
                        op: "GetObject",
                        key: key.to_owned(),
                        detail: "reading the body timed out".into(),
                    });
                }
            };
            if (bytes.len() + chunk.len()) as u64 > MAX_SMALL_OBJECT_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let result = self
            .client
            .head_bucket()
            .bucket(&self.cfg.bucket)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                Err(StoreError::NoSuchBucket {
                    op: "HeadBucket",
                    bucket: self.cfg.bucket.clone(),
                })
            }
            Err(e) => Err(self.err("HeadBucket", "", e)),
        }
    }

    fn list(&self, prefix: &str, page_size: usize) -> ObjectPages {
        use futures_util::StreamExt as _;
        if let Err(e) = validate_prefix(prefix) {
            return futures_util::stream::once(async move { Err(e) }).boxed();
        }
        let page_size = clamp_page(page_size);
        let (store, prefix) = (self.clone(), prefix.to_owned());
        // State: `Some(token)` while there are pages to ask for (`None`
        // token: the first page).
        futures_util::stream::try_unfold(Some(None), move |state| {
            let (store, prefix) = (store.clone(), prefix.clone());
            async move {
                let Some(mut token) = state else {
                    return Ok(None);
                };
                loop {
                    let (page, next) = store.list_page(&prefix, page_size, token).await?;
                    if !page.is_empty() {
                        return Ok(Some((page, next.map(Some))));
                    }
                    // An empty page that is not the last (S3 allows them).
                    match next {
                        Some(next) => token = Some(next),
                        None => return Ok(None),
                    }
                }
            }
        })
        .boxed()
    }

    async fn read_hashed(&self, key: &str) -> Result<Option<ObjectDigest>, StoreError> {
        validate_key(key)?;
        let Some(out) = self.get_object(key).await? else {
            return Ok(None);
        };
        let mut body = out.body;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        loop {
            let chunk = match tokio::time::timeout(READ_IDLE_TIMEOUT, body.try_next()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return Err(StoreError::Unreachable {
                        op: "GetObject",
                        key: key.to_owned(),
                        detail: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                    });
                }
                Err(_) => {
                    return Err(StoreError::Unreachable {
                        op: "GetObject",
                        key: key.to_owned(),
                        detail: format!(
                            "no data for {}s while reading the body",
                            READ_IDLE_TIMEOUT.as_secs()
                        ),
                    });
                }
            };
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Some(ObjectDigest {
            size,
            sha256: archiver_core::Sha256Digest::from_bytes(hasher.finalize().into()),
        }))
    }

    async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        validate_key(key)?;
        let result = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(
                u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
            )),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
            Err(e) => Err(self.err("HeadObject", key, e)),
        }
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        S3Store::presign_get(self, key, ttl).await.map(Some)
    }

    fn backend_name(&self) -> &'static str {
        "s3"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archiver_core::{Classify, ErrorClass};
    use test_support::garage::Garage;

    fn config(g: &Garage) -> S3Config {
        S3Config {
            bucket: g.bucket.clone(),
            region: g.region.clone(),
            endpoint: Some(g.endpoint.clone()),
            force_path_style: true,
            access_key_id: Some(Secret::new(g.access_key_id.clone())),
            secret_access_key: Some(Secret::new(g.secret_access_key.clone())),
            ..S3Config::default()
        }
    }

    #[test]
    fn defaults_are_valid_once_a_bucket_is_named() {
        let cfg = S3Config {
            bucket: "media".into(),
            ..S3Config::default()
        };
        assert_eq!(cfg.validate(), Vec::<String>::new());
        assert_eq!(cfg.part_size, 8 * MIB);
        assert_eq!(cfg.max_parallel_parts, 4);
        assert_eq!(cfg.region, "us-east-1");
    }

    #[test]
    fn validation_lists_every_problem() {
        let cfg = S3Config {
            bucket: "Bad/Bucket".into(),
            region: " ".into(),
            endpoint: Some("localhost:3900".into()),
            secret_access_key: Some(Secret::new("s3cr3t-value")),
            server_side_encryption: Some("aes".into()),
            kms_key_id: Some("k".into()),
            storage_class: Some("".into()),
            object_lock_mode: Some("GOVERNANCE".into()),
            object_lock_days: None,
            part_size: 4 * MIB,
            max_parallel_parts: 0,
            ..S3Config::default()
        };
        let problems = cfg.validate();
        for key in [
            "bucket:",
            "region:",
            "endpoint:",
            "access_key_id, secret_access_key:",
            "server_side_encryption:",
            "storage_class:",
            "object_lock_days:",
            "part_size:",
            "max_parallel_parts:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} not in {problems:#?}"
            );
        }
        assert!(!problems.join(" ").contains("s3cr3t"));
        let kms = S3Config {
            bucket: "media".into(),
            kms_key_id: Some("k".into()),
            ..S3Config::default()
        };
        assert_eq!(kms.validate().len(), 1, "kms_key_id without aws:kms");
        let lock = S3Config {
            bucket: "media".into(),
            object_lock_days: Some(30),
            ..S3Config::default()
        };
        assert_eq!(lock.validate().len(), 1, "days without mode");
    }

    #[tokio::test]
    async fn part_size_grows_for_files_beyond_ten_thousand_parts() {
        let store = S3Store::connect(S3Config {
            bucket: "media".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            access_key_id: Some(Secret::new("a")),
            secret_access_key: Some(Secret::new("b")),
            ..S3Config::default()
        })
        .await
        .unwrap();
        assert_eq!(store.part_size_for(1), 8 * MIB);
        assert_eq!(store.part_size_for(80_000 * MIB), 8 * MIB);
        let huge = 200 * 1024 * MIB;
        let part = store.part_size_for(huge);
        assert!(huge.div_ceil(part) <= MAX_PARTS && part.is_multiple_of(MIB));
        assert!(!format!("{store:?}").contains("Secret"));
    }

    /// Our own hash check runs before any request; these go around it to
    /// show that Garage refuses a wrong checksum and how that is classified.
    #[tokio::test]
    async fn wrong_checksum_is_refused_by_the_store_and_permanent() {
        let Some(g) = Garage::start() else { return };
        let store = S3Store::connect(config(&g)).await.unwrap();
        let wrong: [u8; 32] = Sha256::digest(b"not the body").into();

        let err = store
            .put_single(
                "k1",
                Body::Memory(Bytes::from_static(b"body")),
                &wrong,
                None,
                true,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ChecksumRejected { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert_eq!(store.existing_size("k1").await.unwrap(), None);

        let created = store
            .client
            .create_multipart_upload()
            .bucket(&g.bucket)
            .key("k2")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .unwrap();
        let upload_id = created.upload_id().unwrap();
        let err = store
            .upload_part(
                "k2",
                upload_id,
                1,
                Body::Memory(Bytes::from(vec![7u8; 1024])),
                &wrong,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ChecksumRejected { .. }), "{err}");
        store.abort("k2", upload_id).await;
        assert_eq!(store.existing_size("k2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn dropping_an_upload_half_way_aborts_it() {
        let Some(g) = Garage::start() else { return };
        let store = S3Store::connect(config(&g)).await.unwrap();
        let created = store
            .client
            .create_multipart_upload()
            .bucket(&g.bucket)
            .key("k")
            .send()
            .await
            .unwrap();
        drop(AbortGuard {
            store: Some(store.clone()),
            key: "k".into(),
            upload_id: created.upload_id().unwrap().into(),
        });
        for _ in 0..100 {
            let list = store
                .client
                .list_multipart_uploads()
                .bucket(&g.bucket)
                .send()
                .await
                .unwrap();
            if list.uploads().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the dropped upload was not aborted");
    }
}
