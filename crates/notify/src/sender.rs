//! The sending side: one loop per target over the outbox.

use std::sync::Arc;
use std::time::Duration;

use archiver_core::{Classify as _, Clock, UnixMillis};
use retry_queue::{
    Claimed, Delivery, Disposition, JobQueue, JobRecord, NotifyEvent, Outbox, QueueError,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{NotifyError, Target};

/// Sends in flight to one target at most; more wait in the outbox.
pub const SENDS_PER_TARGET: usize = 16;

/// How often an idle target's loop looks for due deliveries.
const POLL: Duration = Duration::from_millis(500);

/// How long a claim outlives the send's own timeout (building the body
/// reads the manifest): a sender that dies mid-send leaves its deliveries
/// to be claimed again after `timeout + CLAIM_MARGIN`.
const CLAIM_MARGIN: Duration = Duration::from_secs(60);

/// How often `notifications_pending{target}` is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// Where an event's `data` comes from: the binary implements it over the
/// archive (the manifest, a presigned URL) and the admin API's job shape,
/// so that this crate depends on neither.
#[async_trait::async_trait]
pub trait EventData: Send + Sync + std::fmt::Debug {
    /// `data` of `media.archived`: the manifest's fields, `manifest_key`
    /// and, with `include_url` on a store that presigns, `url`. `Ok(None)`
    /// when the job has no manifest (erased since); `Err` when the store
    /// cannot be read now.
    async fn archived(&self, job: &JobRecord, include_url: bool) -> Result<Option<Value>, String>;

    /// `data` of `media.dead`: the job as the admin API shows it, as it
    /// was when it died: state `dead`, `last_error` the dead-letter reason
    /// (the job may have been retried since).
    fn dead(&self, job: &JobRecord, reason: Option<&str>) -> Value;
}

/// Sends the outbox's deliveries to the configured targets.
#[derive(Debug)]
pub struct Notifier {
    queue: Arc<dyn JobQueue>,
    targets: Vec<Target>,
    data: Arc<dyn EventData>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl Notifier {
    /// A notifier for `targets` (none: it only clears the routes). Redirects
    /// are not followed: a signed event goes where the operator said.
    pub fn new(
        queue: Arc<dyn JobQueue>,
        targets: Vec<Target>,
        data: Arc<dyn EventData>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("media-archiver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Unreachable(chain(&e)))?;
        Ok(Self {
            queue,
            targets,
            data,
            client,
            clock,
        })
    }

    fn outbox(&self) -> Result<&dyn Outbox, QueueError> {
        self.queue.outbox().ok_or_else(|| {
            QueueError::Config("this queue backend keeps no outbox for [[notify]]".into())
        })
    }

    /// Replaces the outbox's routes with the configured targets' (at
    /// start, before any job runs, so no transition misses a new target).
    pub async fn install_routes(&self) -> Result<(), QueueError> {
        let routes: Vec<_> = self.targets.iter().flat_map(Target::routes).collect();
        let outbox = match self.queue.outbox() {
            Some(outbox) => outbox,
            None if routes.is_empty() => return Ok(()),
            None => return self.outbox().map(|_| ()),
        };
        let removed = outbox.set_routes(&routes).await?;
        if removed > 0 {
            tracing::warn!(
                notifications = removed,
                "pending notifications to targets no longer in [[notify]] were given up"
            );
        }
        Ok(())
    }

    /// Runs one loop per target until `shutdown`, then waits up to `grace`
    /// for the sends in flight (an unfinished one is claimed again after
    /// its hold: at least once).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        if self.targets.is_empty() {
            return;
        }
        let loops = TaskTracker::new();
        for index in 0..self.targets.len() {
            loops.spawn(self.clone().serve_target(index, shutdown.clone(), grace));
        }
        loops.spawn(self.clone().refresh_pending(shutdown));
        loops.close();
        loops.wait().await;
    }

    async fn serve_target(
        self: Arc<Self>,
        index: usize,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let target = &self.targets[index];
        let hold = target.timeout + CLAIM_MARGIN;
        let permits = Arc::new(Semaphore::new(SENDS_PER_TARGET));
        let sends = TaskTracker::new();
        while !shutdown.is_cancelled() {
            let free = permits.available_permits();
            let Claimed {
                deliveries,
                expired,
            } = match self.claim(target, free, hold).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(notify_target = target.name, error = %e, "cannot read the notification outbox");
                    Claimed::default()
                }
            };
            for delivery in &expired {
                record_dead(
                    target,
                    delivery,
                    delivery.last_error.as_deref().unwrap_or_default(),
                );
            }
            let full = free > 0 && deliveries.len() == free;
            for delivery in deliveries {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let notifier = self.clone();
                sends.spawn(async move {
                    notifier.send(index, delivery).await;
                    drop(permit);
                });
            }
            if full {
                continue; // more may be due
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
        sends.close();
        if tokio::time::timeout(grace, sends.wait()).await.is_err() {
            tracing::info!(
                notify_target = target.name,
                "notifications still in flight at shutdown; they are sent again after restart"
            );
        }
    }

    async fn claim(
        &self,
        target: &Target,
        free: usize,
        hold: Duration,
    ) -> Result<Claimed, QueueError> {
        if free == 0 {
            return Ok(Claimed::default());
        }
        self.outbox()?
            .claim_deliveries(&target.name, free, hold)
            .await
    }

    /// One attempt of one claimed delivery, and its outcome recorded. The
    /// attempt (building the body included) ends well within the claim's
    /// hold, so no other sender takes the delivery while it runs.
    async fn send(&self, index: usize, delivery: Delivery) {
        let target = &self.targets[index];
        let limit = target.timeout + CLAIM_MARGIN / 2;
        let sent = tokio::time::timeout(limit, self.attempt(target, &delivery))
            .await
            .unwrap_or(Err(NotifyError::Timeout(limit)));
        let recorded = match sent {
            Ok(()) => self.record_delivered(target, &delivery).await,
            Err(error) => self.record_failure(target, &delivery, &error).await,
        };
        match recorded {
            Ok(()) => {}
            Err(QueueError::LeaseLost { .. }) => {
                tracing::info!(
                    notify_target = target.name,
                    delivery = delivery.id,
                    "notification was claimed again meanwhile; its outcome is the other sender's"
                );
            }
            Err(e) => {
                tracing::warn!(notify_target = target.name, delivery = delivery.id, error = %e, "cannot record a notification's outcome; it is sent again after its hold");
            }
        }
    }

    /// Records, logs and counts a 2xx answer.
    async fn record_delivered(
        &self,
        target: &Target,
        delivery: &Delivery,
    ) -> Result<(), QueueError> {
        self.outbox()?.delivered(delivery).await?;
        tracing::info!(
            notify_target = target.name,
            delivery = delivery.id,
            attempts = delivery.attempts,
            "notification delivered"
        );
        count(target, "delivered");
        Ok(())
    }

    /// Records, logs and counts a failed send: retried later, or dead.
    async fn record_failure(
        &self,
        target: &Target,
        delivery: &Delivery,
        error: &NotifyError,
    ) -> Result<(), QueueError> {
        let message = error.to_string();
        match self
            .outbox()?
            .delivery_failed(delivery, error.class(), &message)
            .await?
        {
            Disposition::RetryAt(at) => {
                tracing::info!(
                    notify_target = target.name,
                    delivery = delivery.id,
                    attempts = delivery.attempts,
                    error = message,
                    retry_in_ms = at - self.clock.now_ms(),
                    "notification failed; retrying later"
                );
                count(target, "failed");
            }
            Disposition::Dead { reason } => record_dead(target, delivery, &reason),
        }
        Ok(())
    }

    /// Builds, signs and posts the event.
    async fn attempt(&self, target: &Target, delivery: &Delivery) -> Result<(), NotifyError> {
        let body = self.body(target, delivery).await?;
        let timestamp = self.clock.now_ms().div_euclid(1000);
        let answer = self
            .client
            .post(target.url.clone())
            .timeout(target.timeout)
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                target.key.sign(&delivery.id, timestamp, &body),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    NotifyError::Timeout(target.timeout)
                } else {
                    NotifyError::Unreachable(chain(&e.without_url()))
                }
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = matches!(status.as_u16(), 429 | 503)
            .then(|| answer.headers().get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(NotifyError::Status {
            status: status.as_u16(),
            retry_after,
        })
    }

    /// `{"type", "timestamp" (of the transition, stable across retries),
    /// "data"}`.
    async fn body(&self, target: &Target, delivery: &Delivery) -> Result<Vec<u8>, NotifyError> {
        let job = self.queue.get(&delivery.job_id).await?.ok_or_else(|| {
            NotifyError::Gone(format!("job {} is no longer in the queue", delivery.job_id))
        })?;
        let data = match delivery.event {
            NotifyEvent::Archived => self
                .data
                .archived(&job, target.include_url)
                .await
                .map_err(NotifyError::Data)?
                .ok_or_else(|| {
                    NotifyError::Gone(format!(
                        "job {}'s manifest is no longer in the archive",
                        job.id
                    ))
                })?,
            NotifyEvent::Dead => self.data.dead(&job, delivery.job_error.as_deref()),
        };
        let event = json!({
            "type": delivery.event.as_str(),
            "timestamp": rfc3339(delivery.created_at),
            "data": data,
        });
        Ok(serde_json::to_vec(&event).expect("a JSON value serializes"))
    }

    /// Keeps `notifications_pending{target}` current (0 for a target with
    /// none pending).
    async fn refresh_pending(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Ok(pending) = self.outbox().map(|o| o.pending_deliveries()) {
                match pending.await {
                    Ok(pending) => {
                        for target in &self.targets {
                            let n = pending.get(&target.name).copied().unwrap_or_default();
                            metrics::gauge!("media_archiver_notifications_pending", "target" => target.name.clone())
                                .set(n as f64);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot count pending notifications"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(GAUGE_EVERY) => {}
            }
        }
    }
}

/// Counts one outcome of a send to `target`.
fn count(target: &Target, outcome: &'static str) {
    metrics::counter!(
        "media_archiver_notifications_total",
        "target" => target.name.clone(),
        "outcome" => outcome
    )
    .increment(1);
}

/// Logs and counts a delivery given up on, wherever that was decided (a
/// failed send, or a claim that found it past its deadline).
fn record_dead(target: &Target, delivery: &Delivery, reason: &str) {
    tracing::warn!(
        notify_target = target.name,
        delivery = delivery.id,
        attempts = delivery.attempts,
        reason,
        "notification dead: it will not be sent again unless retried"
    );
    count(target, "dead");
}

fn rfc3339(ms: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An error and its causes, on one line (reqwest's own message alone is
/// "error sending request").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
