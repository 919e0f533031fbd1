//! Building the stages from the config and running them until SIGTERM.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context as _;
use archiver_core::{Clock, SystemClock};
use providers::{ApiClient, Provider};
use retry_queue::{JobQueue, PgQueue, QueueError, SqliteQueue};
use s3_uploader::{FsStore, Layout, ObjectStore, S3Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhook_receiver::{Readiness, Receiver};

use crate::config::{Config, ConfigErrors};

/// Why `serve` stopped with an error.
#[derive(Debug)]
pub(crate) enum ServeError {
    /// Found while building (secrets, S3 settings): exit 78.
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

/// The process's one clock: the queue, every adapter and the worker read
/// "now" from this one value, so a job's times (webhook arrival, deadline,
/// retries, park timeout, `archived_at`) are all on the same clock.
static CLOCK: LazyLock<Arc<dyn Clock>> = LazyLock::new(|| Arc::new(SystemClock));

/// One adapter per account; every account's problems are collected.
pub(crate) fn build_providers(
    config: &Config,
) -> Result<HashMap<String, Arc<dyn Provider>>, ConfigErrors> {
    let api = ApiClient::new(config.fetch.connect_timeout, config.fetch.read_timeout)
        .map_err(|e| ConfigErrors(vec![e]))?;
    let mut errors = Vec::new();
    let mut accounts = HashMap::new();
    for (i, account) in config.accounts.iter().enumerate() {
        match providers::build_with_clock(account, &api, CLOCK.clone()) {
            Ok(provider) => {
                accounts.insert(account.name().to_string(), provider);
            }
            Err(problems) => {
                errors.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("accounts[{i}] ({}): {p}", account.name())),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(accounts)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// What `check-config` prints: accounts, backends, and what is unauthenticated.
pub(crate) fn summary(config: &Config) -> Result<String, ConfigErrors> {
    let providers = build_providers(config)?;
    let mut out = String::new();
    let _ = writeln!(out, "config ok");
    let _ = writeln!(out, "listen: {}", config.server.listen);
    let _ = writeln!(
        out,
        "admin API: {}",
        if config.server.admin_token.is_some() {
            "enabled"
        } else {
            "disabled (no server.admin_token)"
        }
    );
    let queue = match config.queue.backend.as_str() {
        "sqlite" => format!("sqlite ({})", config.queue.path.display()),
        // Never the URL: it may hold a password.
        "postgres" => format!(
            "postgres (schema {})",
            config.queue.schema.as_deref().unwrap_or("from search_path")
        ),
        other => other.to_owned(),
    };
    let _ = writeln!(out, "queue: {queue}");
    let storage = match (config.storage.backend.as_str(), &config.storage.s3) {
        ("s3", Some(s3)) => format!(
            "s3 (bucket {}, endpoint {}, prefix {:?})",
            s3.bucket,
            s3.endpoint.as_deref().unwrap_or("AWS default"),
            s3.prefix
        ),
        _ => format!("fs ({})", config.storage.path.display()),
    };
    let _ = writeln!(out, "storage: {storage}");
    let _ = writeln!(out, "accounts:");
    let mut names: Vec<_> = providers.keys().collect();
    names.sort();
    for name in names {
        let provider = &providers[name];
        let auth = if provider.webhook_auth_configured() {
            "authenticated"
        } else {
            "UNAUTHENTICATED webhooks"
        };
        let _ = writeln!(
            out,
            "  {name}: {} ({auth}) -> POST /webhooks/{name}",
            provider.kind()
        );
    }
    if config.fetch.allow_private_networks {
        let _ = writeln!(
            out,
            "warning: fetch.allow_private_networks = true (SSRF guard off for addresses)"
        );
    }
    Ok(out)
}

/// The configured queue backend: SQLite opened in place, or PostgreSQL
/// connected and migrated. A PostgreSQL setting that only the server can
/// reject is a config error (exit 78); an unreachable server is a runtime
/// error (exit 1: a supervisor restarts the daemon).
pub(crate) async fn open_queue(config: &Config) -> Result<Arc<dyn JobQueue>, ServeError> {
    let policy = config.retry_policy();
    let clock = CLOCK.clone();
    if config.queue.backend == "postgres" {
        let options = config
            .pg_options()
            .map_err(|p| ServeError::Config(ConfigErrors(p)))?;
        let queue = PgQueue::connect_with(options, policy, clock)
            .await
            .map_err(|e| match e {
                QueueError::Config(problem) => {
                    ServeError::Config(ConfigErrors(vec![format!("queue: {problem}")]))
                }
                other => ServeError::Runtime(
                    anyhow::Error::new(other).context("cannot open the PostgreSQL queue"),
                ),
            })?;
        tracing::info!(schema = config.queue.schema.as_deref(), "queue: postgres");
        return Ok(Arc::new(queue));
    }
    let queue =
        SqliteQueue::open(&config.queue.path, policy, clock).context("cannot open the queue")?;
    Ok(Arc::new(queue))
}

/// `/readyz`: the queue and the store both answer.
#[derive(Debug)]
struct QueueAndStore {
    queue: Arc<dyn JobQueue>,
    store: Arc<dyn ObjectStore>,
}

#[async_trait::async_trait]
impl Readiness for QueueAndStore {
    async fn check(&self) -> Result<(), String> {
        let limit = Duration::from_secs(3);
        match tokio::time::timeout(limit, self.queue.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("queue: {e}")),
            Err(_) => return Err("queue: no answer within 3s".into()),
        }
        match tokio::time::timeout(limit, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("store: {e}")),
            Err(_) => Err("store: no answer within 3s".into()),
        }
    }
}

/// The configured archive store (no request made yet; S3 settings that do
/// not validate are a config error).
pub(crate) async fn open_store(config: &Config) -> Result<Arc<dyn ObjectStore>, ServeError> {
    Ok(
        match (config.storage.backend.as_str(), &config.storage.s3) {
            ("s3", Some(s3)) => {
                let s3_config = config
                    .s3_config(s3)
                    .map_err(|p| ServeError::Config(ConfigErrors(p)))?;
                Arc::new(
                    S3Store::connect(s3_config)
                        .await
                        .context("cannot set up the S3 store")?,
                )
            }
            _ => Arc::new(
                FsStore::open(&config.storage.path).context("cannot open the archive folder")?,
            ),
        },
    )
}

/// Runs the daemon until SIGTERM or Ctrl-C, then drains.
pub(crate) async fn serve(config: Config) -> Result<(), ServeError> {
    let providers = build_providers(&config).map_err(ServeError::Config)?;
    let store = open_store(&config).await?;
    let queue = open_queue(&config).await?;
    let fetcher = media_fetch::Fetcher::new(config.fetch_config())
        .context("cannot prepare the download spool")?;
    let receiver_config = config
        .server
        .validate()
        .map_err(|p| ServeError::Config(ConfigErrors(p)))?;
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
            store: store.clone(),
            layout: Layout::new(config.storage_prefix()),
            clock: CLOCK.clone(),
        },
        pipeline::WorkerConfig {
            concurrency: config.workers.concurrency,
            lease: config.workers.lease,
            shutdown_grace: config.workers.shutdown_grace,
            idle_poll: config.workers.idle_poll,
        },
    ));
    let render_metrics = crate::telemetry::install_metrics().context("cannot set up metrics")?;
    let media_index = Arc::new(crate::media_index::ArchiveIndex {
        store: store.clone(),
        layout: Layout::new(config.storage_prefix()),
        presign_ttl: config.presign_ttl(),
    });
    let receiver = Arc::new(
        Receiver::new(
            providers,
            queue.clone(),
            worker.new_work_signal(),
            Arc::new(QueueAndStore { queue, store }),
            receiver_config,
        )
        .with_metrics(render_metrics)
        .with_media_index(media_index),
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
    tasks.close();
    tracing::info!(addr = %local_addr, "listening");
    crate::telemetry::notify_ready();

    shutdown_signal().await;
    tracing::info!("shutdown requested: no new webhooks, draining jobs");
    crate::telemetry::notify_stopping();
    receiver.start_draining();
    shutdown.cancel();
    for (task, handle) in [("http server", http), ("workers", workers)] {
        if let Err(e) = handle.await {
            tracing::error!(task, error = %e, "task ended abnormally during shutdown");
        }
    }
    tasks.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
