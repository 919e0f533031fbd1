//! Stream-through uploads: a blob written as its download arrives, when
//! its sha256 (so its key) is known in advance.
//!
//! The bytes fill one part buffer at a time, hashed as they pass: the
//! whole file, for the key, and from the second part on each part for its
//! `ChecksumSHA256` (the first part's is the whole-file hash taken at its
//! last byte, so a file of one part is hashed once). A full buffer is
//! uploaded in its own task, with its checksum, while the next one fills;
//! the multipart upload is created lazily, when the first buffer is full
//! and more bytes follow, so a file of at most one part is one PutObject
//! at the end, sent with `If-None-Match: *` as a file staged in memory
//! is. CompleteMultipartUpload (with `If-None-Match: *`: a store
//! that honours it never replaces what is there) comes only after the
//! whole file hashed to the key; anything else aborts the upload, so
//! nothing unverified is ever visible.
//!
//! Memory with `pipe_parts`, when the download announced its length
//! (`Content-Length`, the usual case) and the file takes more than one
//! part: no part buffer at all. Each part's bytes go straight into its UploadPart request through
//! a channel of a few chunks, hashed as they pass, and the store checks
//! the part's sha256, sent after the bytes as a trailer (its value is only
//! known at the part's last byte; see `pipe.rs`). A file streams at the
//! pace of the slower side, and holds a few hundred KiB whatever
//! `part_size` and its size. Such a part cannot be
//! sent again from memory, so a part that fails fails the upload.
//!
//! Memory otherwise (by default, or length unknown, or at most one part):
//! each buffer is `part_size` bytes (the first starts smaller), taken from
//! the store's pool of `stream_buffers` permits before it is filled and
//! given back when its part is sent. An upload starts only with a free buffer in hand
//! (else [`S3Store::begin_stream`] says `None` and the caller spools),
//! then waits for the next free one after each part: the pool bounds
//! memory whatever the number of uploads, and every upload holding a
//! buffer makes progress, because a filled buffer's permit comes back when
//! its part is sent. A piped upload gives its permit back as soon as it
//! learns its length.
//!
//! A failed part fails the upload (the multipart upload is aborted and the
//! job retried): the SDK retries each buffered part request itself, from
//! the buffer, so only a part that failed every attempt gets here; a piped
//! part gets one attempt.

use archiver_core::{Sha256Digest, StagedBody, StagedFile};
use aws_sdk_s3::types::CompletedPart;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::task::JoinSet;

use super::S3Store;
use super::client::SMALL_REQUEST_TIMEOUT;
use super::pipe::{PIPE_STALL, PipeSender, PipeStopped, piped_body};
use super::upload::{AbortGuard, Body, CreateOnly, MAX_PARTS, b64, join_part};
use crate::store::check_announced;
use crate::{BlobUpload, PutOutcome, StoreError, Streamed};

impl S3Store {
    /// A stream-through upload of the blob at the checked `key`, or `None`
    /// when it must be staged instead (see
    /// [`ObjectStore::begin_blob`](crate::ObjectStore::begin_blob)).
    pub(super) fn begin_stream(
        &self,
        key: &str,
        sha256: Sha256Digest,
        max_size: u64,
        content_type: Option<&str>,
    ) -> Option<StreamedBlob> {
        // Under object lock, put_blob looks before it writes.
        if self.retain_until().0.is_some() || max_size > MAX_PARTS * self.cfg.part_size {
            return None;
        }
        let permit = self.stream_buffers.clone().try_acquire_owned().ok()?;
        let part_size = usize::try_from(self.cfg.part_size).ok()?;
        Some(StreamedBlob {
            store: self.clone(),
            key: key.to_owned(),
            expected: sha256,
            content_type: content_type.map(str::to_owned),
            part_size,
            filling: Part::new(FIRST_BUFFER.min(part_size), permit, None),
            whole: Sha256::new(),
            size: 0,
            multipart: None,
            announced: None,
            open_part: None,
            broken: false,
        })
    }
}

/// A blob being streamed into the bucket; see the module docs.
pub(super) struct StreamedBlob {
    store: S3Store,
    key: String,
    expected: Sha256Digest,
    content_type: Option<String>,
    part_size: usize,
    /// The buffer being filled, with its permit.
    filling: Part,
    /// sha256 of every byte written so far.
    whole: Sha256,
    size: u64,
    /// Created when the first part is sent.
    multipart: Option<Multipart>,
    /// The download's length, when it announced one: no byte past it is
    /// taken, and nothing short of it is stored.
    announced: Option<u64>,
    /// The piped part whose request is taking the bytes, until its last
    /// byte (see [`Self::piped_length`]).
    open_part: Option<PipedPart>,
    /// A write failed: every later call fails too, and `finish` aborts.
    broken: bool,
}

/// The part being piped.
struct PipedPart {
    /// Bytes it still takes.
    remaining: u64,
    /// `None` for the first part, whose hash is the whole file's so far.
    hasher: Option<Sha256>,
    /// Feeds the request's body.
    body: PipeSender,
    /// Our sha256 of the part, for CompleteMultipartUpload.
    checksum: oneshot::Sender<[u8; 32]>,
}

/// What the first buffer starts with: most files are small. A file that
/// outgrows it moves, once, into a buffer of exactly `part_size` (growing
/// by doubling would overshoot `part_size` for most sizes, and the permit
/// counts one part).
const FIRST_BUFFER: usize = 256 * 1024;

/// A part buffer, the hash of what it holds (`None` for the first part,
/// whose hash is the whole file's so far), and the permit that lets it be
/// filled (`None` only between a part being sent and the next permit
/// arriving).
struct Part {
    bytes: BytesMut,
    hasher: Option<Sha256>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Part {
    fn new(capacity: usize, permit: OwnedSemaphorePermit, hasher: Option<Sha256>) -> Self {
        Self {
            bytes: BytesMut::with_capacity(capacity),
            hasher,
            permit: Some(permit),
        }
    }

    /// The part's sha256: its own hasher's, or for the first part the
    /// whole file's so far (`whole` has seen exactly the part's bytes).
    fn sha256(hasher: Option<Sha256>, whole: &Sha256) -> [u8; 32] {
        hasher.unwrap_or_else(|| whole.clone()).finalize().into()
    }
}

/// The multipart upload behind a streamed blob larger than one part.
/// Dropped unfinished (an error, the attempt dropped), it stops its parts
/// in flight and then aborts the upload, in a spawned task: a part that
/// finished after the abort would be kept (and billed) by the store.
struct Multipart {
    upload_id: String,
    /// Armed until the upload is completed or aborted.
    guard: AbortGuard,
    in_flight: JoinSet<Result<CompletedPart, StoreError>>,
    sent: Vec<CompletedPart>,
    next_part: i32,
}

impl Multipart {
    /// Stops the parts in flight, then aborts the upload.
    async fn abort(mut self) {
        let Some(store) = self.guard.store.take() else {
            return;
        };
        stop_parts(&mut self.in_flight).await;
        store.abort(&self.guard.key, &self.upload_id).await;
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        let Some(store) = self.guard.store.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let (key, upload_id) = (self.guard.key.clone(), self.upload_id.clone());
        runtime.spawn(async move {
            stop_parts(&mut in_flight).await;
            store.abort(&key, &upload_id).await;
        });
    }
}

/// Cancels the part uploads in flight and waits until they have stopped.
async fn stop_parts(in_flight: &mut JoinSet<Result<CompletedPart, StoreError>>) {
    in_flight.abort_all();
    while in_flight.join_next().await.is_some() {}
}

impl StreamedBlob {
    /// The multipart upload, created on first use, with room for one more
    /// part in flight (waiting for one to finish if need be). On an error,
    /// the caller drops it and its guard aborts the upload.
    async fn multipart_with_room(&mut self) -> Result<Multipart, StoreError> {
        let mut multipart = match self.multipart.take() {
            Some(multipart) => multipart,
            None => {
                let upload_id = self
                    .store
                    .create_multipart(&self.key, &self.expected, self.content_type.as_deref())
                    .await?;
                Multipart {
                    guard: AbortGuard {
                        store: Some(self.store.clone()),
                        key: self.key.clone(),
                        upload_id: upload_id.clone(),
                    },
                    upload_id,
                    in_flight: JoinSet::new(),
                    sent: Vec::new(),
                    next_part: 1,
                }
            }
        };
        while multipart.in_flight.len() >= self.store.cfg.max_parallel_parts {
            let part = join_part(&mut multipart.in_flight).await?;
            multipart.sent.push(part);
        }
        Ok(multipart)
    }

    /// Sends the full buffer as the next part and takes a free buffer to
    /// fill next (waiting for one).
    async fn send_filled_part(&mut self) -> Result<(), StoreError> {
        let mut multipart = self.multipart_with_room().await?;
        // The filled buffer leaves with its permit, which comes back when
        // its part is sent; only then is a permit for the next one awaited
        // (waiting while holding it could wait for ever on a pool of one).
        let sha256 = Part::sha256(self.filling.hasher.take(), &self.whole);
        let bytes = std::mem::take(&mut self.filling.bytes).freeze();
        let permit = self.filling.permit.take();
        let number = multipart.next_part;
        multipart.next_part += 1;
        let (store, key, upload_id) = (
            self.store.clone(),
            self.key.clone(),
            multipart.upload_id.clone(),
        );
        multipart.in_flight.spawn(async move {
            let sent = store
                .upload_part(&key, &upload_id, number, Body::Memory(bytes), &sha256)
                .await;
            drop(permit);
            sent
        });
        let next = self
            .store
            .stream_buffers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::io("stream buffer", "", std::io::Error::other("closed")))?;
        self.filling = Part::new(self.part_size, next, Some(Sha256::new()));
        self.multipart = Some(multipart);
        Ok(())
    }

    /// Starts the request of the next piped part, of `len` bytes, which
    /// takes them as they are written.
    async fn open_piped_part(&mut self, len: u64) -> Result<PipedPart, StoreError> {
        let mut multipart = self.multipart_with_room().await?;
        let number = multipart.next_part;
        multipart.next_part += 1;
        let (body, stream, announce) = piped_body(len);
        let (checksum, mut ours) = oneshot::channel::<[u8; 32]>();
        let (store, key, upload_id) = (
            self.store.clone(),
            self.key.clone(),
            multipart.upload_id.clone(),
        );
        multipart.in_flight.spawn(async move {
            let request = store.upload_piped_part(&key, &upload_id, number, stream, announce);
            tokio::pin!(request);
            let cut_off = || {
                StoreError::io(
                    "upload part",
                    &key,
                    std::io::Error::other("the part was cut off"),
                )
            };
            // No answer can come before the last byte: until then the
            // download sets the pace (a stall on either side is caught as
            // the bytes are written), then the answer gets the time of any
            // small request.
            let (sent, ours) = tokio::select! {
                biased;
                ours = &mut ours => {
                    let ours = b64(&ours.map_err(|_| cut_off())?);
                    let answer = tokio::time::timeout(SMALL_REQUEST_TIMEOUT, request)
                        .await
                        .map_err(|_| StoreError::Unreachable {
                            op: "UploadPart",
                            key: key.clone(),
                            detail: format!(
                                "no answer {SMALL_REQUEST_TIMEOUT:?} after the last byte"
                            ),
                        })?;
                    (answer?, ours)
                }
                // The store can answer between the trailer going out and
                // the writer saying so: the checksum is on its way.
                answer = &mut request => {
                    let sent = answer?;
                    (sent, b64(&ours.await.map_err(|_| cut_off())?))
                }
            };
            if let Some(theirs) = sent.checksum_sha256().filter(|theirs| *theirs != ours) {
                return Err(StoreError::io(
                    "upload part",
                    &key,
                    std::io::Error::other(format!(
                        "part {number}: the store hashed the bytes to {theirs}, we to {ours}"
                    )),
                ));
            }
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag().map(str::to_owned))
                .checksum_sha256(ours)
                .build())
        });
        let first = number == 1;
        self.multipart = Some(multipart);
        Ok(PipedPart {
            remaining: len,
            hasher: (!first).then(Sha256::new),
            body,
            checksum,
        })
    }

    /// [`BlobUpload::write`] of a piped file: each byte goes into the open
    /// part's request, a part opening when a byte comes for it.
    async fn write_piped(&mut self, length: u64, mut chunk: Bytes) -> Result<(), StoreError> {
        while !chunk.is_empty() {
            let mut part = match self.open_part.take() {
                Some(part) => part,
                None => {
                    let len = (length - self.size).min(self.part_size as u64);
                    self.open_piped_part(len).await?
                }
            };
            let piece = chunk.split_to((part.remaining.min(chunk.len() as u64)) as usize);
            self.whole.update(&piece);
            if let Some(hasher) = &mut part.hasher {
                hasher.update(&piece);
            }
            self.size += piece.len() as u64;
            part.remaining -= piece.len() as u64;
            if let Err(stopped) = part.body.send(piece).await {
                // Its task may wait for the checksum: this says none comes.
                drop(part);
                return Err(self.piped_failure(stopped).await);
            }
            if part.remaining == 0 {
                let sha256 = Part::sha256(part.hasher, &self.whole);
                if let Err(stopped) = part.body.finish(&sha256).await {
                    drop(part.checksum);
                    return Err(self.piped_failure(stopped).await);
                }
                // The trailer is on its way: the answer's time starts.
                let _ = part.checksum.send(sha256);
            } else {
                self.open_part = Some(part);
            }
        }
        Ok(())
    }

    /// Why a piped part's request stopped taking bytes: a stall, or the
    /// first error among the parts in flight.
    async fn piped_failure(&mut self, stopped: PipeStopped) -> StoreError {
        if stopped == PipeStopped::Stalled {
            return StoreError::Unreachable {
                op: "UploadPart",
                key: self.key.clone(),
                detail: format!("the store took none of the part's bytes for {PIPE_STALL:?}"),
            };
        }
        if let Some(multipart) = &mut self.multipart {
            while !multipart.in_flight.is_empty() {
                if let Err(e) = join_part(&mut multipart.in_flight).await {
                    return e;
                }
            }
        }
        StoreError::io(
            "upload part",
            &self.key,
            std::io::Error::other("the part's request stopped taking bytes"),
        )
    }

    /// Sends the last part (a buffered upload's; a piped one's went with
    /// its last byte), waits for every part, completes the upload.
    async fn complete(&mut self, mut multipart: Multipart) -> Result<PutOutcome, StoreError> {
        let mut parts = Vec::new();
        if self.piped_length().is_none() {
            while multipart.in_flight.len() >= self.store.cfg.max_parallel_parts {
                let part = join_part(&mut multipart.in_flight).await?;
                multipart.sent.push(part);
            }
            let bytes = std::mem::take(&mut self.filling.bytes).freeze();
            let sha256 = Part::sha256(self.filling.hasher.take(), &self.whole);
            let number = multipart.next_part;
            let (store, key, upload_id) = (&self.store, &self.key, &multipart.upload_id);
            parts.push(
                store
                    .upload_part(key, upload_id, number, Body::Memory(bytes), &sha256)
                    .await?,
            );
        }
        let (store, key, upload_id) = (&self.store, &self.key, &multipart.upload_id);
        while !multipart.in_flight.is_empty() {
            parts.push(join_part(&mut multipart.in_flight).await?);
        }
        parts.append(&mut multipart.sent);
        let created = store
            .complete_multipart(key, upload_id, parts.clone(), true)
            .await?;
        let outcome = match created {
            CreateOnly::Created => PutOutcome::Stored,
            CreateOnly::NotSupported => {
                store
                    .complete_multipart(key, upload_id, parts, false)
                    .await?;
                PutOutcome::Stored
            }
            // An object is there already. Of this size, it is this blob,
            // archived before (the key is its hash); the parts are
            // dropped. Otherwise it is a damaged copy, replaced.
            CreateOnly::Exists => {
                match store.existing_size(key).await? {
                    Some(size) if size == self.size as i64 => {
                        multipart.abort().await;
                        return Ok(PutOutcome::AlreadyPresent);
                    }
                    Some(existing) => tracing::warn!(
                        key = %key,
                        existing,
                        size = self.size,
                        "replacing an object of the wrong size"
                    ),
                    // Gone since, or HeadObject denied: completing without
                    // the condition writes the same content-addressed bytes.
                    None => {}
                }
                store
                    .complete_multipart(key, upload_id, parts, false)
                    .await?;
                PutOutcome::Stored
            }
        };
        multipart.guard.store = None;
        Ok(outcome)
    }
}

#[async_trait::async_trait]
impl BlobUpload for StreamedBlob {
    fn expect_length(&mut self, length: u64) {
        if self.size > 0 || self.announced.is_some() {
            return;
        }
        self.announced = Some(length);
        if self.piped_length().is_some() {
            // Its buffer (and the permit) go back to the pool unused.
            self.filling = Part {
                bytes: BytesMut::new(),
                hasher: None,
                permit: None,
            };
        }
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if self.broken {
            return Err(self.broken_error());
        }
        // Until it returns: a write cancelled half-way broke the upload too.
        self.broken = true;
        let written = self.write_chunk(chunk).await;
        self.broken = written.is_err();
        written
    }

    async fn finish(mut self: Box<Self>) -> Result<Streamed, StoreError> {
        if self.broken {
            if let Some(multipart) = self.multipart.take() {
                multipart.abort().await;
            }
            return Err(self.broken_error());
        }
        self.finish_whole().await
    }
}

impl StreamedBlob {
    /// The announced length, when the parts are piped: `pipe_parts`, and a
    /// length announced before the first byte that takes more than one
    /// part (a file of one part stays one PutObject from its buffer).
    fn piped_length(&self) -> Option<u64> {
        self.announced
            .filter(|&length| self.store.cfg.pipe_parts && length > self.part_size as u64)
    }

    /// A write failed: the bytes sent are not the file's any more.
    fn broken_error(&self) -> StoreError {
        StoreError::io(
            "stream blob",
            &self.key,
            std::io::Error::other("an earlier write failed; the upload is discarded"),
        )
    }

    /// [`BlobUpload::write`] of an upload that has not failed.
    async fn write_chunk(&mut self, mut chunk: Bytes) -> Result<(), StoreError> {
        let size = self.size + chunk.len() as u64;
        check_announced(&self.key, self.announced, size, false)?;
        if let Some(length) = self.piped_length() {
            return self.write_piped(length, chunk).await;
        }
        self.size += chunk.len() as u64;
        while !chunk.is_empty() {
            // A full buffer is sent only once more bytes follow, so a file
            // of exactly one part stays one PutObject.
            if self.filling.bytes.len() == self.part_size {
                self.send_filled_part().await?;
            }
            let room = self.part_size - self.filling.bytes.len();
            let piece = chunk.split_to(room.min(chunk.len()));
            let buffer = &mut self.filling.bytes;
            if buffer.capacity() - buffer.len() < piece.len() {
                let mut whole_part = BytesMut::with_capacity(self.part_size);
                whole_part.extend_from_slice(buffer);
                *buffer = whole_part;
            }
            self.whole.update(&piece);
            if let Some(hasher) = &mut self.filling.hasher {
                hasher.update(&piece);
            }
            self.filling.bytes.extend_from_slice(&piece);
        }
        Ok(())
    }

    /// [`BlobUpload::finish`] of an upload whose every write succeeded.
    async fn finish_whole(mut self: Box<Self>) -> Result<Streamed, StoreError> {
        // The last part's hash may still need `whole` (a file of one part).
        let sha256 = Sha256Digest::from_bytes(self.whole.clone().finalize().into());
        let size = self.size;
        if let Err(e) = check_announced(&self.key, self.announced, size, true) {
            if let Some(multipart) = self.multipart.take() {
                multipart.abort().await;
            }
            return Err(e);
        }
        if sha256 != self.expected {
            if let Some(multipart) = self.multipart.take() {
                multipart.abort().await;
            }
            return Ok(Streamed::Refused { size, sha256 });
        }
        let outcome = match self.multipart.take() {
            Some(multipart) => self.complete(multipart).await?,
            None => {
                let bytes = std::mem::take(&mut self.filling.bytes).freeze();
                let file = StagedFile {
                    body: StagedBody::Memory(bytes.clone()),
                    size,
                    sha256,
                };
                let content_type = self.content_type.as_deref();
                self.store
                    .create_blob_from_memory(&self.key, &file, &bytes, content_type)
                    .await?
            }
        };
        Ok(Streamed::Archived { size, outcome })
    }
}
