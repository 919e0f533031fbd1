//! Building the stages from the config and running them until SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use retry_queue::{FjallQueue, JobQueue, PgQueue, QueueError, QueueSettings, SqliteQueue};
use s3_uploader::Archives;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhook_receiver::{Readiness, Receiver};

use crate::config::{ConfigErrors, Settings};

/// Why `serve` stopped with an error.
#[derive(Debug)]
pub(crate) enum ServeError {
    /// A setting only the server could reject (PostgreSQL): exit 78.
    Config(ConfigErrors),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for ServeError {
    fn from(e: anyhow::Error) -> Self {
        ServeError::Runtime(e)
    }
}

/// JSON (default) or human-readable logs on stdout; level from `RUST_LOG`.
pub(crate) fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if format == "pretty" {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    }
}

/// The configured queue backend: SQLite or fjall opened in place, or
/// PostgreSQL connected and migrated. A PostgreSQL setting that only the server can
/// reject is a config error (exit 78); an unreachable server is a runtime
/// error (exit 1: a supervisor restarts the daemon).
pub(crate) async fn open_queue(config: &Settings) -> Result<Arc<dyn JobQueue>, ServeError> {
    let policy = config.retry;
    let clock = config.clock.clone();
    let path = match &config.queue {
        QueueSettings::Postgres(options) => {
            let queue = PgQueue::connect_with(options.clone(), policy, clock)
                .await
                .map_err(|e| match e {
                    QueueError::Config(problem) => {
                        ServeError::Config(ConfigErrors(vec![format!("queue: {problem}")]))
                    }
                    other => ServeError::Runtime(
                        anyhow::Error::new(other).context("cannot open the PostgreSQL queue"),
                    ),
                })?;
            tracing::info!(schema = options.schema.as_deref(), "queue: postgres");
            return Ok(Arc::new(queue));
        }
        QueueSettings::Fjall(options) => {
            let queue = FjallQueue::open(options, policy, clock)
                .with_context(|| format!("cannot open the queue in {}", options.path.display()))?;
            tracing::info!(path = %options.path.display(), "queue: fjall");
            return Ok(Arc::new(queue));
        }
        QueueSettings::Sqlite { path } => path,
    };
    let queue = SqliteQueue::open(path, policy, clock).context("cannot open the queue")?;
    Ok(Arc::new(queue))
}

/// `/readyz`: the queue and every account's store answer.
#[derive(Debug)]
struct QueueAndStores {
    queue: Arc<dyn JobQueue>,
    archives: Archives,
}

#[async_trait::async_trait]
impl Readiness for QueueAndStores {
    async fn check(&self) -> Result<(), String> {
        let limit = Duration::from_secs(3);
        match tokio::time::timeout(limit, self.queue.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("queue: {e}")),
            Err(_) => return Err("queue: no answer within 3s".into()),
        }
        // Every store at once: a slow one costs the 3 s once, not per store.
        let pings = self
            .archives
            .stores()
            .into_iter()
            .map(|archive| async move {
                match tokio::time::timeout(limit, archive.store.ping()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("store ({}): {e}", archive.description)),
                    Err(_) => Err(format!(
                        "store ({}): no answer within 3s",
                        archive.description
                    )),
                }
            });
        futures_util::future::join_all(pings)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, String>>()
            .map(|_| ())
    }
}

/// Every account's archive (no request made yet).
pub(crate) async fn open_archives(config: &Settings) -> anyhow::Result<Archives> {
    Archives::open(&config.storage, &config.account_storage)
        .await
        .context("cannot open the archive")
}

/// Runs the daemon on checked settings until SIGTERM or Ctrl-C, then drains.
pub(crate) async fn serve(config: Settings) -> Result<(), ServeError> {
    let providers = config.providers.clone();
    let archives = open_archives(&config).await?;
    let queue = open_queue(&config).await?;
    let fetcher = media_fetch::Fetcher::new(config.fetch.clone())
        .context("cannot prepare the download spool")?;
    let receiver_config = config.receiver.clone();
    let listen = receiver_config.listen;
    let listener = webhook_receiver::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local_addr = listener.local_addr().context("listener address")?;

    for provider in providers.values() {
        if !provider.webhook_auth_configured() {
            tracing::warn!(account = %provider.account(), provider = %provider.kind(), "webhooks for this account are NOT authenticated (allow_unauthenticated_webhooks = true): anyone who knows its URL can submit jobs");
        }
    }

    let worker = Arc::new(pipeline::Worker::new(
        pipeline::Stages {
            queue: queue.clone(),
            providers: providers.clone(),
            fetcher,
            archives: archives.clone(),
            clock: config.clock.clone(),
        },
        config.workers.clone(),
    ));
    let render_metrics = crate::telemetry::install_metrics().context("cannot set up metrics")?;
    let media_index = Arc::new(crate::media_index::ArchiveIndex {
        archives: archives.clone(),
    });
    let notifier = Arc::new(
        media_notify::Notifier::new(
            queue.clone(),
            config.notify.clone(),
            media_index.clone(),
            config.clock.clone(),
        )
        .context("cannot prepare the notifier")?,
    );
    // Before any job runs: a transition made from here on finds the routes.
    notifier
        .install_routes()
        .await
        .context("cannot record the [[notify]] targets in the queue")?;
    let eraser = Arc::new(crate::erase::ArchiveEraser {
        queue: queue.clone(),
        archives: archives.clone(),
    });
    // Before any job runs: a store with no manifest yet has a complete
    // blob index from its first archive on (an existing archive needs
    // `erase --rebuild-index`).
    if let Err(e) = eraser.complete_empty_indexes().await {
        tracing::warn!(error = %e, "cannot check the stores for an empty archive; erasures wait for `erase --rebuild-index`");
    }
    let receiver = Arc::new(
        Receiver::new(
            providers,
            queue.clone(),
            worker.new_work_signal(),
            Arc::new(QueueAndStores { queue, archives }),
            receiver_config,
        )
        .with_metrics(render_metrics)
        .with_media_index(media_index)
        .with_eraser(eraser),
    );

    // One root token: cancelling it stops the listener and the workers;
    // each drains within `workers.shutdown_grace`.
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let grace = config.workers.shutdown_grace;
    let http = tasks.spawn(
        receiver
            .clone()
            .serve(listener, shutdown.child_token(), grace),
    );
    let workers = tasks.spawn(worker.run(shutdown.child_token()));
    let notifications = tasks.spawn(notifier.run(shutdown.child_token(), grace));
    tasks.close();
    let stop = shutdown_signal();
    tracing::info!(addr = %local_addr, "listening");
    crate::telemetry::notify_ready();

    stop.await;
    tracing::info!("shutdown requested: no new webhooks, draining jobs");
    crate::telemetry::notify_stopping();
    receiver.start_draining();
    shutdown.cancel();
    for (task, handle) in [
        ("http server", http),
        ("workers", workers),
        ("notifier", notifications),
    ] {
        if let Err(e) = handle.await {
            tracing::error!(task, error = %e, "task ended abnormally during shutdown");
        }
    }
    tasks.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// Registers for SIGTERM and SIGINT at once and returns the wait for
/// either. Called before the daemon says it is ready: a signal sent right
/// after "listening" (a supervisor's quick stop) then drains the daemon
/// instead of killing it by the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = signal(SignalKind::terminate()).and_then(|term| {
            let int = signal(SignalKind::interrupt())?;
            Ok((term, int))
        });
        async move {
            match streams {
                Ok((mut term, mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
