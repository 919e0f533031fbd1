//! Process-wide telemetry the binary owns: the Prometheus recorder behind
//! `/metrics`, and systemd's readiness, stopping and watchdog notifications.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use webhook_receiver::RenderMetrics;

/// Latency buckets (seconds) for the `*_seconds` histograms: from a fast
/// small file to a multi-GiB video.
const SECONDS_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Installs the global Prometheus recorder and returns the renderer for
/// `/metrics`. Also starts the recorder's periodic upkeep.
pub(crate) fn install_metrics() -> anyhow::Result<RenderMetrics> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)?
        .install_recorder()?;
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(Arc::new(move || handle.render()))
}

/// Help texts, so the exposition explains itself.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "media_archiver_webhooks_total",
        "Webhooks received on known accounts, by outcome"
    );
    describe_counter!(
        "media_archiver_body_budget_exhausted_total",
        "Webhooks answered 503 because server.max_inflight_body_bytes was in use"
    );
    describe_gauge!("media_archiver_jobs", "Jobs in the queue, by state");
    describe_gauge!(
        "media_archiver_jobs_at_risk",
        "Jobs not done whose deadline is within 24 hours"
    );
    describe_counter!(
        "media_archiver_archived_total",
        "Files archived and verified"
    );
    describe_counter!("media_archiver_archived_bytes_total", "Bytes archived");
    describe_counter!(
        "media_archiver_streamed_total",
        "Files of archived_total streamed from the download straight into the store (no spool file)"
    );
    describe_counter!(
        "media_archiver_failures_total",
        "Failed attempts, by class (transient, retry_after, permanent)"
    );
    describe_counter!("media_archiver_dead_total", "Jobs given up on, by reason");
    describe_counter!(
        "media_archiver_redownloads_total",
        "Fresh copies of a file asked of the gateway, by reason (not-downloaded, gone)"
    );
    describe_counter!(
        "media_archiver_notifications_total",
        "Events sent to [[notify]] targets, by target and outcome (delivered, failed, dead)"
    );
    describe_gauge!(
        "media_archiver_notifications_pending",
        "Events not yet delivered to a [[notify]] target, by target"
    );
    describe_counter!(
        "media_archiver_erasures_total",
        "Erasures asked for (API or CLI), by outcome (done, refused, failed)"
    );
    describe_histogram!(
        "media_archiver_job_latency_seconds",
        "From webhook to verified archive"
    );
    describe_histogram!(
        "media_archiver_download_seconds",
        "Resolving and downloading one file into the spool"
    );
    describe_histogram!(
        "media_archiver_upload_seconds",
        "Writing one blob and its manifest to the store"
    );
}

/// Tells systemd (`Type=notify`) the daemon is ready, and keeps its watchdog
/// fed when `WatchdogSec` is set. Outside systemd this does nothing.
pub(crate) fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "systemd notification failed");
    }
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let every = Duration::from_micros(usec) / 2;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// Tells systemd the daemon is draining.
pub(crate) fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}
