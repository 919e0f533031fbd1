//! The notifier against a real outbox (SQLite) and a fake app over HTTP.

use std::sync::Arc;
use std::time::Duration;

use archiver_core::{Clock, SystemClock};
use media_notify::sign::SigningKey;
use media_notify::{EventData, Notifier, NotifyConfig, Target};
use retry_queue::conformance::job_of;
use retry_queue::{DeliveryFilter, DeliveryState, JobQueue, JobRecord, RetryPolicy, SqliteQueue};
use serde_json::{Value, json};
use test_support::app::AppSink;
use tokio_util::sync::CancellationToken;

/// The Standard Webhooks libraries' own example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WITHIN: Duration = Duration::from_secs(20);

/// Manifest-like data from the job alone; `None` for jobs named "erased".
#[derive(Debug)]
struct FromJob;

#[async_trait::async_trait]
impl EventData for FromJob {
    async fn archived(&self, job: &JobRecord, include_url: bool) -> Result<Option<Value>, String> {
        if job.id.ends_with("erased") {
            return Ok(None);
        }
        Ok(Some(json!({
            "message_id": job.message_id,
            "manifest_key": format!("manifests/{}.json", job.message_id),
            "include_url": include_url,
        })))
    }

    fn dead(&self, job: &JobRecord, reason: Option<&str>) -> Value {
        json!({ "id": job.id, "last_error": reason })
    }
}

fn target(name: &str, url: &str, max_age: &str) -> Target {
    let entry: NotifyConfig = toml::from_str(&format!(
        "name = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nmax_age = \"{max_age}\"\ntimeout = \"2s\""
    ))
    .expect("reads");
    entry.validate(0, &[]).expect("valid")
}

struct Setup {
    queue: Arc<dyn JobQueue>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

/// A queue with fast retries and a running notifier for `targets`.
async fn start(targets: Vec<Target>) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = RetryPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        multiplier: 2.0,
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let queue: Arc<dyn JobQueue> = Arc::new(
        SqliteQueue::open(&dir.path().join("queue.db"), policy, clock.clone()).expect("queue"),
    );
    let notifier = Arc::new(
        Notifier::new(queue.clone(), targets, Arc::new(FromJob), clock).expect("notifier"),
    );
    notifier.install_routes().await.expect("routes");
    let shutdown = CancellationToken::new();
    tokio::spawn(notifier.run(shutdown.clone(), Duration::from_secs(1)));
    Setup {
        queue,
        shutdown,
        _dir: dir,
    }
}

impl Setup {
    /// Enqueues, leases and completes (or kills) a job.
    async fn finish(&self, key: &str, archived: bool) {
        // The fixture's jobs are dated 2026-01-01: due in a day from now instead.
        let spec = job_of("acme", key, SystemClock.now_ms() + 86_400_000);
        let id = spec.id.clone();
        self.queue.enqueue(vec![spec]).await.expect("enqueue");
        let lease = self
            .queue
            .lease(10, Duration::from_secs(60))
            .await
            .expect("lease")
            .leases
            .into_iter()
            .find(|l| l.job.id == id)
            .expect("leased");
        if archived {
            self.queue.complete(&lease).await.expect("complete");
        } else {
            self.queue
                .fail(
                    &lease,
                    archiver_core::ErrorClass::Permanent,
                    "HTTP 404 from the CDN",
                )
                .await
                .expect("fail");
        }
    }

    async fn delivery_state(&self, id: &str) -> Option<DeliveryState> {
        let all = self
            .queue
            .outbox()
            .expect("outbox")
            .list_deliveries(&DeliveryFilter::default())
            .await
            .expect("list");
        all.into_iter().find(|d| d.id == id).map(|d| d.state)
    }

    async fn wait_for_state(&self, id: &str, state: DeliveryState) {
        let start = tokio::time::Instant::now();
        while self.delivery_state(id).await != Some(state) {
            assert!(start.elapsed() < WITHIN, "{id} never became {state:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_job_is_posted_once_signed_per_standard_webhooks() {
    let app = AppSink::start(&[]).await;
    let setup = start(vec![target("crm", &app.url(), "1h")]).await;
    setup.finish("img", true).await;

    let received = app.wait_for(1, WITHIN).await;
    let post = &received[0];
    assert_eq!(post.id, "crm:acme:img:media.archived");
    assert_eq!(post.content_type, "application/json");
    let timestamp: i64 = post.timestamp.parse().expect("unix seconds");
    assert!((SystemClock.now_ms() / 1000 - timestamp).abs() < 60);
    let key = SigningKey::from_secret(SECRET).unwrap();
    assert!(
        key.verify(&post.id, timestamp, &post.body, &post.signature),
        "signature {} does not verify",
        post.signature
    );
    let body = post.json();
    assert_eq!(body["type"], "media.archived");
    assert_eq!(body["data"]["message_id"], "wamid.img");
    assert_eq!(body["data"]["include_url"], false);
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    setup
        .wait_for_state("crm:acme:img:media.archived", DeliveryState::Delivered)
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.received().len(), 1, "delivered exactly once");
    setup.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_app_gets_the_same_webhook_id_until_it_accepts() {
    let app = AppSink::start(&[500, 500, 500]).await;
    let setup = start(vec![target("crm", &app.url(), "1h")]).await;
    setup.finish("img", true).await;

    let received = app.wait_for(4, WITHIN).await;
    assert!(
        received
            .iter()
            .all(|r| r.id == "crm:acme:img:media.archived")
    );
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 500, 200]
    );
    let key = SigningKey::from_secret(SECRET).unwrap();
    for post in &received {
        let ts: i64 = post.timestamp.parse().unwrap();
        assert!(key.verify(&post.id, ts, &post.body, &post.signature));
        assert_eq!(
            post.json()["timestamp"],
            received[0].json()["timestamp"],
            "the event's time is stable"
        );
    }
    setup
        .wait_for_state("crm:acme:img:media.archived", DeliveryState::Delivered)
        .await;
    setup.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_is_told_with_its_reason_and_an_unreachable_app_dies_at_max_age() {
    let app = AppSink::start(&[]).await;
    // A port reserved for this test, where nothing listens: every send
    // fails at once.
    let nowhere = format!("http://{}/hooks", test_support::ports::reserved_addr());
    let setup = start(vec![
        target("crm", &app.url(), "1h"),
        target("gone", &nowhere, "2s"),
    ])
    .await;
    setup.finish("broken", false).await;

    let received = app.wait_for(1, WITHIN).await;
    let body = received[0].json();
    assert_eq!(received[0].id, "crm:acme:broken:media.dead");
    assert_eq!(body["type"], "media.dead");
    assert_eq!(body["data"]["last_error"], "HTTP 404 from the CDN");
    setup
        .wait_for_state("gone:acme:broken:media.dead", DeliveryState::Dead)
        .await;
    let dead = setup
        .queue
        .outbox()
        .unwrap()
        .list_deliveries(&DeliveryFilter {
            target: Some("gone".into()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    let reason = dead[0].last_error.as_deref().unwrap_or_default();
    assert!(reason.starts_with("expired:"), "{reason}");
    assert!(reason.contains("cannot reach the target"), "{reason}");
    assert!(
        !reason.contains("127.0.0.1:9"),
        "no URL in the reason: {reason}"
    );
    setup.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_manifest_ends_the_delivery_without_a_post() {
    let app = AppSink::start(&[]).await;
    let setup = start(vec![target("crm", &app.url(), "1h")]).await;
    setup.finish("erased", true).await;
    setup
        .wait_for_state("crm:acme:erased:media.archived", DeliveryState::Dead)
        .await;
    assert!(app.received().is_empty());
    setup.shutdown.cancel();
}
