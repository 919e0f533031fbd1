//! The S3 backend (AWS S3 or any S3-compatible store).
//!
//! Integrity: the client is built with
//! `RequestChecksumCalculation::WhenRequired`, and every upload carries the
//! `ChecksumSHA256` we computed ourselves, in a header (PutObject also names
//! the algorithm, which AWS wants for object-lock puts). (Left to itself the
//! SDK would compute checksums over streamed bodies with the
//! `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER` framing, which Garage
//! rejects.) The store recomputes and refuses a mismatch, so nothing damaged
//! in transit is stored. The one exception is a piped part (`pipe_parts`,
//! see [`pipe`]), whose sha256 is known only after its last byte: it goes
//! as an unsigned aws-chunked trailer, which the store checks the same way. We also hash every byte we read from the spool and
//! compare with `StagedFile::sha256` before the object is committed: a part
//! checksum only proves a part, and not every S3-compatible store checks
//! checksums at all.
//!
//! Memory: bodies are streamed from the spool file by the SDK
//! (`ByteStream::read_from`, 64 KiB at a time), never buffered whole, so an
//! upload holds a few hundred KiB whatever `part_size` and the file size.
//! Reading each part twice (once to hash it, once to send it) costs page
//! cache hits, not disk reads. A streamed body is sent as `UNSIGNED-PAYLOAD`
//! under SigV4, which also saves the SDK a sha256 pass over every byte; the
//! `ChecksumSHA256` header still makes the store verify the content.
//!
//! The module is cut by concern: [`config`] (the `[storage.s3]` settings
//! and their checks), [`client`] (building the SDK client, request
//! timeouts), [`upload`] (single and multipart puts), [`stream`]
//! (stream-through uploads, filled as the download arrives), [`pipe`] (the
//! body of a part piped from the download into its request), [`spool`]
//! (hashing the spool file on the blocking pool), [`read`] (gets, listings, presigned
//! URLs, the bucket check). This file holds the store and the
//! [`ObjectStore`] implementation that routes each call to its concern.

mod client;
mod config;
mod pipe;
mod read;
mod spool;
mod stream;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use archiver_core::{Sha256Digest, StagedFile};
use aws_sdk_s3::Client;

pub use self::config::{S3Config, S3Settings};
use crate::store::{validate_key, validate_prefix};
use crate::{BlobUpload, ObjectDigest, ObjectPages, ObjectStore, PutOutcome, StoreError};

/// An archive in an S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    cfg: Arc<S3Config>,
    /// The part buffers of stream-through uploads (`stream_buffers`),
    /// shared by every clone.
    stream_buffers: Arc<tokio::sync::Semaphore>,
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
    /// The [`StoreError`] of a failed request, naming the operation, the
    /// bucket and the key (never a credential).
    fn err<E>(&self, op: &'static str, key: &str, e: aws_sdk_s3::error::SdkError<E>) -> StoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        StoreError::from_sdk(op, &self.cfg.bucket, key, e)
    }
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
        self.upload_blob(key, file, content_type).await
    }

    async fn begin_blob(
        &self,
        key: &str,
        sha256: Sha256Digest,
        max_size: u64,
        content_type: Option<&str>,
    ) -> Result<Option<Box<dyn BlobUpload>>, StoreError> {
        validate_key(key)?;
        Ok(self
            .begin_stream(key, sha256, max_size, content_type)
            .map(|upload| Box::new(upload) as Box<dyn BlobUpload>))
    }

    async fn put_manifest(&self, key: &str, json: &[u8]) -> Result<(), StoreError> {
        validate_key(key)?;
        self.upload_manifest(key, json).await
    }

    async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        validate_key(key)?;
        self.read_small(key).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.head_bucket().await
    }

    fn list(&self, prefix: &str, page_size: usize) -> ObjectPages {
        use futures_util::StreamExt as _;
        if let Err(e) = validate_prefix(prefix) {
            return futures_util::stream::once(async move { Err(e) }).boxed();
        }
        self.list_pages(prefix, page_size)
    }

    async fn read_hashed(&self, key: &str) -> Result<Option<ObjectDigest>, StoreError> {
        validate_key(key)?;
        self.read_and_hash(key).await
    }

    async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        validate_key(key)?;
        self.head_size(key).await
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        S3Store::presign_get(self, key, ttl).await.map(Some)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.delete_object(key).await
    }

    fn backend_name(&self) -> &'static str {
        "s3"
    }
}

#[cfg(test)]
mod tests;
