//! What an operator sees: metrics, readiness, and their agreement with what
//! actually happened.

use std::time::Duration;

use e2e::accounts::GREEN_WEBHOOK_TOKEN as TOKEN;
use e2e::{Daemon, StoreUnderTest, accounts, bytes, config, metric_sample as sample, now};
use test_support::green_api::FakeGreenApi;

const CHAT: &str = "79001234568@c.us";

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_webhooks_archives_failures_and_queue_states() {
    let fake = FakeGreenApi::start().await;
    let daemon =
        Daemon::start_in_temp_dir(&config(&StoreUnderTest::Fs, &accounts::green_api(&fake)));

    let mut archived_bytes = 0;
    for (i, len) in [10_000usize, 20_000].into_iter().enumerate() {
        let id = format!("MET{i:029}");
        let url = fake.add_file(CHAT, &id, bytes(len, i as u64), "image/jpeg", "m.jpg");
        let hook = fake.file_webhook(
            "incomingMessageReceived",
            "imageMessage",
            CHAT,
            &id,
            &url,
            now(),
        );
        assert_eq!(daemon.webhook("green", &hook, TOKEN).await.0, 200);
        daemon
            .wait_for_job(&format!("green:{id}"), "done", Duration::from_secs(30))
            .await;
        archived_bytes += len;
    }
    let mut dead = fake.file_webhook(
        "incomingMessageReceived",
        "videoMessage",
        CHAT,
        "METDEAD0000000000000000000000001",
        "https://x/y",
        now(),
    );
    dead["messageData"]["fileMessageData"]["downloadUrl"] = serde_json::json!("{{SWE002}}");
    assert_eq!(daemon.webhook("green", &dead, TOKEN).await.0, 200);
    daemon
        .wait_for_job(
            "green:METDEAD0000000000000000000000001",
            "dead",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(daemon.webhook("green", &dead, "wrong-token").await.0, 401);

    let text = reqwest::get(daemon.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let get =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        get(r#"media_archiver_webhooks_total{account="green",outcome="ok"}"#),
        3.0
    );
    assert_eq!(
        get(r#"media_archiver_webhooks_total{account="green",outcome="unauthorized"}"#),
        1.0
    );
    assert_eq!(
        get(r#"media_archiver_archived_total{account="green"}"#),
        2.0
    );
    assert_eq!(
        sample(&text, r#"media_archiver_streamed_total{account="green"}"#),
        None,
        "Green API vouches for no hash: its files are staged, never streamed"
    );
    assert_eq!(
        get(r#"media_archiver_archived_bytes_total{account="green"}"#),
        archived_bytes as f64
    );
    assert_eq!(
        get(r#"media_archiver_dead_total{account="green",reason="media_unavailable"}"#),
        1.0
    );
    assert_eq!(get(r#"media_archiver_jobs{state="done"}"#), 2.0);
    assert_eq!(get(r#"media_archiver_jobs{state="dead"}"#), 1.0);
    assert_eq!(get(r#"media_archiver_jobs{state="pending"}"#), 0.0);
    assert_eq!(get("media_archiver_jobs_at_risk"), 0.0);
    assert_eq!(get("media_archiver_job_latency_seconds_count"), 2.0);
    assert_eq!(get("media_archiver_download_seconds_count"), 2.0);
    assert!(
        text.contains("media_archiver_upload_seconds_bucket{le=\"0.01\"}"),
        "{text}"
    );
    assert!(!text.contains(fake.api_token()), "no secret in metrics");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_503_when_the_archive_is_gone() {
    let fake = FakeGreenApi::start().await;
    let daemon =
        Daemon::start_in_temp_dir(&config(&StoreUnderTest::Fs, &accounts::green_api(&fake)));
    assert_eq!(
        reqwest::get(daemon.url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    std::fs::remove_dir_all(daemon.workdir.join("data/archive")).unwrap();
    let response = reqwest::get(daemon.url("/readyz")).await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().starts_with("store"),
        "{body}"
    );
    assert_eq!(
        reqwest::get(daemon.url("/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "alive all the same"
    );
}
