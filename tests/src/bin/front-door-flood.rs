//! `front-door-flood`: the release daemon, on its default `[server]` limits,
//! under floods of slow and bogus clients, while a provider keeps sending
//! real webhooks (issue 12). Not a test: it prints a table of the daemon's
//! memory and of what the legitimate webhooks got, one row per flood.
//!
//! ```text
//! cargo run --release -p e2e --bin front-door-flood -- [--seconds 30] [--attackers 2000]
//! ```
//!
//! Method:
//! - The daemon: `[server]` left at its defaults but for the address (so
//!   `max_connections` 1024, `max_inflight_body_bytes` 64 MiB,
//!   `max_body_bytes` 4 MiB, `body_read_timeout` 15 s, `header_read_timeout`
//!   10 s, `idle_timeout` 60 s), an SQLite queue, the fs store, a Green API
//!   and a Cloud API account with their credentials. Its workers find no
//!   provider to download from; the jobs wait in the queue, which is all a
//!   front-door measurement needs.
//! - The provider: [`LEGIT_PER_SEC`] Green API webhooks a second, each a
//!   new message with the right token, on a fresh connection, each given
//!   [`LEGIT_PATIENCE`] for its answer (a provider's timeout).
//! - The floods, one per phase, each keeping `--attackers` connections
//!   going (a closed one is reopened at once), from 127.0.0.2 so that the
//!   provider (127.0.0.1) is told apart in the table only:
//!   - `wrong token, 1 MiB body`: a wrong bearer, `Content-Length: 1 MiB`,
//!     all but the last byte of the body, then silence;
//!   - `signed route, stalled body`: the Cloud API route, whose HMAC needs
//!     the body: a plausible signature header, 1 MiB announced, all but the
//!     last byte sent, then silence;
//!   - `slow headers`: a request head one byte a second;
//!   - `idle connections`: connect and send nothing.
//! - Samples: the daemon's `VmRSS` every 200 ms (`/proc/<pid>/status`); the
//!   peak of each phase is its row's RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::accounts::{self, GREEN_WEBHOOK_TOKEN};
use e2e::process::proc_sample;
use e2e::{Daemon, now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Webhooks a second from the provider.
const LEGIT_PER_SEC: u64 = 20;
/// How long the provider waits for an answer.
const LEGIT_PATIENCE: Duration = Duration::from_secs(10);
const ONE_MIB: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flood {
    None,
    WrongTokenBigBody,
    SignedRouteStalledBody,
    SlowHeaders,
    IdleConnections,
}

impl Flood {
    const ALL: [Flood; 5] = [
        Flood::None,
        Flood::WrongTokenBigBody,
        Flood::SignedRouteStalledBody,
        Flood::SlowHeaders,
        Flood::IdleConnections,
    ];

    fn label(self) -> &'static str {
        match self {
            Flood::None => "no flood (baseline)",
            Flood::WrongTokenBigBody => "wrong token, 1 MiB body",
            Flood::SignedRouteStalledBody => "signed route, stalled body",
            Flood::SlowHeaders => "slow headers",
            Flood::IdleConnections => "idle connections",
        }
    }
}

#[derive(Debug, Default)]
struct Legit {
    sent: AtomicU64,
    ok: AtomicU64,
    /// Answers other than 200, and no answer within the patience.
    failed: AtomicU64,
    /// Latencies of the 200s, ms.
    latencies: std::sync::Mutex<Vec<u64>>,
}

#[derive(Debug, Default)]
struct Attack {
    /// Connections opened.
    opened: AtomicU64,
    /// Open now.
    open: AtomicUsize,
}

struct Row {
    flood: Flood,
    attackers_opened: u64,
    peak_rss_mib: f64,
    legit_sent: u64,
    legit_ok: u64,
    legit_failed: u64,
    p99_ms: u64,
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 30);
    let attackers = arg("--attackers", 2000) as usize;
    let workdir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&config(), workdir.path());
    let addr = daemon
        .base_url
        .strip_prefix("http://")
        .expect("http base url")
        .to_owned();
    let pid = daemon.pid();
    println!(
        "front-door-flood: {seconds} s a phase, {attackers} attackers, {LEGIT_PER_SEC} webhooks/s; daemon pid {pid} on {addr}"
    );

    let mut rows = Vec::new();
    for flood in Flood::ALL {
        rows.push(phase(flood, &addr, pid, attackers, Duration::from_secs(seconds)).await);
        // Let the daemon drop what the flood left before the next phase.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    print_table(&rows);
    drop(daemon);
}

async fn phase(flood: Flood, addr: &str, pid: u32, attackers: usize, length: Duration) -> Row {
    let until = Instant::now() + length;
    let legit = Arc::new(Legit::default());
    let attack = Arc::new(Attack::default());
    let mut tasks = tokio::task::JoinSet::new();
    if flood != Flood::None {
        for _ in 0..attackers {
            let (addr, attack) = (addr.to_owned(), Arc::clone(&attack));
            tasks.spawn(async move { attacker(flood, &addr, &attack, until).await });
        }
    }
    let provider = {
        let (addr, legit) = (addr.to_owned(), Arc::clone(&legit));
        tokio::spawn(async move { provider(&addr, &legit, until).await })
    };
    let mut peak_rss_kib = 0;
    while Instant::now() < until {
        if let Some(sample) = proc_sample(pid) {
            peak_rss_kib = peak_rss_kib.max(sample.rss_kib);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tasks.abort_all();
    provider.await.expect("provider task");
    let mut latencies = std::mem::take(&mut *legit.latencies.lock().unwrap());
    latencies.sort_unstable();
    let p99_ms = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    Row {
        flood,
        attackers_opened: attack.opened.load(Ordering::Relaxed),
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        legit_sent: legit.sent.load(Ordering::Relaxed),
        legit_ok: legit.ok.load(Ordering::Relaxed),
        legit_failed: legit.failed.load(Ordering::Relaxed),
        p99_ms,
    }
}

/// One hostile client: does its thing on a connection, and opens another
/// as soon as the daemon closes it, until `until`.
async fn attacker(flood: Flood, addr: &str, attack: &Attack, until: Instant) {
    while Instant::now() < until {
        let Ok(mut stream) = connect_from("127.0.0.2", addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        attack.opened.fetch_add(1, Ordering::Relaxed);
        attack.open.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::time::timeout_at(until.into(), hostile(flood, &mut stream)).await;
        attack.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one hostile connection sends; returns when the daemon closes it.
async fn hostile(flood: Flood, stream: &mut TcpStream) {
    let body_head = |path: &str, auth: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {ONE_MIB}\r\n\r\n"
        )
    };
    match flood {
        Flood::None => {}
        Flood::WrongTokenBigBody | Flood::SignedRouteStalledBody => {
            let head = if flood == Flood::WrongTokenBigBody {
                body_head("/webhooks/green", "Authorization: Bearer not-the-token\r\n")
            } else {
                body_head(
                    "/webhooks/cloud",
                    &format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64)),
                )
            };
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent < ONE_MIB - 1 {
                let n = chunk.len().min(ONE_MIB - 1 - sent);
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                sent += n;
            }
        }
        Flood::SlowHeaders => {
            for byte in b"POST /webhooks/green HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .chain(std::iter::repeat(&b'a'))
            {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Flood::IdleConnections => {}
    }
    // Wait for the daemon to answer or close.
    let mut sink = [0; 4096];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

async fn connect_from(source: &str, addr: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("source address"))?;
    socket.connect(addr.parse().expect("daemon address")).await
}

/// The provider: [`LEGIT_PER_SEC`] new webhooks a second, each on its own
/// connection, as gateways send them.
async fn provider(addr: &str, legit: &Arc<Legit>, until: Instant) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(LEGIT_PATIENCE)
        .build()
        .expect("client");
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / LEGIT_PER_SEC));
    let mut sends = tokio::task::JoinSet::new();
    let mut n: u64 = 0;
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let (client, legit) = (client.clone(), Arc::clone(legit));
        let url = format!("http://{addr}/webhooks/green");
        let body = green_api_webhook(n);
        sends.spawn(async move {
            legit.sent.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let answer = client
                .post(url)
                .bearer_auth(GREEN_WEBHOOK_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match answer {
                Ok(r) if r.status() == 200 => {
                    legit.ok.fetch_add(1, Ordering::Relaxed);
                    let ms = started.elapsed().as_millis() as u64;
                    legit.latencies.lock().unwrap().push(ms);
                }
                _ => {
                    legit.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while sends.join_next().await.is_some() {}
}

fn green_api_webhook(n: u64) -> String {
    serde_json::json!({
        "typeWebhook": "incomingMessageReceived",
        "instanceData": {"idInstance": 1101000001u64, "wid": "79001234567@c.us", "typeInstance": "whatsapp"},
        "timestamp": now(),
        "idMessage": format!("FLOOD{n:012}"),
        "senderData": {"chatId": "79001234568@c.us", "sender": "79001234568@c.us", "senderName": "Ann"},
        "messageData": {
            "typeMessage": "imageMessage",
            "fileMessageData": {"downloadUrl": "http://127.0.0.1:9/1101000001/x.jpg",
                "caption": "", "fileName": "x.jpg", "jpegThumbnail": "", "mimeType": "image/jpeg",
                "isForwarded": false, "forwardingScore": 0, "isAnimated": false}
        }
    })
    .to_string()
}

/// The daemon on its default `[server]` limits (not the test config's),
/// with a Green API and a Cloud API account on an address where nothing
/// answers.
fn config() -> String {
    let accounts = [
        accounts::green_api_at("http://127.0.0.1:9", "1101000001", "api-token"),
        accounts::cloud_api_at("http://127.0.0.1:9/v21.0", "access-token", "app-secret"),
    ]
    .concat();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[workers]
concurrency = 1

[retry]
initial = "1h"
max = "1h"

[log]
format = "json"

[storage]
backend = "fs"
path = "data/archive"

{accounts}"#
    )
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| flood | attacker connections opened | daemon peak RSS (MiB) | webhooks sent | 200 | failed | p99 of the 200s (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |",
            r.flood.label(),
            r.attackers_opened,
            r.peak_rss_mib,
            r.legit_sent,
            r.legit_ok,
            r.legit_failed,
            r.p99_ms
        );
    }
}
