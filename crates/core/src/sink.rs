//! Where a download's bytes go when they are not staged first.
//!
//! The fetch step normally stages a download (spool file or memory) and
//! hands over a finished [`StagedFile`](crate::StagedFile). When the
//! provider vouched for the file's sha256 in advance, the blob's key is
//! known before the first byte arrives, so the bytes can go straight into
//! the store as they are received (stream-through) and the store commits
//! the object only once they hash to that key. This trait is the seam
//! between the two stages: the fetcher writes into any [`ByteSink`]
//! without knowing the store, and the store's upload is one without
//! knowing HTTP.

use bytes::Bytes;

/// Accepts a body chunk by chunk, in order, failing with `E` (the writer
/// stops at the first error). Back-pressure is the future: the writer does
/// not read more from the network until it resolves.
///
/// (The error is a type parameter rather than an associated type: with an
/// associated type, boxed through `async_trait` or as `impl Future + Send`
/// alike, the compiler could not prove the worker's spawned future `Send`
/// for every lifetime. The future is boxed through `async_trait`; a chunk
/// is about 16 KiB, so the allocation is noise beside hashing it.)
#[async_trait::async_trait]
pub trait ByteSink<E>: Send {
    /// The body's length, when its sender announced it (`Content-Length`):
    /// called at most once, before the first chunk. A sink may plan by it
    /// (the s3 store can then send each part straight into its request
    /// instead of buffering it); the writer still fails a body that comes
    /// out shorter, and never writes more. Ignored by default.
    fn expect_length(&mut self, length: u64) {
        let _ = length;
    }

    /// Takes the next chunk.
    async fn write(&mut self, chunk: Bytes) -> Result<(), E>;
}
