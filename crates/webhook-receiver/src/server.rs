use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use archiver_core::Secret;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use retry_queue::JobQueue;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Accounts, MediaIndex, Readiness};

/// `[server]` settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Largest accepted request body; larger is 413.
    pub max_body_bytes: usize,
    /// Enables the admin API; without it the admin routes answer 404.
    pub admin_token: Option<Secret>,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            admin_token: None,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

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
            config,
            draining: AtomicBool::new(false),
            render_metrics: None,
            media_index: None,
        }
    }

    /// Serves `GET /api/v1/media` from this index (the binary's view of the
    /// archive).
    pub fn with_media_index(mut self, index: Arc<dyn MediaIndex>) -> Self {
        self.media_index = Some(index);
        self
    }

    /// Serves `GET /metrics` with this renderer; before rendering, the
    /// queue gauges (`jobs{state}`, `jobs_at_risk`) are refreshed.
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

    /// Serves until `shutdown` is cancelled, then stops accepting and waits
    /// for requests in progress (each is short: a body read and a commit).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
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
            let receiver = self.clone();
            let service = service_fn(move |request| {
                let receiver = receiver.clone();
                async move { Ok::<_, std::convert::Infallible>(receiver.route(request, peer).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.config.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after 10s; closing them");
        }
    }
}

/// Binds the listen address (before anything else starts, so a taken port
/// fails fast).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
