//! The request body of a piped part: the part's bytes as the download
//! brings them, with their sha256 after them.
//!
//! An UploadPart must carry its checksum, and the checksum of bytes not yet
//! received is not known when the request starts; S3's streaming trailers
//! solve exactly that. The body is sent `Content-Encoding: aws-chunked`
//! (the SDK's own [`AwsChunkedBody`] does the framing), signed as
//! `STREAMING-UNSIGNED-PAYLOAD-TRAILER`, and ends with an
//! `x-amz-checksum-sha256` trailer holding the sha256 we took of the part
//! as it passed; the store recomputes it and refuses a part that does not
//! match. We put the body and its trailer together ourselves rather than
//! ask the SDK's checksum interceptor for one, because the SDK would hash
//! every byte once more for the trailer and, over plain HTTP, once more
//! again to sign each chunk (a framing Garage refuses as "Invalid payload
//! signature").

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_runtime::auth::PayloadSigningOverride;
use aws_runtime::content_encoding::{AwsChunkedBody, AwsChunkedBodyOptions};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

use super::client::SMALL_REQUEST_TIMEOUT;
use super::upload::b64;

/// How many chunks (as the download delivered them, usually 16 KiB) may
/// wait on their way into a part's request.
const PIPE_DEPTH: usize = 2;

/// The one trailer.
const CHECKSUM_TRAILER: &str = "x-amz-checksum-sha256";

/// `x-amz-checksum-sha256:` and a base64 sha256, as the framing counts it.
const CHECKSUM_TRAILER_LEN: u64 = (CHECKSUM_TRAILER.len() + 1 + 44) as u64;

/// How long the store may take none of a part's bytes before the upload
/// is given up as stalled. (The request has no overall time limit: it
/// lasts as long as the download feeding it.)
pub(super) const PIPE_STALL: Duration = SMALL_REQUEST_TIMEOUT;

/// The writing end of a piped part's body.
pub(super) struct PipeSender {
    frames: mpsc::Sender<Frame<Bytes>>,
}

/// Why the request took no more of the body.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PipeStopped {
    /// It ended: failed, or cancelled.
    Closed,
    /// It took nothing for [`PIPE_STALL`].
    Stalled,
}

impl PipeSender {
    /// Hands the request the next bytes of the part, waiting while it has
    /// [`PIPE_DEPTH`] chunks not yet sent.
    pub(super) async fn send(&self, bytes: Bytes) -> Result<(), PipeStopped> {
        self.send_frame(Frame::data(bytes)).await
    }

    /// Ends the body with the part's sha256 as its trailer. A sender
    /// dropped without this ends the body short, and the request fails.
    pub(super) async fn finish(self, sha256: &[u8; 32]) -> Result<(), PipeStopped> {
        let mut trailers = http::HeaderMap::new();
        let value = http::HeaderValue::from_str(&b64(sha256)).expect("base64 is a header value");
        trailers.insert(CHECKSUM_TRAILER, value);
        self.send_frame(Frame::trailers(trailers)).await
    }

    async fn send_frame(&self, frame: Frame<Bytes>) -> Result<(), PipeStopped> {
        match tokio::time::timeout(PIPE_STALL, self.frames.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PipeStopped::Closed),
            Err(_) => Err(PipeStopped::Stalled),
        }
    }
}

/// A body of `len` bytes for an UploadPart, fed through the returned
/// sender, and the interceptor that makes the request announce it.
pub(super) fn piped_body(len: u64) -> (PipeSender, ByteStream, UnsignedTrailer) {
    let (frames, receiver) = mpsc::channel(PIPE_DEPTH);
    let options = AwsChunkedBodyOptions::new(len, vec![CHECKSUM_TRAILER_LEN]);
    let headers = UnsignedTrailer {
        decoded_len: len,
        encoded_len: options.encoded_length(),
    };
    let body = AwsChunkedBody::new(PipeBody { frames: receiver }, options);
    (
        PipeSender { frames },
        ByteStream::from_body_1_x(body),
        headers,
    )
}

/// The frames sent into the channel, ending when its sender is dropped.
struct PipeBody {
    frames: mpsc::Receiver<Frame<Bytes>>,
}

impl http_body::Body for PipeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.frames.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// Makes a piped part's request say what its body is: aws-chunked, of
/// `decoded_len` bytes, `encoded_len` on the wire, with a checksum trailer,
/// and signed as `STREAMING-UNSIGNED-PAYLOAD-TRAILER` (the signature covers
/// the headers, the store checks the trailer).
#[derive(Debug)]
pub(super) struct UnsignedTrailer {
    decoded_len: u64,
    encoded_len: u64,
}

impl Intercept for UnsignedTrailer {
    fn name(&self) -> &'static str {
        "UnsignedTrailer"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::StreamingUnsignedPayloadTrailer);
        let headers = context.request_mut().headers_mut();
        headers.insert("content-encoding", "aws-chunked");
        headers.insert("content-length", self.encoded_len.to_string());
        headers.insert("x-amz-decoded-content-length", self.decoded_len.to_string());
        headers.insert("x-amz-trailer", CHECKSUM_TRAILER);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that stops reading the body is found out after
    /// [`PIPE_STALL`], not waited for (the request itself has no time
    /// limit), and one whose request ended is told at once.
    #[tokio::test(start_paused = true)]
    async fn a_body_nobody_reads_stalls_and_one_whose_request_ended_is_closed() {
        let (sender, unread, _announce) = piped_body(1 << 20);
        let chunk = Bytes::from_static(&[7; 1024]);
        for _ in 0..PIPE_DEPTH {
            sender.send(chunk.clone()).await.unwrap();
        }
        let started = tokio::time::Instant::now();
        assert_eq!(sender.send(chunk.clone()).await, Err(PipeStopped::Stalled));
        assert!(started.elapsed() >= PIPE_STALL);

        drop(unread);
        assert_eq!(sender.send(chunk).await, Err(PipeStopped::Closed));
    }

    /// What goes on the wire is exactly the length the request announces:
    /// the bytes, framed, and the sha256 trailer.
    #[tokio::test]
    async fn the_framed_body_is_the_announced_length_and_ends_with_the_trailer() {
        use http_body_util::BodyExt as _;
        let len = 200 * 1024 + 5;
        let (sender, body, announce) = piped_body(len);
        let feed = tokio::spawn(async move {
            for chunk in vec![3u8; len as usize].chunks(16 * 1024 + 3) {
                sender.send(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            sender.finish(&[0xab; 32]).await.unwrap();
        });
        let wire = body.into_inner().collect().await.unwrap().to_bytes();
        feed.await.unwrap();
        assert_eq!(wire.len() as u64, announce.encoded_len);
        let trailer = format!("0\r\n{CHECKSUM_TRAILER}:{}\r\n\r\n", b64(&[0xab; 32]));
        assert!(
            wire.ends_with(trailer.as_bytes()),
            "{:?}",
            &wire[wire.len() - 90..]
        );
    }
}
