//! Reading the bucket back: small objects whole (manifests), any object
//! streamed through sha256 (scrub), sizes, listings a page at a time,
//! presigned download URLs, and the bucket check behind `/readyz`.
//!
//! A body is read chunk by chunk under a time limit, so a store that stops
//! sending mid-object fails the read instead of hanging it: a whole small
//! object must arrive within one request's time, a large one may take as
//! long as it needs while its chunks keep coming.

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::{HeadObjectError, HeadObjectOutput};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::S3Store;
use super::client::SMALL_REQUEST_TIMEOUT;
use crate::store::{clamp_page, validate_key};
use crate::{MAX_SMALL_OBJECT_BYTES, ObjectDigest, ObjectInfo, ObjectPages, StoreError};

/// Longest wait for the next chunk of an object being read.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a body may take to arrive.
#[derive(Debug, Clone, Copy)]
enum Patience {
    /// All of it by then.
    Until(Instant),
    /// Each chunk within this of the previous one.
    Idle(Duration),
}

impl S3Store {
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

    /// [`ObjectStore::get_small`](crate::ObjectStore::get_small): the
    /// whole object, refused above [`MAX_SMALL_OBJECT_BYTES`].
    pub(super) async fn read_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
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
        let patience = Patience::Until(Instant::now() + SMALL_REQUEST_TIMEOUT);
        while let Some(chunk) = next_chunk(&mut body, key, patience).await? {
            if (bytes.len() + chunk.len()) as u64 > MAX_SMALL_OBJECT_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }

    /// [`ObjectStore::read_hashed`](crate::ObjectStore::read_hashed): the
    /// object streamed through sha256, one chunk in memory at a time.
    pub(super) async fn read_and_hash(
        &self,
        key: &str,
    ) -> Result<Option<ObjectDigest>, StoreError> {
        let Some(out) = self.get_object(key).await? else {
            return Ok(None);
        };
        let mut body = out.body;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) =
            next_chunk(&mut body, key, Patience::Idle(READ_IDLE_TIMEOUT)).await?
        {
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Some(ObjectDigest {
            size,
            sha256: archiver_core::Sha256Digest::from_bytes(hasher.finalize().into()),
        }))
    }

    /// [`ObjectStore::size_of`](crate::ObjectStore::size_of): HeadObject's
    /// size, `None` when there is no such key.
    pub(super) async fn head_size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.head(key).await {
            Ok(head) => {
                Ok(head.map(|out| u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0)))
            }
            Err(e) => Err(self.err("HeadObject", key, e)),
        }
    }

    /// HeadObject; `None` when there is no such key (404). Other failures
    /// are left to the caller, which knows what a refusal means to it.
    pub(super) async fn head(
        &self,
        key: &str,
    ) -> Result<Option<HeadObjectOutput>, SdkError<HeadObjectError, HttpResponse>> {
        let result = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`ObjectStore::delete`](crate::ObjectStore::delete): DeleteObject
    /// (S3 answers 204 for a key that does not exist, too).
    pub(super) async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteObject", key, e))
    }

    /// [`ObjectStore::ping`](crate::ObjectStore::ping): HeadBucket.
    pub(super) async fn head_bucket(&self) -> Result<(), StoreError> {
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

    /// [`ObjectStore::list`](crate::ObjectStore::list) of a checked prefix:
    /// ListObjectsV2 a page at a time, empty pages skipped.
    pub(super) fn list_pages(&self, prefix: &str, page_size: usize) -> ObjectPages {
        use futures_util::StreamExt as _;
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

    /// GetObject; `None` when there is no such key.
    async fn get_object(&self, key: &str) -> Result<Option<GetObjectOutput>, StoreError> {
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
}

/// The next chunk of `key`'s body (`None` at its end), or why it did not
/// come in time.
async fn next_chunk(
    body: &mut ByteStream,
    key: &str,
    patience: Patience,
) -> Result<Option<Bytes>, StoreError> {
    let chunk = match patience {
        Patience::Until(deadline) => tokio::time::timeout_at(deadline, body.try_next()).await,
        Patience::Idle(idle) => tokio::time::timeout(idle, body.try_next()).await,
    };
    let detail = match chunk {
        Ok(Ok(chunk)) => return Ok(chunk),
        Ok(Err(e)) => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
        Err(_) => match patience {
            Patience::Until(_) => "reading the body timed out".into(),
            Patience::Idle(idle) => {
                format!("no data for {}s while reading the body", idle.as_secs())
            }
        },
    };
    Err(StoreError::Unreachable {
        op: "GetObject",
        key: key.to_owned(),
        detail,
    })
}
