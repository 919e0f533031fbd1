//! `waha-burst`: can the daemon fetch a burst of WAHA media within WAHA's
//! 180-second file lifetime on this machine? Not a test: it prints a figure
//! (docs/providers/waha.md, "Sizing").
//!
//! ```text
//! cargo build --release -p media-archiver
//! cargo run --release -p e2e --bin waha-burst                  # 500 files, 16 workers
//! cargo run --release -p e2e --bin waha-burst -- 2000 32       # files, workers
//! ```
//!
//! Method: the fake WAHA (files expire 180 s after WAHA downloaded them,
//! as by default), one single-node Garage, and the daemon with an S3 store,
//! the SSRF guard on and `workers.concurrency` as given. The burst is a
//! WhatsApp-like mix (80 % images of 150 KB, 15 % voice notes of 30 KB, 5 %
//! documents of 2 MB), every file downloaded by WAHA first and its webhook
//! then posted by 32 concurrent senders, as WAHA delivers them. Timed from
//! the first download to the last job `done`; files that expired before
//! the daemon fetched them show up as re-downloads (`gone`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{StoreUnderTest, accounts, bytes, guarded_config};
use test_support::garage::Garage;
use test_support::waha::{Engine, FakeWaha, MediaShape};

const SENDERS: usize = 32;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: waha-burst [FILES] [WORKERS]"))
        .collect();
    let files = args.first().copied().unwrap_or(500);
    let workers = args.get(1).copied().unwrap_or(16);
    let garage = Garage::start().expect("garage is needed (cargo install garage)");
    let store = StoreUnderTest::garage(&garage);
    let fake = FakeWaha::start().await;
    let config = guarded_config(&store, &accounts::waha(&fake))
        .replace("concurrency = 4", &format!("concurrency = {workers}"))
        .replace("read_timeout = \"2s\"", "read_timeout = \"60s\"")
        .replace("lease = \"30s\"", "lease = \"5m\"");
    let daemon = e2e::Daemon::start_in_temp_dir(&config);

    let started = Instant::now();
    let mut bodies = Vec::with_capacity(files);
    let mut total_bytes = 0;
    for i in 0..files {
        let (mime, size) = match i % 20 {
            0 => ("application/pdf", 2_000_000),
            1..=3 => ("audio/ogg", 30_000),
            _ => ("image/jpeg", 150_000),
        };
        total_bytes += size;
        let chat = format!("{:011}@c.us", 10_000_000_000u64 + (i % 50) as u64);
        let id = fake.add_message(
            Engine::Noweb,
            &chat,
            false,
            bytes(size, i as u64),
            mime,
            None,
        );
        let hook = fake.webhook(&id, "message", MediaShape::Downloaded);
        let raw = serde_json::to_vec(&hook).expect("serialize");
        let headers = fake.webhook_headers(&raw);
        bodies.push((raw, headers));
    }
    let queue = Arc::new(Mutex::new(bodies));
    let url = daemon.url("/webhooks/waha");
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (queue, url) = (Arc::clone(&queue), url.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let Some((raw, headers)) = queue.lock().expect("queue").pop() else {
                    return;
                };
                let mut request = client.post(&url).body(raw);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let status = request.send().await.expect("post a webhook").status();
                assert_eq!(status.as_u16(), 200, "a webhook was refused");
            }
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent.expect("a sender failed");
    }
    let posted = started.elapsed();
    let stats = daemon.wait_until_idle(Duration::from_secs(1800)).await;
    let archived = started.elapsed();
    let done = stats["by_state"]["done"].as_u64().unwrap_or(0);
    let dead = stats["by_state"]["dead"].as_u64().unwrap_or(0);
    let gone = daemon
        .metric(r#"media_archiver_redownloads_total{account="waha",reason="gone"}"#)
        .await;
    println!(
        "waha-burst: {files} files ({:.1} MB), {workers} workers: webhooks posted in {:.1} s, \
         all archived in {:.1} s ({}), done {done}, dead {dead}, re-downloaded after expiry {gone}",
        total_bytes as f64 / 1e6,
        posted.as_secs_f64(),
        archived.as_secs_f64(),
        if archived < Duration::from_secs(180) {
            "within WAHA's 180 s"
        } else {
            "NOT within WAHA's 180 s"
        },
    );
}
