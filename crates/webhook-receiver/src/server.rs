//! The accept loop and each connection's limits.
//!
//! Modelled on mini-redis's `limit_connections`: a permit is taken *before*
//! `accept`, so that beyond `server.max_connections` new connections wait in
//! the kernel's backlog and cost this process nothing. Once accepted, a
//! connection counts against its client's share (`crate::clients`); one
//! beyond it is closed at once. Each connection then has three clocks:
//! hyper's header timer, started whenever the connection waits for a
//! request, serves as `idle_timeout` between requests; [`HeadClock`] counts
//! `header_read_timeout` from the first byte of a head, and for the first
//! request from the moment of connecting (a client that connects and sends
//! nothing is cut off as soon as one that trickles its head); the handler
//! counts `body_read_timeout` (see `routes::read_body`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use retry_queue::JobQueue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clients::Clients;
use crate::config::READ_BUFFER_BYTES;
use crate::routes::QueueGauges;
use crate::{Accounts, Eraser, MediaIndex, Readiness, ReceiverConfig};

/// The HTTP server: webhooks in, durable jobs out.
#[derive(Debug)]
pub struct Receiver {
    pub(crate) accounts: Accounts,
    pub(crate) queue: Arc<dyn JobQueue>,
    pub(crate) new_work: Arc<Notify>,
    pub(crate) readiness: Arc<dyn Readiness>,
    pub(crate) config: ReceiverConfig,
    pub(crate) draining: AtomicBool,
    pub(crate) render_metrics: Option<MetricsHook>,
    /// Backs `GET /api/v1/media`; without it the route answers 404.
    pub(crate) media_index: Option<Arc<dyn MediaIndex>>,
    /// Backs `POST /api/v1/erasures`; without it the route answers 404.
    pub(crate) eraser: Option<Arc<dyn Eraser>>,
    /// `server.max_inflight_body_bytes`: one permit per body byte held.
    pub(crate) body_budget: Arc<Semaphore>,
    /// The queue gauges of `/metrics`, refreshed at most every few seconds.
    pub(crate) queue_gauges: QueueGauges,
}

/// Renders the Prometheus text exposition (the binary owns the recorder).
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// [`RenderMetrics`] with a `Debug` the receiver can derive through.
pub(crate) struct MetricsHook(pub(crate) RenderMetrics);

impl std::fmt::Debug for MetricsHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsHook")
    }
}

impl Receiver {
    /// A receiver for these accounts, writing into `queue` and poking
    /// `new_work` after each commit.
    pub fn new(
        accounts: Accounts,
        queue: Arc<dyn JobQueue>,
        new_work: Arc<Notify>,
        readiness: Arc<dyn Readiness>,
        config: ReceiverConfig,
    ) -> Self {
        Self {
            accounts,
            queue,
            new_work,
            readiness,
            body_budget: Arc::new(Semaphore::new(config.server.max_inflight_body_bytes)),
            config,
            draining: AtomicBool::new(false),
            render_metrics: None,
            media_index: None,
            eraser: None,
            queue_gauges: QueueGauges::default(),
        }
    }

    /// Serves `GET /api/v1/media` from this index (the binary's view of the
    /// archive).
    pub fn with_media_index(mut self, index: Arc<dyn MediaIndex>) -> Self {
        self.media_index = Some(index);
        self
    }

    /// Serves `POST /api/v1/erasures` with this eraser.
    pub fn with_eraser(mut self, eraser: Arc<dyn Eraser>) -> Self {
        self.eraser = Some(eraser);
        self
    }

    /// Serves `GET /metrics` with this renderer; before rendering, the
    /// queue gauges (`jobs{state}`, `jobs_at_risk`) are refreshed if they
    /// are older than a few seconds.
    pub fn with_metrics(mut self, render: RenderMetrics) -> Self {
        self.render_metrics = Some(MetricsHook(render));
        self
    }

    /// Marks the daemon as shutting down: `/readyz` answers 503 from now on,
    /// so load balancers stop sending traffic before the listener closes.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and gives
    /// requests in progress up to `grace` to finish (each is short: a body
    /// read and a commit); connections still open then are closed.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(self.config.server.max_connections));
        let clients = Clients::new(
            self.config.connections_per_client,
            self.config.body_bytes_per_client,
        );
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = connections.clone().acquire_owned() => {
                    permit.expect("the connection semaphore is never closed")
                }
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and similar: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(client) = clients.admit(peer) else {
                metrics::counter!("media_archiver_connections_refused_total").increment(1);
                tracing::debug!(%peer, "server.max_connections_per_client reached; connection closed");
                continue;
            };
            let client = Arc::new(client);
            let clock = Arc::new(HeadClock::connected());
            let receiver = self.clone();
            let service_clock = clock.clone();
            let service = service_fn(move |request| {
                let receiver = receiver.clone();
                let clock = service_clock.clone();
                let client = client.clone();
                async move {
                    let _in_request = clock.request_started();
                    Ok::<_, std::convert::Infallible>(receiver.route(request, &client).await)
                }
            });
            let io = TokioIo::new(WatchedStream {
                inner: stream,
                clock: clock.clone(),
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                // hyper starts this timer whenever the connection waits for
                // a request head, so it is the idle timeout.
                .header_read_timeout(self.config.server.idle_timeout)
                .max_buf_size(READ_BUFFER_BYTES)
                .serve_connection(io, service);
            let connection = graceful.watch(connection);
            let header_read_timeout = self.config.server.header_read_timeout;
            tokio::spawn(async move {
                tokio::select! {
                    ended = connection => {
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                    () = clock.head_overdue(header_read_timeout) => {
                        tracing::debug!(%peer, "request head not received within server.header_read_timeout; connection closed");
                    }
                }
                drop(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?grace,
                "connections still open after the shutdown grace; closing them"
            );
        }
    }
}

/// Binds the listen address (before anything else starts, so a taken port
/// fails fast).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// When the request head now arriving on one connection started, so that
/// `header_read_timeout` counts from its first byte (a keep-alive
/// connection may wait much longer, up to `idle_timeout`, before a client
/// starts its next request). A new connection's first head counts as
/// started when the connection is accepted.
#[derive(Debug)]
struct HeadClock {
    /// Set while the handler runs: bytes read then belong to a body.
    in_request: AtomicBool,
    /// Heads seen so far on this connection.
    heads: AtomicU64,
    /// The head now arriving (a value of `heads`), 0 when none is.
    arriving: AtomicU64,
    /// Poked when a head starts arriving.
    started: Notify,
}

/// Marks the end of a request when dropped (the handler may be cancelled).
struct InRequest<'a>(&'a HeadClock);

impl Drop for InRequest<'_> {
    fn drop(&mut self) {
        self.0.in_request.store(false, Ordering::SeqCst);
    }
}

impl HeadClock {
    /// The clock of a connection just accepted: its first head is due
    /// within `header_read_timeout` from now.
    fn connected() -> Self {
        Self {
            in_request: AtomicBool::new(false),
            heads: AtomicU64::new(1),
            arriving: AtomicU64::new(1),
            started: Notify::new(),
        }
    }

    /// Bytes arrived: if no request is being handled and no head is
    /// arriving, they start a head.
    fn bytes_read(&self) {
        if self.in_request.load(Ordering::SeqCst) || self.arriving.load(Ordering::SeqCst) != 0 {
            return;
        }
        let head = self.heads.fetch_add(1, Ordering::SeqCst) + 1;
        self.arriving.store(head, Ordering::SeqCst);
        self.started.notify_one();
    }

    /// The head is complete and its request is being handled.
    fn request_started(&self) -> InRequest<'_> {
        self.in_request.store(true, Ordering::SeqCst);
        self.arriving.store(0, Ordering::SeqCst);
        InRequest(self)
    }

    /// Completes when a head has been arriving for longer than `limit`.
    async fn head_overdue(&self, limit: Duration) {
        loop {
            let head = self.arriving.load(Ordering::SeqCst);
            if head == 0 {
                self.started.notified().await;
                continue;
            }
            tokio::time::sleep(limit).await;
            if self.arriving.load(Ordering::SeqCst) == head {
                return;
            }
        }
    }
}

/// The connection's socket, reporting reads to its [`HeadClock`].
struct WatchedStream {
    inner: TcpStream,
    clock: Arc<HeadClock>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
