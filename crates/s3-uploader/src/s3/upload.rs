//! Writing objects: a blob from the spool file, a manifest from memory.
//!
//! Shape of a blob upload. A file staged in memory (small: at most
//! `fetch.in_memory_max_bytes`) is one request: a PutObject with
//! `If-None-Match: *`, no HeadObject first, and no second hash (it was
//! hashed as it arrived and has not left memory since). A store that
//! honours the condition answers 412 for a blob it holds (then one
//! HeadObject checks the size: a damaged copy of another size is
//! replaced); one that ignores it (Garage 2.5) rewrites the same bytes
//! under the same content-addressed key, which changes nothing. The
//! HeadObject that saved the upload of a repeat cost a round trip on every
//! new file, and repeats are the rare case. With object lock configured,
//! the HeadObject comes first anyway, so that a retained blob is never
//! written twice. A spool file (larger than `in_memory_max_bytes`, or of
//! unannounced size): HeadObject first (same size already there: done),
//! deliberately: one round trip is small beside a transfer of more than
//! 1 MiB, and a video forwarded to many chats, WhatsApp's common repeat,
//! is then not sent again (a conditional write would learn of the repeat
//! only after the upload); up to `part_size` bytes: the spool hashed and
//! checked, then one PutObject;
//! larger: multipart, each part hashed from the spool and then sent with its
//! checksum, at most `max_parallel_parts` at once, CompleteMultipartUpload
//! only after the whole-file hash matched, AbortMultipartUpload on any
//! failure (and, spawned, if the upload future is dropped half-way).
//!
//! Payloads are sent unsigned (`x-amz-content-sha256: UNSIGNED-PAYLOAD`),
//! from memory as from the spool: SigV4 payload signing of an in-memory
//! body is one more sha256 pass over every byte (8% of the daemon's CPU on
//! small files, BENCHMARKS.md), and it guards nothing the
//! `x-amz-checksum-sha256` header does not: that header is signed, and the
//! store refuses a body that does not match it (shown against Garage by
//! `wrong_checksum_is_refused_by_the_store_and_permanent`).
//!
//! Every object gets the configured encryption and object-lock retention;
//! blobs also get the storage class, manifests stay in the bucket's default
//! class so that they can be read back without a restore.

use std::sync::Arc;

use archiver_core::{Sha256Digest, StagedBody, StagedFile};
use aws_sdk_s3::operation::upload_part::UploadPartOutput;
use aws_sdk_s3::primitives::{ByteStream, DateTime, Length};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode,
    ServerSideEncryption, StorageClass,
};
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use super::S3Store;
use super::client::{COMPLETE_TIMEOUT, piped_override, timeout_override, upload_limit};
use super::config::MIB;
use super::pipe::UnsignedTrailer;
use super::spool::SpoolReader;
use crate::store::check_staged_bytes;
use crate::{PutOutcome, StoreError};

/// S3's most parts per upload.
pub(super) const MAX_PARTS: u64 = 10_000;

impl S3Store {
    /// [`ObjectStore::put_blob`](crate::ObjectStore::put_blob) for a
    /// checked key.
    pub(super) async fn upload_blob(
        &self,
        key: &str,
        file: &StagedFile,
        content_type: Option<&str>,
    ) -> Result<PutOutcome, StoreError> {
        if let StagedBody::Memory(bytes) = &file.body {
            check_staged_bytes(file, bytes)?;
            if self.retain_until().0.is_none() {
                return self
                    .create_blob_from_memory(key, file, bytes, content_type)
                    .await;
            }
        }
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
        let path = match &file.body {
            StagedBody::Memory(bytes) => {
                self.put_single(
                    key,
                    Body::Memory(bytes.clone()),
                    file.sha256.as_bytes(),
                    content_type,
                    true,
                )
                .await?;
                return Ok(PutOutcome::Stored);
            }
            StagedBody::Spool(path) => path,
        };
        let part_size = self.part_size_for(file.size);
        if file.size <= part_size {
            SpoolReader::verify(file, path).await?;
            let body = Body::File {
                path,
                offset: 0,
                len: file.size,
            };
            self.put_single(key, body, file.sha256.as_bytes(), content_type, true)
                .await?;
        } else {
            self.put_multipart(key, file, path, content_type, part_size)
                .await?;
        }
        Ok(PutOutcome::Stored)
    }

    /// One conditional PutObject (see the module docs); `AlreadyPresent`
    /// when the store refused it because an object of the same size is
    /// there.
    pub(super) async fn create_blob_from_memory(
        &self,
        key: &str,
        file: &StagedFile,
        bytes: &Bytes,
        content_type: Option<&str>,
    ) -> Result<PutOutcome, StoreError> {
        let sha256 = file.sha256.as_bytes();
        let body = || Body::Memory(bytes.clone());
        match self
            .put_object(key, body(), sha256, content_type, true, true)
            .await?
        {
            CreateOnly::Created => return Ok(PutOutcome::Stored),
            CreateOnly::Exists => {}
            CreateOnly::NotSupported => {
                self.put_single(key, body(), sha256, content_type, true)
                    .await?;
                return Ok(PutOutcome::Stored);
            }
        }
        match self.existing_size(key).await? {
            Some(size) if size == file.size as i64 => return Ok(PutOutcome::AlreadyPresent),
            Some(size) => tracing::warn!(
                key,
                existing = size,
                size = file.size,
                "replacing an object of the wrong size"
            ),
            // Gone since, or HeadObject denied (write-only credentials):
            // writing the same content-addressed bytes again is harmless.
            None => {}
        }
        self.put_single(key, body(), sha256, content_type, true)
            .await?;
        Ok(PutOutcome::Stored)
    }

    /// [`ObjectStore::put_manifest`](crate::ObjectStore::put_manifest) for
    /// a checked key.
    pub(super) async fn upload_manifest(&self, key: &str, json: &[u8]) -> Result<(), StoreError> {
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

    /// The part size for a file of `size` bytes: the configured one, raised
    /// (to whole MiB) when 10,000 parts would not hold the file.
    pub(super) fn part_size_for(&self, size: u64) -> u64 {
        let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        self.cfg.part_size.max(needed)
    }

    /// HeadObject: `Some(size)` if an object exists, `None` if not. A 403
    /// also gives `None`: write-only credentials (PutObject without
    /// GetObject) are a sound policy for an archive, and re-uploading an
    /// identical content-addressed object is harmless.
    pub(super) async fn existing_size(&self, key: &str) -> Result<Option<i64>, StoreError> {
        match self.head(key).await {
            Ok(head) => Ok(head.map(|out| out.content_length().unwrap_or(-1))),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(403) => {
                tracing::debug!(
                    key,
                    "HeadObject denied; uploading without the existence check"
                );
                Ok(None)
            }
            Err(e) => Err(self.err("HeadObject", key, e)),
        }
    }

    /// `server_side_encryption`, as the SDK takes it.
    fn encryption(&self) -> Option<ServerSideEncryption> {
        self.cfg
            .server_side_encryption
            .as_deref()
            .map(ServerSideEncryption::from)
    }

    /// `storage_class`, as the SDK takes it (blobs only).
    fn storage_class(&self) -> Option<StorageClass> {
        self.cfg.storage_class.as_deref().map(StorageClass::from)
    }

    /// The object-lock mode and retain-until date of an object written now.
    pub(super) fn retain_until(&self) -> (Option<ObjectLockMode>, Option<DateTime>) {
        let (Some(mode), Some(days)) = (
            self.cfg.object_lock_mode.as_deref(),
            self.cfg.object_lock_days,
        ) else {
            return (None, None);
        };
        let until = chrono::Utc::now().timestamp() + i64::from(days) * 86_400;
        (
            Some(ObjectLockMode::from(mode)),
            Some(DateTime::from_secs(until)),
        )
    }

    /// One PutObject of `body`, declaring `sha256` as its checksum. The
    /// caller has checked that `body` hashes to `sha256`; the store checks
    /// again.
    pub(super) async fn put_single(
        &self,
        key: &str,
        body: Body<'_>,
        sha256: &[u8; 32],
        content_type: Option<&str>,
        is_blob: bool,
    ) -> Result<(), StoreError> {
        self.put_object(key, body, sha256, content_type, is_blob, false)
            .await
            .map(|_| ())
    }

    /// [`S3Store::put_single`], with `If-None-Match: *` if `create_only`
    /// (see [`CreateOnly`]).
    async fn put_object(
        &self,
        key: &str,
        body: Body<'_>,
        sha256: &[u8; 32],
        content_type: Option<&str>,
        is_blob: bool,
        create_only: bool,
    ) -> Result<CreateOnly, StoreError> {
        let len = body.len();
        let body = body.into_stream().await?;
        let (lock_mode, retain_until) = self.retain_until();
        let result = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .content_length(len as i64)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(b64(sha256))
            .metadata("sha256", hex::encode(sha256))
            .set_content_type(content_type.map(str::to_owned))
            .set_server_side_encryption(self.encryption())
            .set_ssekms_key_id(self.cfg.kms_key_id.clone())
            .set_storage_class(if is_blob { self.storage_class() } else { None })
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(retain_until)
            .set_if_none_match(create_only.then(|| "*".to_owned()))
            .body(body)
            .customize()
            .disable_payload_signing()
            .config_override(timeout_override(upload_limit(len)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(CreateOnly::Created),
            Err(e) if create_only => {
                CreateOnly::refused(e.raw_response().map(|r| r.status().as_u16()))
                    .ok_or_else(|| self.err("PutObject", key, e))
            }
            Err(e) => Err(self.err("PutObject", key, e)),
        }
    }

    async fn put_multipart(
        &self,
        key: &str,
        file: &StagedFile,
        path: &std::path::Path,
        content_type: Option<&str>,
        part_size: u64,
    ) -> Result<(), StoreError> {
        let upload_id = self
            .create_multipart(key, &file.sha256, content_type)
            .await?;
        let mut guard = AbortGuard {
            store: Some(self.clone()),
            key: key.to_owned(),
            upload_id: upload_id.clone(),
        };
        match self
            .upload_parts_and_complete(key, &upload_id, file, path, part_size)
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
        path: &std::path::Path,
        part_size: u64,
    ) -> Result<(), StoreError> {
        let path = Arc::new(path.to_path_buf());
        let mut reader = SpoolReader::open(&path).await?;
        let mut in_flight: JoinSet<Result<CompletedPart, StoreError>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut part_number = 0i32;
        while offset < file.size {
            // At most `max_parallel_parts` parts are in flight: wait for a
            // free slot before reading the next part.
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
        reader.finish(file, &path).await?;

        self.complete_multipart(key, upload_id, parts, false)
            .await
            .map(|_| ())
    }

    /// CreateMultipartUpload of a blob whose bytes hash to `sha256`: its
    /// upload id.
    pub(super) async fn create_multipart(
        &self,
        key: &str,
        sha256: &Sha256Digest,
        content_type: Option<&str>,
    ) -> Result<String, StoreError> {
        let (lock_mode, retain_until) = self.retain_until();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .metadata("sha256", sha256.to_hex())
            .set_content_type(content_type.map(str::to_owned))
            .set_server_side_encryption(self.encryption())
            .set_ssekms_key_id(self.cfg.kms_key_id.clone())
            .set_storage_class(self.storage_class())
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(retain_until)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        created
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Rejected {
                op: "CreateMultipartUpload",
                key: key.to_owned(),
                status: 200,
                code: String::new(),
                message: "no UploadId in the response".into(),
            })
    }

    /// CompleteMultipartUpload of `parts` (in any order), with
    /// `If-None-Match: *` if `create_only` (see [`CreateOnly`]; when an
    /// object is there, the upload is left to the caller to abort).
    pub(super) async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        mut parts: Vec<CompletedPart>,
        create_only: bool,
    ) -> Result<CreateOnly, StoreError> {
        parts.sort_by_key(|p| p.part_number());
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_if_none_match(create_only.then(|| "*".to_owned()))
            .customize()
            .config_override(timeout_override(COMPLETE_TIMEOUT))
            .send()
            .await;
        match result {
            Ok(_) => Ok(CreateOnly::Created),
            Err(e) if create_only => {
                CreateOnly::refused(e.raw_response().map(|r| r.status().as_u16()))
                    .ok_or_else(|| self.err("CompleteMultipartUpload", key, e))
            }
            Err(e) => Err(self.err("CompleteMultipartUpload", key, e)),
        }
    }

    pub(super) async fn upload_part(
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
            .disable_payload_signing()
            .config_override(timeout_override(upload_limit(len)))
            .send()
            .await
            .map_err(|e| self.err("UploadPart", key, e))?;
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .checksum_sha256(checksum)
            .build())
    }

    /// UploadPart of the bytes that `body` yields as the download brings
    /// them, framed with their sha256 as a trailer (see `pipe.rs`, which
    /// made `body` and `announce`). Such a body cannot be replayed, so the
    /// SDK does not retry this request, and the attempt has no time limit
    /// of its own ([`piped_override`]).
    pub(super) async fn upload_piped_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: ByteStream,
        announce: UnsignedTrailer,
    ) -> Result<UploadPartOutput, StoreError> {
        self.client
            .upload_part()
            .bucket(&self.cfg.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(body)
            .customize()
            .interceptor(announce)
            .config_override(piped_override())
            .send()
            .await
            .map_err(|e| self.err("UploadPart", key, e))
    }

    /// Best effort: a failure is logged (a bucket lifecycle rule
    /// `AbortIncompleteMultipartUpload` catches what is left).
    pub(super) async fn abort(&self, key: &str, upload_id: &str) {
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
}

/// What a write with `If-None-Match: *` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CreateOnly {
    /// Written: there was no object at the key, or the store ignores the
    /// condition (Garage 2.5 does) and wrote over it.
    Created,
    /// 412: an object is at the key; nothing was written.
    Exists,
    /// 501: the store refuses the condition rather than ignoring it;
    /// nothing was written, and the write goes again without it.
    NotSupported,
}

impl CreateOnly {
    /// What a conditional write refused with HTTP `status` came to, if it
    /// is one of these.
    fn refused(status: Option<u16>) -> Option<Self> {
        match status {
            Some(412) => Some(CreateOnly::Exists),
            Some(501) => {
                tracing::debug!("the store does not implement If-None-Match; writing without it");
                Some(CreateOnly::NotSupported)
            }
            _ => None,
        }
    }
}

/// Aborts the multipart upload, in a spawned task, if dropped while armed
/// (the upload future was cancelled half-way).
pub(super) struct AbortGuard {
    pub(super) store: Option<S3Store>,
    pub(super) key: String,
    pub(super) upload_id: String,
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
pub(super) enum Body<'a> {
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

pub(super) async fn join_part(
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

pub(super) fn b64(digest: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}
