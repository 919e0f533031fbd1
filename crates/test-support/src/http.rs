//! A tiny real HTTP/1.1 server for fakes of the outside world.
//!
//! [`TestServer::start`] binds `127.0.0.1:0`, serves every connection with
//! the given async handler, and stops (closing the listener and every open
//! connection) when it is dropped. Bodies are [`Body`], a boxed body that may
//! be a stream, so fakes can stall, truncate or stream large files without
//! holding them whole. The helpers build the common responses.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Error type of a streamed body; an `Err` item aborts the connection
/// mid-body (how a server "dies" while sending).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: full, empty or streamed.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A running server. Dropping it (or [`TestServer::shutdown`]) stops it.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and serves each request with `handler`.
    pub async fn start<H, F>(handler: H) -> TestServer
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        Self::start_on("127.0.0.1:0", handler)
            .await
            .expect("bind a test server on 127.0.0.1:0")
    }

    /// Binds `addr` (a demo on a fixed port) and serves each request with `handler`.
    pub async fn start_on<H, F>(addr: &str, handler: H) -> std::io::Result<TestServer>
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr().expect("test server address");
        let handler = Arc::new(handler);
        let accept = tokio::spawn(async move {
            // Owned by this task: aborting it drops the set, which aborts
            // every connection still open.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let handler = Arc::clone(&handler);
                        connections.spawn(async move {
                            let service = service_fn(move |req| {
                                let handler = Arc::clone(&handler);
                                async move { Ok::<_, Infallible>(handler(req).await) }
                            });
                            // Errors here are the client going away or a
                            // deliberately aborted body: nothing to report.
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(TestServer { addr, accept })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and closes every open connection.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body streamed from chunks; an `Err` chunk aborts the connection.
pub fn stream<S>(chunks: S) -> Body
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
{
    StreamBody::new(chunks.map(|chunk| chunk.map(Frame::data))).boxed_unsync()
}

/// Sends `head`, waits `delay` (if any), then sends `tail`; if `abort`, the
/// connection is then broken instead of the body ending cleanly. With an
/// explicit `Content-Length` header this gives stalls and truncations.
pub fn slow_body(head: Bytes, delay: Duration, tail: Bytes, abort: bool) -> Body {
    let head = futures_util::stream::iter((!head.is_empty()).then(|| Ok(head)));
    let rest = futures_util::stream::once(async move {
        tokio::time::sleep(delay).await;
        tail
    })
    .filter(|tail| std::future::ready(!tail.is_empty()))
    .map(Ok);
    let end = futures_util::stream::iter(
        abort.then(|| Err::<Bytes, BoxError>("body aborted on purpose".into())),
    );
    stream(head.chain(rest).chain(end))
}

/// A response with a status, a `Content-Type` and a full body.
pub fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("valid status"))
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(full(body))
        .expect("valid response")
}

/// A JSON response.
pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    response(
        status,
        "application/json",
        serde_json::to_vec(value).expect("serialize JSON"),
    )
}

/// A 200 JSON answer that declares its whole length but sends only its
/// first `n` bytes, then breaks the connection: a truncated transfer.
pub fn truncated_json(value: &serde_json::Value, n: usize) -> Response<Body> {
    let body = Bytes::from(serde_json::to_vec(value).expect("serialize JSON"));
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .body(slow_body(
            body.slice(..n.min(body.len())),
            Duration::ZERO,
            Bytes::new(),
            true,
        ))
        .expect("valid response")
}

/// A plain-text response.
pub fn text(status: u16, body: impl Into<String>) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", body.into())
}

/// Reads a request body of at most `limit` bytes (`None` if larger or broken).
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Option<Bytes> {
    Limited::new(req.into_body(), limit)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// A path segment with its `%XX` escapes decoded (an invalid escape is
/// kept as it is).
pub(crate) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_escapes_are_decoded_and_broken_ones_kept() {
        assert_eq!(percent_decode("cloud%3Awamid.X%3D%3D"), "cloud:wamid.X==");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
    }
}
