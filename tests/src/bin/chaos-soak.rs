//! `chaos-soak`: N minutes of mixed webhooks against the real daemon while
//! everything around it fails, then proof that nothing acknowledged was lost
//! (issue 12). Not a test: it prints a table, and exits 0 only when no
//! acknowledged job is lost and no spool file is left.
//!
//! ```text
//! cargo run --release -p e2e --bin chaos-soak -- --minutes 30 [--seed N] [--single-node]
//! ```
//!
//! Method (RELIABILITY.md has the long form):
//! - The stage: the release daemon (SQLite queue, S3 store) on a fixed
//!   127.0.0.1 port, so that a restarted daemon is where providers expect
//!   it; a three-node Garage cluster (replication factor 3, node 0 is the
//!   daemon's endpoint), or one node with `--single-node`; the fakes of
//!   every provider: Green API, CodeChat and Evolution (both over the fake
//!   WhatsApp CDN, direct mode), On-Prem, Cloud API and NXCloud. Every
//!   account has its webhook credentials ([`accounts_toml`]).
//! - Traffic: about [`RATE_PER_SEC`] webhooks a second, each a new media
//!   file (distinct bytes, 512 B to 512 KiB, a few of 2-4 MiB) for a random
//!   provider, signed as that provider signs; [`DUPLICATE_SHARE`] of the
//!   posts redeliver an earlier webhook; a webhook not answered 200 is
//!   redelivered later, as providers do.
//! - Provider faults, at random and transient by design: 5xx, 429 with
//!   `Retry-After`, stalls longer than the daemon's read timeout, truncated
//!   bodies, expired links, late and lost On-Prem store callbacks, expired
//!   On-Prem tokens; per file (on its link or CDN blob) and per API.
//! - Infrastructure chaos, one event every 12-30 s, kinds in shuffled
//!   rounds so that each occurs: `kill -9` of the daemon, SIGTERM of the
//!   daemon (each restarted on the same workdir, queue and port after up to
//!   2 s), and an outage of the whole S3 store (5-15 s). Once, between 30 %
//!   and 60 % of the run, one cluster node is lost for good.
//! - The end: traffic stops, unacknowledged webhooks are redelivered once
//!   more, the queue is waited for (bounded), every job is read from the
//!   admin API, every manifest and blob from the store (blob bytes hashed),
//!   and the daemon is stopped with SIGTERM; its spool dir must be empty.
//!
//! Every loop is bounded by the run's deadline or a count; nothing asserts
//! on timing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use e2e::accounts::{
    self, CODECHAT_WEBHOOK_TOKEN, EVOLUTION_JWT_SECRET, GREEN_WEBHOOK_TOKEN, ONPREM_WEBHOOK_TOKEN,
};
use e2e::{
    Archive, Daemon, StoreUnderTest, bytes as random_bytes, config, files_under, now, sha256_hex,
};
use serde_json::Value;
use test_support::codechat::FakeCodeChat;
use test_support::evolution::FakeEvolution;
use test_support::garage::{CLUSTER_NODES, Garage, GarageCluster};
use test_support::green_api::{FakeGreenApi, FileFault};
use test_support::meta::{FakeCloudApi, FakeOnPrem, GraphFault, HashEncoding, StoreCallback};
use test_support::nxcloud::{FakeNxcloud, NxFault};
use test_support::whatsapp_cdn::{CdnFault, FakeWhatsappCdn};

/// New webhooks (and redeliveries) posted per second, on average.
const RATE_PER_SEC: f64 = 3.0;
/// Share of posts that redeliver an earlier webhook (a duplicate).
const DUPLICATE_SHARE: f64 = 0.15;
/// Share of new files that get faults on their own link or blob.
const FILE_FAULT_SHARE: f64 = 0.35;
/// A stall longer than the daemon's `fetch.read_timeout` (2 s in the
/// harness config), so that it fails the download.
const STALL: Duration = Duration::from_secs(3);
/// How often the sampler reads the daemon's /proc entries.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How long the end waits for the queue to drain.
const IDLE_WAIT: Duration = Duration::from_secs(300);
/// How long a SIGTERMed daemon may take to exit (shutdown_grace is 5 s).
const STOP_WAIT: Duration = Duration::from_secs(30);
/// Webhooks in flight at once, at most.
const MAX_IN_FLIGHT: usize = 32;
/// Redeliveries of a webhook that was never answered 200.
const MAX_REDELIVERIES: u32 = 8;

const GREEN_CHAT: &str = "79001234568@c.us";
const BAILEYS_CHAT: &str = "5511988887777@s.whatsapp.net";
const NX_FROM: &str = "6281234567890";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Provider {
    Green,
    CodeChat,
    Evolution,
    OnPrem,
    Cloud,
    Nx,
}

impl Provider {
    const ALL: [Provider; 6] = [
        Provider::Green,
        Provider::CodeChat,
        Provider::Evolution,
        Provider::OnPrem,
        Provider::Cloud,
        Provider::Nx,
    ];

    /// The account name in [`accounts_toml`].
    fn account(self) -> &'static str {
        match self {
            Provider::Green => "green",
            Provider::CodeChat => "cc",
            Provider::Evolution => "evo",
            Provider::OnPrem => "onprem",
            Provider::Cloud => "cloud",
            Provider::Nx => "nx",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Provider::Green => "Green API",
            Provider::CodeChat => "CodeChat",
            Provider::Evolution => "Evolution",
            Provider::OnPrem => "On-Prem",
            Provider::Cloud => "Cloud API",
            Provider::Nx => "NXCloud",
        }
    }
}

/// Every fake provider.
struct Fakes {
    green: FakeGreenApi,
    cdn: FakeWhatsappCdn,
    codechat: FakeCodeChat,
    evolution: FakeEvolution,
    onprem: FakeOnPrem,
    cloud: FakeCloudApi,
    nx: FakeNxcloud,
}

/// The `[[accounts]]` of the soak, one per provider, each with the webhook
/// credentials the daemon checks.
fn accounts_toml(f: &Fakes) -> String {
    [
        accounts::green_api(&f.green),
        accounts::codechat(&f.codechat, &f.cdn),
        accounts::evolution(&f.evolution, &f.cdn),
        accounts::onprem(&f.onprem, "5s"),
        accounts::cloud_api(&f.cloud),
        accounts::nxcloud(&f.nx, f.nx.access_secret()),
    ]
    .concat()
}

/// The harness config with the soak's accounts, on a fixed port, with a
/// short lease (jobs a `kill -9` left leased run again after 10 s).
fn soak_config(store: &StoreUnderTest, fakes: &Fakes, port: u16) -> String {
    config(store, &accounts_toml(fakes))
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace("lease = \"30s\"", "lease = \"10s\"")
        .replace("concurrency = 4", "concurrency = 8")
}

// ---------------------------------------------------------------------------
// Randomness: one seed drives every choice the soak makes (the fakes pick
// their own ids).

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        Duration::from_secs_f64(self.range(lo, hi))
    }

    /// A child generator for another task.
    fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

// ---------------------------------------------------------------------------
// What was sent and what came back.

/// A media type as each provider names it.
#[derive(Clone, Copy)]
struct Kind {
    meta: &'static str,
    mime: &'static str,
    message_type: &'static str,
    file_name: &'static str,
}

const KINDS: [Kind; 4] = [
    Kind {
        meta: "image",
        mime: "image/jpeg",
        message_type: "imageMessage",
        file_name: "photo.jpg",
    },
    Kind {
        meta: "video",
        mime: "video/mp4",
        message_type: "videoMessage",
        file_name: "clip.mp4",
    },
    Kind {
        meta: "audio",
        mime: "audio/ogg",
        message_type: "audioMessage",
        file_name: "voice.ogg",
    },
    Kind {
        meta: "document",
        mime: "application/pdf",
        message_type: "documentMessage",
        file_name: "report.pdf",
    },
];

/// One announced media file.
struct Message {
    provider: Provider,
    /// `{account}:{id}`, the daemon's job id.
    job_id: String,
    /// What the manifest is named after.
    message_id: String,
    sha256: String,
    size: usize,
    webhook: Value,
    /// Faults put on this file's own link or blob.
    faults: Vec<&'static str>,
    acked: bool,
    posts: u32,
}

#[derive(Default)]
struct Ledger {
    messages: Vec<Message>,
    posts: u64,
    duplicate_posts: u64,
    redelivery_posts: u64,
    acked_posts: u64,
    /// Non-200 answers and transport errors, by kind.
    refused: BTreeMap<String, u64>,
    /// `duplicates` the daemon reported in its 200 answers.
    daemon_duplicates: u64,
    /// (message index, when) of webhooks to redeliver.
    redeliver: VecDeque<(usize, Instant)>,
    /// Faults injected, by "provider: kind".
    faults: BTreeMap<String, u64>,
}

impl Ledger {
    fn fault(&mut self, provider: Provider, kind: &str) {
        *self
            .faults
            .entry(format!("{}: {kind}", provider.label()))
            .or_default() += 1;
    }
}

/// What the tasks share.
struct Ctx {
    fakes: Fakes,
    http: reqwest::Client,
    base_url: String,
    started: Instant,
    ledger: Mutex<Ledger>,
    /// The running daemon's pid, 0 while it is down.
    pid: AtomicU32,
    stop_sampling: AtomicBool,
}

impl Ctx {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// A new file for a random provider: registered with its fake, faults
/// attached (sometimes), and its webhook built.
fn new_message(ctx: &Ctx, rng: &mut Rng, n: u64) -> Message {
    let f = &ctx.fakes;
    let provider = rng.pick(&Provider::ALL);
    let kind = rng.pick(&KINDS);
    let size = if rng.chance(0.02) {
        rng.range(2.0 * 1048576.0, 4.0 * 1048576.0) as usize
    } else {
        // Log-uniform between 512 B and 512 KiB.
        rng.range(512f64.ln(), (512.0 * 1024f64).ln()).exp() as usize
    };
    let content = random_bytes(size, rng.next_u64());
    let sha256 = sha256_hex(&content);
    let faulty = rng.chance(FILE_FAULT_SHARE);
    let mut faults = Vec::new();
    let now = now();
    let (id, message_id, webhook) = match provider {
        Provider::Green => {
            let id = format!("SOAK{n:016X}{:012X}", rng.next_u64() >> 16);
            let url = f
                .green
                .add_file(GREEN_CHAT, &id, content, kind.mime, kind.file_name);
            if faulty {
                let picks = 1 + rng.below(2);
                let mut injected = Vec::new();
                for _ in 0..picks {
                    let (fault, name) = match rng.below(6) {
                        0 => (FileFault::Status(500), "5xx"),
                        1 => (FileFault::Status(503), "5xx"),
                        2 => (
                            FileFault::TooManyRequests {
                                retry_after_secs: 1,
                            },
                            "429 + Retry-After",
                        ),
                        3 => (FileFault::Stall(STALL), "stall"),
                        4 => (FileFault::Truncate(size / 2), "truncation"),
                        _ => (FileFault::Gone, "expired link"),
                    };
                    injected.push(fault);
                    faults.push(name);
                }
                f.green.inject_file_faults(&url, injected);
            }
            let hook = f.green.file_webhook(
                "incomingMessageReceived",
                kind.message_type,
                GREEN_CHAT,
                &id,
                &url,
                now,
            );
            (id.clone(), id, hook)
        }
        Provider::CodeChat | Provider::Evolution => {
            let stub = f.cdn.add_media(
                kind.message_type,
                content,
                kind.mime,
                (kind.meta == "document").then_some(kind.file_name),
            );
            if faulty {
                let picks = 1 + rng.below(2);
                let mut injected = Vec::new();
                for _ in 0..picks {
                    let (fault, name) = match rng.below(4) {
                        0 => (CdnFault::Status(500), "5xx"),
                        1 => (CdnFault::Status(503), "5xx"),
                        2 => (CdnFault::Status(429), "429 (no Retry-After)"),
                        _ => (CdnFault::Truncate(size / 2), "truncation"),
                    };
                    injected.push(fault);
                    faults.push(name);
                }
                f.cdn.inject_faults(&stub, injected);
            }
            let id = format!("3EB0SOAK{n:012X}{:08X}", rng.next_u64() >> 32);
            let hook = if provider == Provider::CodeChat {
                f.codechat.upsert_webhook(&id, BAILEYS_CHAT, &stub, now)
            } else {
                f.evolution
                    .upsert_webhook(&id, BAILEYS_CHAT, &stub, now, None)
            };
            (id.clone(), id, hook)
        }
        Provider::OnPrem => {
            let auto_download = rng.chance(0.3);
            let media = f
                .onprem
                .add_media(kind.meta, content, kind.mime, auto_download);
            let message_id = format!("gBGGSOAK{n:012X}{:08X}", rng.next_u64() >> 32);
            let hook = f
                .onprem
                .message_webhook(&media, &message_id, now, HashEncoding::Hex);
            (media, message_id, hook)
        }
        Provider::Cloud => {
            let media = f.cloud.add_media(kind.meta, content, kind.mime);
            let message_id = format!("wamid.SOAK{n:012X}{:08X}", rng.next_u64() >> 32);
            let hook = f
                .cloud
                .message_webhook(&media, &message_id, now, HashEncoding::Base64);
            (media, message_id, hook)
        }
        Provider::Nx => {
            let media = f.nx.add_media(content, kind.mime, kind.file_name);
            let message_id = format!("wamid.NXSOAK{n:012X}{:08X}", rng.next_u64() >> 32);
            let hook =
                f.nx.message_webhook(kind.meta, &media, &message_id, NX_FROM, now);
            (media, message_id, hook)
        }
    };
    if !faults.is_empty() {
        let mut ledger = ctx.ledger();
        for name in &faults {
            ledger.fault(provider, name);
        }
    }
    Message {
        provider,
        job_id: format!("{}:{id}", provider.account()),
        message_id,
        sha256,
        size,
        webhook,
        faults,
        acked: false,
        posts: 0,
    }
}

/// Posts one webhook as its provider would (signed, with its credentials).
async fn post(ctx: &Ctx, provider: Provider, webhook: &Value) -> Result<(u16, Value), String> {
    let f = &ctx.fakes;
    let body = serde_json::to_vec(webhook).map_err(|e| e.to_string())?;
    let mut request = ctx
        .http
        .post(format!("{}/webhooks/{}", ctx.base_url, provider.account()))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(15));
    request = match provider {
        Provider::Green => request.bearer_auth(GREEN_WEBHOOK_TOKEN),
        Provider::CodeChat => request.bearer_auth(CODECHAT_WEBHOOK_TOKEN),
        Provider::Evolution => {
            request.bearer_auth(FakeEvolution::webhook_jwt(EVOLUTION_JWT_SECRET, 0))
        }
        Provider::OnPrem => request.bearer_auth(ONPREM_WEBHOOK_TOKEN),
        Provider::Cloud => request.header("x-hub-signature-256", f.cloud.sign(&body)),
        Provider::Nx => {
            for (k, v) in f.nx.signed_headers("mo", &body) {
                request = request.header(k, v);
            }
            request
        }
    };
    let response = request.body(body).send().await.map_err(|e| {
        if e.is_connect() {
            "connection refused".to_owned()
        } else if e.is_timeout() {
            "timeout".to_owned()
        } else {
            "connection broken".to_owned()
        }
    })?;
    let status = response.status().as_u16();
    let answer = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, answer))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    New,
    Duplicate,
    Redelivery,
}

/// Posts message `i`'s webhook and records the outcome.
async fn post_and_record(ctx: Arc<Ctx>, i: usize, why: Why) {
    let (provider, webhook) = {
        let mut ledger = ctx.ledger();
        ledger.posts += 1;
        match why {
            Why::Duplicate => ledger.duplicate_posts += 1,
            Why::Redelivery => ledger.redelivery_posts += 1,
            Why::New => {}
        }
        let m = &mut ledger.messages[i];
        m.posts += 1;
        (m.provider, m.webhook.clone())
    };
    let outcome = post(&ctx, provider, &webhook).await;
    let mut ledger = ctx.ledger();
    match outcome {
        Ok((200, answer)) => {
            ledger.acked_posts += 1;
            ledger.daemon_duplicates += answer["duplicates"].as_u64().unwrap_or(0);
            ledger.messages[i].acked = true;
        }
        other => {
            let kind = match other {
                Ok((status, _)) => format!("HTTP {status}"),
                Err(e) => e,
            };
            *ledger.refused.entry(kind).or_default() += 1;
            let (acked, posts) = (ledger.messages[i].acked, ledger.messages[i].posts);
            if !acked && posts <= MAX_REDELIVERIES {
                let due = Instant::now() + Duration::from_secs(1 + u64::from(posts));
                ledger.redeliver.push_back((i, due));
            }
        }
    }
}

/// Posts new files, duplicates and redeliveries until `deadline`.
async fn send_loop(ctx: Arc<Ctx>, mut rng: Rng, deadline: Instant) {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        while in_flight.len() >= MAX_IN_FLIGHT {
            in_flight.join_next().await;
        }
        let (due, count) = {
            let mut ledger = ctx.ledger();
            let due = match ledger.redeliver.front() {
                Some(&(i, at)) if at <= Instant::now() => {
                    ledger.redeliver.pop_front();
                    Some(i)
                }
                _ => None,
            };
            (due, ledger.messages.len())
        };
        let (i, why) = if let Some(i) = due {
            (i, Why::Redelivery)
        } else if count > 0 && rng.chance(DUPLICATE_SHARE) {
            (rng.below(count), Why::Duplicate)
        } else {
            let message = new_message(&ctx, &mut rng, n);
            n += 1;
            let mut ledger = ctx.ledger();
            ledger.messages.push(message);
            (ledger.messages.len() - 1, Why::New)
        };
        in_flight.spawn(post_and_record(ctx.clone(), i, why));
        tokio::time::sleep(rng.secs(0.5 / RATE_PER_SEC, 1.5 / RATE_PER_SEC)).await;
    }
    while in_flight.join_next().await.is_some() {}
}

/// Injects a provider-wide fault every 1-4 s until `deadline`.
async fn api_fault_loop(ctx: Arc<Ctx>, mut rng: Rng, deadline: Instant) {
    let f = &ctx.fakes;
    while Instant::now() < deadline {
        tokio::time::sleep(rng.secs(1.0, 4.0)).await;
        let (provider, name) = match rng.below(11) {
            0 => {
                // Not 500: Green API's 500 "Internal error when downloading
                // file" means WhatsApp lost the file, permanent by design
                // after two attempts (providers.md section 1).
                f.green
                    .inject_api_faults(vec![FileFault::Status(rng.pick(&[502u16, 503]))]);
                (Provider::Green, "downloadFile 502/503")
            }
            1 => {
                f.green.inject_api_faults(vec![FileFault::TooManyRequests {
                    retry_after_secs: 2,
                }]);
                (Provider::Green, "downloadFile 429 + Retry-After")
            }
            2 => {
                f.cloud
                    .inject_graph_faults(vec![GraphFault::Status(rng.pick(&[500u16, 503]))]);
                (Provider::Cloud, "media info 5xx")
            }
            3 => {
                f.cloud.inject_graph_faults(vec![GraphFault::Status(429)]);
                (Provider::Cloud, "media info 429 + Retry-After")
            }
            4 => {
                f.cloud.expire_next_links(1);
                (Provider::Cloud, "expired link")
            }
            5 => {
                f.nx.inject_api_faults(vec![NxFault::Status(rng.pick(&[500u16, 502]))]);
                (Provider::Nx, "getMedia 5xx")
            }
            6 => {
                f.nx.inject_api_faults(vec![NxFault::TooManyRequests {
                    retry_after_secs: 1,
                }]);
                (Provider::Nx, "getMedia 429 + Retry-After")
            }
            7 => {
                let fault = match rng.below(3) {
                    0 => NxFault::Stall(STALL),
                    1 => NxFault::Truncate(100),
                    _ => NxFault::Status(503),
                };
                let name = match fault {
                    NxFault::Stall(_) => "file stall",
                    NxFault::Truncate(_) => "file truncation",
                    _ => "file 5xx",
                };
                f.nx.inject_file_faults(vec![fault]);
                (Provider::Nx, name)
            }
            8 => {
                f.onprem
                    .set_store_callbacks(vec![StoreCallback::After(rng.secs(1.0, 4.0))]);
                (Provider::OnPrem, "late store callback")
            }
            9 => {
                f.onprem.set_store_callbacks(vec![StoreCallback::Never]);
                (Provider::OnPrem, "lost store callback")
            }
            _ => {
                f.onprem.expire_tokens();
                (Provider::OnPrem, "expired API token")
            }
        };
        ctx.ledger().fault(provider, name);
    }
}

/// One reading of the daemon's /proc entries.
struct Sample {
    t: f64,
    pid: u32,
    rss_kib: u64,
    peak_rss_kib: u64,
    fds: u64,
}

/// Reads the running daemon's RSS and open fds every [`SAMPLE_EVERY`]
/// until told to stop (bounded by `limit` as well).
async fn sample_loop(ctx: Arc<Ctx>, limit: Instant) -> Vec<Sample> {
    let mut samples = Vec::new();
    while !ctx.stop_sampling.load(Ordering::SeqCst) && Instant::now() < limit {
        let pid = ctx.pid.load(Ordering::SeqCst);
        if pid != 0
            && let Some(s) = e2e::process::proc_sample(pid)
        {
            samples.push(Sample {
                t: ctx.t(),
                pid,
                rss_kib: s.rss_kib,
                peak_rss_kib: s.peak_rss_kib,
                fds: s.open_fds,
            });
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    samples
}

// ---------------------------------------------------------------------------
// The store: a cluster, or one node.

enum Store {
    Single(Garage),
    Cluster {
        cluster: GarageCluster,
        /// The node lost for good, if any.
        lost: Option<usize>,
    },
}

impl Store {
    fn under_test(&self) -> StoreUnderTest {
        match self {
            Store::Single(g) => StoreUnderTest::garage(g),
            Store::Cluster { cluster, .. } => StoreUnderTest::garage_cluster(cluster),
        }
    }

    fn describe(&self) -> String {
        match self {
            Store::Single(_) => "single-node Garage".into(),
            Store::Cluster { .. } => format!(
                "{CLUSTER_NODES}-node Garage cluster, replication factor {CLUSTER_NODES}, one zone per node"
            ),
        }
    }

    /// The whole store goes down.
    fn stop(&mut self) {
        match self {
            Store::Single(g) => g.stop(),
            Store::Cluster { cluster, .. } => cluster.stop(),
        }
    }

    /// The store comes back (a lost node stays lost).
    fn start(&mut self) {
        match self {
            Store::Single(g) => g.restart(),
            Store::Cluster { cluster, lost } => {
                let nodes: Vec<usize> = (0..CLUSTER_NODES).filter(|i| Some(*i) != *lost).collect();
                cluster.start_nodes(&nodes);
            }
        }
    }

    /// Loses one node that is not the daemon's endpoint; `None` when there
    /// is no cluster.
    fn lose_node(&mut self, rng: &mut Rng) -> Option<usize> {
        match self {
            Store::Single(_) => None,
            Store::Cluster { cluster, lost } => {
                let node = 1 + rng.below(CLUSTER_NODES - 1);
                cluster.stop_node(node);
                *lost = Some(node);
                Some(node)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Infrastructure chaos.

#[derive(Debug, Clone, Copy)]
enum Chaos {
    Kill9,
    SigTerm,
    StoreOutage,
}

/// The daemon under test and how it came and went.
struct Life {
    daemon: Option<Daemon>,
    config: String,
    workdir: PathBuf,
    generation: u32,
    events: Vec<(f64, String)>,
    /// SIGTERMs answered by something other than a clean exit 0 in time.
    unclean_stops: Vec<String>,
    /// Daemons found exited without being told to.
    crashes: Vec<String>,
    kills: u32,
    sigterms: u32,
    outages: u32,
}

impl Life {
    fn event(&mut self, ctx: &Ctx, what: String) {
        eprintln!("[{:7.1}s] {what}", ctx.t());
        self.events.push((ctx.t(), what));
    }

    fn spool_files(&self) -> usize {
        files_under(&self.workdir.join("data/spool")).len()
    }

    /// Keeps the logs of a daemon that is going away.
    fn save_logs(&self, daemon: &Daemon) {
        let path = self
            .workdir
            .join(format!("daemon-{:02}.log", self.generation));
        let _ = std::fs::write(path, daemon.logs());
    }

    /// Starts the daemon (a few tries: the port may still be held for a
    /// moment by the one before).
    fn start(&mut self, ctx: &Ctx) -> bool {
        for attempt in 1..=5 {
            let started =
                tokio::task::block_in_place(|| Daemon::try_start(&self.config, &self.workdir));
            match started {
                Ok(daemon) => {
                    self.generation += 1;
                    ctx.pid.store(daemon.pid(), Ordering::SeqCst);
                    self.daemon = Some(daemon);
                    return true;
                }
                Err(e) => {
                    let tail: String = e.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                    self.event(ctx, format!("daemon start failed (try {attempt}): {tail}"));
                    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_secs(1)));
                }
            }
        }
        false
    }

    fn kill9(&mut self, ctx: &Ctx) {
        if let Some(mut daemon) = self.daemon.take() {
            ctx.pid.store(0, Ordering::SeqCst);
            daemon.kill();
            self.save_logs(&daemon);
            self.kills += 1;
        }
    }

    /// SIGTERM and a bounded wait; a daemon that does not exit is killed
    /// and reported. Returns the seconds it took.
    fn sigterm(&mut self, ctx: &Ctx, label: &str) -> Option<f64> {
        let mut daemon = self.daemon.take()?;
        let started = Instant::now();
        let status = tokio::task::block_in_place(|| daemon.terminate_within(STOP_WAIT));
        let took = started.elapsed().as_secs_f64();
        ctx.pid.store(0, Ordering::SeqCst);
        match status {
            Some(s) if s.success() => {}
            Some(s) => self
                .unclean_stops
                .push(format!("{label}: exit {s} after {took:.1}s")),
            None => {
                self.unclean_stops.push(format!(
                    "{label}: still running {STOP_WAIT:?} after SIGTERM; killed"
                ));
                daemon.kill();
            }
        }
        self.save_logs(&daemon);
        self.sigterms += 1;
        Some(took)
    }
}

/// Runs kills, SIGTERMs and store outages until `deadline`; loses one
/// cluster node once at `node_loss_at`. Leaves the daemon and the store up.
async fn chaos_loop(
    ctx: &Ctx,
    life: &mut Life,
    store: &mut Store,
    mut rng: Rng,
    deadline: Instant,
    node_loss_at: Instant,
) {
    let mut round: Vec<Chaos> = Vec::new();
    let mut node_lost = false;
    loop {
        let next = Instant::now() + rng.secs(12.0, 30.0);
        if !node_lost && node_loss_at < next.min(deadline) {
            tokio::time::sleep(node_loss_at.saturating_duration_since(Instant::now())).await;
            node_lost = true;
            if let Some(node) = tokio::task::block_in_place(|| store.lose_node(&mut rng)) {
                life.event(
                    ctx,
                    format!("Garage node {node} lost for good (the other two keep a quorum)"),
                );
            }
            continue;
        }
        if next >= deadline {
            break;
        }
        tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
        if let Some(daemon) = life.daemon.as_mut()
            && let Some(status) = daemon.exited()
        {
            let daemon = life.daemon.take();
            if let Some(daemon) = &daemon {
                life.save_logs(daemon);
            }
            ctx.pid.store(0, Ordering::SeqCst);
            life.crashes.push(format!("at {:.0}s: {status}", ctx.t()));
            let up = life.start(ctx);
            life.event(
                ctx,
                format!("daemon had exited on its own ({status}); restarted: {up}"),
            );
        }
        if round.is_empty() {
            round = vec![Chaos::Kill9, Chaos::SigTerm, Chaos::StoreOutage];
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i + 1));
            }
        }
        match round.pop().unwrap_or(Chaos::Kill9) {
            Chaos::Kill9 => {
                life.kill9(ctx);
                let spool = life.spool_files();
                let down = rng.secs(0.0, 2.0);
                tokio::time::sleep(down).await;
                let up = life.start(ctx);
                let swept = life.spool_files();
                life.event(
                    ctx,
                    format!(
                        "kill -9 daemon; {spool} spool file(s) left behind; restarted after {:.1}s{}; {swept} spool file(s) after restart",
                        down.as_secs_f64(),
                        if up { "" } else { " FAILED" }
                    ),
                );
            }
            Chaos::SigTerm => {
                let label = format!("SIGTERM at {:.0}s", ctx.t());
                let took = life.sigterm(ctx, &label).unwrap_or(0.0);
                let spool = life.spool_files();
                let down = rng.secs(0.0, 2.0);
                tokio::time::sleep(down).await;
                let up = life.start(ctx);
                life.event(
                    ctx,
                    format!(
                        "SIGTERM daemon; exited in {took:.1}s; {spool} spool file(s) after exit; restarted after {:.1}s{}",
                        down.as_secs_f64(),
                        if up { "" } else { " FAILED" }
                    ),
                );
            }
            Chaos::StoreOutage => {
                let outage = rng.secs(5.0, 15.0);
                tokio::task::block_in_place(|| store.stop());
                life.outages += 1;
                tokio::time::sleep(outage).await;
                let started = Instant::now();
                tokio::task::block_in_place(|| store.start());
                life.event(
                    ctx,
                    format!(
                        "S3 store down for {:.1}s (back and ready {:.1}s after restart)",
                        outage.as_secs_f64(),
                        started.elapsed().as_secs_f64()
                    ),
                );
            }
        }
    }
    if !node_lost && let Some(node) = tokio::task::block_in_place(|| store.lose_node(&mut rng)) {
        life.event(ctx, format!("Garage node {node} lost for good (late)"));
    }
    if life.daemon.is_none() {
        life.start(ctx);
    }
}

// ---------------------------------------------------------------------------
// The reckoning.

/// What the store holds for one message.
enum Archived {
    Yes,
    No(String),
}

async fn check_archived(archive: &Archive, manifest_keys: &[String], sha256: &str) -> Archived {
    let Some(key) = manifest_keys.first() else {
        return Archived::No("no manifest".into());
    };
    let manifest = match archive.try_get(key).await {
        Ok(body) => body,
        Err(e) => return Archived::No(format!("manifest unreadable: {e}")),
    };
    let Ok(manifest) = serde_json::from_slice::<Value>(&manifest) else {
        return Archived::No("manifest is not JSON".into());
    };
    if manifest["sha256"] != sha256 {
        return Archived::No(format!(
            "manifest sha256 {} is not the file's {sha256}",
            manifest["sha256"]
        ));
    }
    let Some(blob_key) = manifest["blob_key"].as_str() else {
        return Archived::No("manifest has no blob_key".into());
    };
    match archive.try_get(blob_key).await {
        Ok(blob) if sha256_hex(&blob) == sha256 => Archived::Yes,
        Ok(blob) => Archived::No(format!("blob {blob_key} hashes to {}", sha256_hex(&blob))),
        Err(e) => Archived::No(format!("blob unreadable: {e}")),
    }
}

struct Args {
    minutes: f64,
    seed: u64,
    single_node: bool,
}

fn args() -> Args {
    let mut out = Args {
        minutes: 5.0,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        single_node: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = |it: &mut dyn Iterator<Item = String>| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--minutes" => {
                out.minutes = value(&mut it)
                    .parse()
                    .ok()
                    .filter(|m: &f64| *m > 0.0)
                    .unwrap_or_else(|| usage("--minutes takes a positive number"))
            }
            "--seed" => {
                out.seed = value(&mut it)
                    .parse()
                    .unwrap_or_else(|_| usage("--seed takes a whole number"))
            }
            "--single-node" => out.single_node = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    out
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("chaos-soak: {problem}");
    }
    eprintln!("usage: chaos-soak [--minutes N (default 5)] [--seed N] [--single-node]");
    std::process::exit(2);
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args = args();
    let run = Duration::from_secs_f64(args.minutes * 60.0);
    let mut rng = Rng(args.seed);
    eprintln!("chaos-soak: {} minute(s), seed {}", args.minutes, args.seed);

    let store = if args.single_node {
        Garage::start().map(Store::Single)
    } else {
        tokio::task::block_in_place(GarageCluster::start).map(|cluster| Store::Cluster {
            cluster,
            lost: None,
        })
    };
    let Some(mut store) = store else {
        eprintln!("chaos-soak needs garage (cargo install garage --version 2.5.0 --locked)");
        std::process::exit(1);
    };
    let cdn = FakeWhatsappCdn::start().await;
    let fakes = Fakes {
        green: FakeGreenApi::start().await,
        codechat: FakeCodeChat::start(&cdn).await,
        evolution: FakeEvolution::start(&cdn).await,
        cdn,
        onprem: FakeOnPrem::start().await,
        cloud: FakeCloudApi::start().await,
        nx: FakeNxcloud::start().await,
    };
    let port = e2e::free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    fakes
        .onprem
        .set_webhook_url(&accounts::onprem_webhook_url(&base_url));
    let dir = tempfile::Builder::new()
        .prefix("chaos-soak-")
        .tempdir()
        .expect("temp dir");
    let config = soak_config(&store.under_test(), &fakes, port);

    let ctx = Arc::new(Ctx {
        fakes,
        http: reqwest::Client::new(),
        base_url,
        started: Instant::now(),
        ledger: Mutex::new(Ledger::default()),
        pid: AtomicU32::new(0),
        stop_sampling: AtomicBool::new(false),
    });
    let mut life = Life {
        daemon: None,
        config,
        workdir: dir.path().to_owned(),
        generation: 0,
        events: Vec::new(),
        unclean_stops: Vec::new(),
        crashes: Vec::new(),
        kills: 0,
        sigterms: 0,
        outages: 0,
    };
    if !life.start(&ctx) {
        eprintln!(
            "chaos-soak: the daemon does not start; workdir kept: {}",
            dir.keep().display()
        );
        std::process::exit(1);
    }
    life.event(
        &ctx,
        format!("daemon up on {} ({})", ctx.base_url, store.describe()),
    );

    let deadline = Instant::now() + run;
    let node_loss_at = Instant::now() + run.mul_f64(rng.range(0.3, 0.6));
    let sampler = tokio::spawn(sample_loop(
        ctx.clone(),
        deadline + IDLE_WAIT + Duration::from_secs(600),
    ));
    let sender = tokio::spawn(send_loop(ctx.clone(), rng.fork(), deadline));
    let faults = tokio::spawn(api_fault_loop(ctx.clone(), rng.fork(), deadline));
    let progress = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let l = ctx.ledger();
                eprintln!(
                    "[{:7.1}s] files {} posts {} acked {} refused {:?}",
                    ctx.t(),
                    l.messages.len(),
                    l.posts,
                    l.acked_posts,
                    l.refused
                );
            }
        })
    };
    chaos_loop(
        &ctx,
        &mut life,
        &mut store,
        rng.fork(),
        deadline,
        node_loss_at,
    )
    .await;
    let _ = sender.await;
    let _ = faults.await;
    let _ = progress.await;
    life.event(&ctx, "traffic and chaos stopped".into());

    // Providers redeliver what was never answered 200: one last round.
    let unacked: Vec<usize> = {
        let l = ctx.ledger();
        (0..l.messages.len())
            .filter(|&i| !l.messages[i].acked)
            .collect()
    };
    for i in unacked {
        post_and_record(ctx.clone(), i, Why::Redelivery).await;
    }

    let idle_started = Instant::now();
    let idle = match &life.daemon {
        Some(daemon) => daemon.idle_within(IDLE_WAIT).await,
        None => Err(Value::Null),
    };
    let idle_after = idle_started.elapsed().as_secs_f64();
    life.event(
        &ctx,
        match &idle {
            Ok(_) => format!("queue idle {idle_after:.1}s after traffic stopped"),
            Err(stats) => format!("queue NOT idle after {IDLE_WAIT:?}: {stats}"),
        },
    );

    // Every job as the daemon sees it.
    let jobs: HashMap<String, Value> = match &life.daemon {
        Some(daemon) => {
            let ids: Vec<String> = ctx
                .ledger()
                .messages
                .iter()
                .map(|m| m.job_id.clone())
                .collect();
            let mut out = HashMap::new();
            for id in ids {
                let (status, job) = daemon.job(&id).await;
                if status == 200 {
                    out.insert(id, job);
                }
            }
            out
        }
        None => HashMap::new(),
    };

    // Everything the store holds.
    let archive = Archive::of(&store.under_test(), &life.workdir);
    let manifest_keys = archive.try_keys("messages/").await.unwrap_or_else(|e| {
        eprintln!("cannot list manifests: {e}");
        Vec::new()
    });
    let blob_keys = archive.try_keys("blobs/").await.unwrap_or_else(|e| {
        eprintln!("cannot list blobs: {e}");
        Vec::new()
    });
    // messages/{account}/{yyyy}/{mm}/{dd}/{message_id}.json
    let mut manifests: HashMap<(String, String), Vec<String>> = HashMap::new();
    for key in &manifest_keys {
        let parts: Vec<&str> = key.split('/').collect();
        if let (Some(account), Some(name)) = (parts.get(1), parts.last()) {
            let id = name.trim_end_matches(".json");
            manifests
                .entry(((*account).to_owned(), id.to_owned()))
                .or_default()
                .push(key.clone());
        }
    }
    // blobs/sha256/{h[0..2]}/{h}{ext}
    let mut blobs: HashMap<String, Vec<String>> = HashMap::new();
    for key in &blob_keys {
        let name = key.rsplit('/').next().unwrap_or(key);
        let hash = name.split('.').next().unwrap_or(name);
        blobs.entry(hash.to_owned()).or_default().push(key.clone());
    }

    struct Row {
        provider: Provider,
        job_id: String,
        acked: bool,
        archived: Archived,
        state: String,
        last_error: String,
        faults: Vec<&'static str>,
        size: usize,
    }
    /// What one message's check needs, copied out of the ledger.
    struct Check {
        provider: Provider,
        job_id: String,
        message_id: String,
        sha256: String,
        acked: bool,
        faults: Vec<&'static str>,
        size: usize,
    }
    let checks: Vec<Check> = ctx
        .ledger()
        .messages
        .iter()
        .map(|m| Check {
            provider: m.provider,
            job_id: m.job_id.clone(),
            message_id: m.message_id.clone(),
            sha256: m.sha256.clone(),
            acked: m.acked,
            faults: m.faults.clone(),
            size: m.size,
        })
        .collect();
    let mut rows = Vec::with_capacity(checks.len());
    let mut set = tokio::task::JoinSet::new();
    let mut pending = checks.into_iter();
    loop {
        while set.len() < 16
            && let Some(c) = pending.next()
        {
            let keys = manifests
                .get(&(c.provider.account().to_owned(), c.message_id))
                .cloned()
                .unwrap_or_default();
            let archive = archive.clone();
            let job = jobs.get(&c.job_id).cloned().unwrap_or(Value::Null);
            set.spawn(async move {
                let archived = check_archived(&archive, &keys, &c.sha256).await;
                Row {
                    provider: c.provider,
                    job_id: c.job_id,
                    acked: c.acked,
                    archived,
                    state: job["state"].as_str().unwrap_or("no job").to_owned(),
                    last_error: job["last_error"].as_str().unwrap_or("").to_owned(),
                    faults: c.faults,
                    size: c.size,
                }
            });
        }
        match set.join_next().await {
            Some(Ok(row)) => rows.push(row),
            Some(Err(e)) => eprintln!("a check failed: {e}"),
            None => break,
        }
    }

    // The final clean stop, then the spool.
    let final_stop = life.sigterm(&ctx, "final SIGTERM");
    ctx.stop_sampling.store(true, Ordering::SeqCst);
    let spool_left = files_under(&life.workdir.join("data/spool"));
    life.event(
        &ctx,
        format!(
            "final SIGTERM: exited in {:.1}s; {} spool file(s) left",
            final_stop.unwrap_or(0.0),
            spool_left.len()
        ),
    );
    let samples = sampler.await.unwrap_or_default();

    // ---- the table
    let l = ctx.ledger();
    let known_hashes: HashSet<&str> = l.messages.iter().map(|m| m.sha256.as_str()).collect();
    let acked_jobs: HashSet<&str> = rows
        .iter()
        .filter(|r| r.acked)
        .map(|r| r.job_id.as_str())
        .collect();
    let archived_acked = rows
        .iter()
        .filter(|r| r.acked && matches!(r.archived, Archived::Yes))
        .count();
    let archived_unacked = rows
        .iter()
        .filter(|r| !r.acked && matches!(r.archived, Archived::Yes))
        .count();
    // No fault the soak injects is permanent by design, so no dead job is
    // legitimate: an acknowledged job that is not archived is lost.
    let lost: Vec<&Row> = rows
        .iter()
        .filter(|r| r.acked && !matches!(r.archived, Archived::Yes))
        .collect();
    let mut dead_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.state == "dead") {
        let reason: String = r.last_error.chars().take(90).collect();
        *dead_by_reason.entry(reason).or_default() += 1;
    }
    let duplicate_blobs: Vec<(&String, &Vec<String>)> =
        blobs.iter().filter(|(_, keys)| keys.len() > 1).collect();
    let stray_blobs: Vec<&String> = blobs
        .iter()
        .filter(|(h, _)| !known_hashes.contains(h.as_str()))
        .flat_map(|(_, keys)| keys)
        .collect();
    let duplicate_manifests = manifests.values().filter(|k| k.len() > 1).count();
    let archived_bytes: usize = rows
        .iter()
        .filter(|r| matches!(r.archived, Archived::Yes))
        .map(|r| r.size)
        .sum();

    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "chaos-soak: {} min, seed {}, {}, daemon `{}`",
        args.minutes,
        args.seed,
        store.describe(),
        e2e::binary().display()
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| measure | value |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| webhooks posted | {} ({} new files, {} duplicates of earlier ones, {} redeliveries of unanswered ones) |",
        l.posts,
        l.messages.len(),
        l.duplicate_posts,
        l.redelivery_posts
    );
    let _ = writeln!(
        out,
        "| webhooks acked (200) | {} (the daemon called {} of the jobs in them duplicates) |",
        l.acked_posts, l.daemon_duplicates
    );
    let refused: Vec<String> = l.refused.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(
        out,
        "| webhooks not acked | {} ({}) |",
        l.posts - l.acked_posts,
        if refused.is_empty() {
            "none".into()
        } else {
            refused.join(", ")
        }
    );
    let _ = writeln!(out, "| distinct jobs acked | {} |", acked_jobs.len());
    let _ = writeln!(
        out,
        "| archived (manifest present, blob sha256 correct) | {archived_acked} of the acked jobs ({:.1} MB in all); {archived_unacked} more never acked but archived |",
        archived_bytes as f64 / 1e6
    );
    let dead_total: u64 = dead_by_reason.values().sum();
    let _ = writeln!(
        out,
        "| dead | {dead_total}{} |",
        if dead_total == 0 {
            String::new()
        } else {
            " (none is legitimate: every injected fault is transient by design; reasons below)"
                .into()
        }
    );
    let _ = writeln!(
        out,
        "| **lost** (acked, neither archived nor legitimately dead) | **{}** |",
        lost.len()
    );
    let _ = writeln!(
        out,
        "| duplicate blobs (two blobs for one file) | {} (and {} blob(s) of no file sent; {duplicate_manifests} message(s) with two manifests) |",
        duplicate_blobs.len(),
        stray_blobs.len()
    );
    let peak = samples.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "| daemon peak RSS / open fds (all processes) | {} MiB / {max_fds} |",
        mib(peak)
    );
    let _ = writeln!(
        out,
        "| spool files left after the final clean stop | {} |",
        spool_left.len()
    );
    let _ = writeln!(
        out,
        "| daemon lives | {} (kill -9: {}, SIGTERM: {}, store outages: {}) |",
        life.generation,
        life.kills,
        life.sigterms.saturating_sub(1),
        life.outages
    );
    let _ = writeln!(
        out,
        "| daemon exits nobody asked for | {} |",
        if life.crashes.is_empty() {
            "none".to_owned()
        } else {
            life.crashes.join("; ")
        }
    );
    let _ = writeln!(
        out,
        "| clean SIGTERM exits (exit 0 in time) | {} of {}{} |",
        (life.sigterms as usize).saturating_sub(life.unclean_stops.len()),
        life.sigterms,
        if life.unclean_stops.is_empty() {
            String::new()
        } else {
            format!(" ({})", life.unclean_stops.join("; "))
        }
    );

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| provider | files | acked jobs | archived | dead | lost |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for p in Provider::ALL {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.provider == p).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            p.label(),
            mine.len(),
            mine.iter().filter(|r| r.acked).count(),
            mine.iter()
                .filter(|r| r.acked && matches!(r.archived, Archived::Yes))
                .count(),
            mine.iter().filter(|r| r.state == "dead").count(),
            lost.iter().filter(|r| r.provider == p).count()
        );
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| minute | samples | RSS MiB min / median / max | open fds min / median / max |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let minutes = samples
        .iter()
        .map(|s| (s.t / 60.0) as usize)
        .max()
        .map_or(0, |m| m + 1);
    for minute in 0..minutes {
        let window: Vec<&Sample> = samples
            .iter()
            .filter(|s| (s.t / 60.0) as usize == minute)
            .collect();
        if window.is_empty() {
            continue;
        }
        let mut rss: Vec<u64> = window.iter().map(|s| s.rss_kib).collect();
        let mut fds: Vec<u64> = window.iter().map(|s| s.fds).collect();
        let (rss_min, rss_max) = (
            rss.iter().min().copied().unwrap_or(0),
            rss.iter().max().copied().unwrap_or(0),
        );
        let (fds_min, fds_max) = (
            fds.iter().min().copied().unwrap_or(0),
            fds.iter().max().copied().unwrap_or(0),
        );
        let _ = writeln!(
            out,
            "| {minute}-{} | {} | {} / {} / {} | {fds_min} / {} / {fds_max} |",
            minute + 1,
            window.len(),
            mib(rss_min),
            mib(median(&mut rss)),
            mib(rss_max),
            median(&mut fds)
        );
    }

    if !dead_by_reason.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Dead jobs by reason:");
        for (reason, n) in &dead_by_reason {
            let _ = writeln!(out, "- {n} x {reason}");
        }
    }
    if !lost.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Lost (first 30):");
        for r in lost.iter().take(30) {
            let why = match &r.archived {
                Archived::No(why) => why.as_str(),
                Archived::Yes => "",
            };
            let _ = writeln!(
                out,
                "- {} ({}): job {}, {}; faults on its file: {:?}; last error: {}",
                r.job_id,
                r.provider.label(),
                r.state,
                why,
                r.faults,
                r.last_error
            );
        }
    }
    if !duplicate_blobs.is_empty() || !stray_blobs.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Duplicate or stray blobs (first 10 each):");
        for (hash, keys) in duplicate_blobs.iter().take(10) {
            let _ = writeln!(out, "- {hash}: {keys:?}");
        }
        for key in stray_blobs.iter().take(10) {
            let _ = writeln!(out, "- stray: {key}");
        }
    }
    if !spool_left.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Spool files left:");
        for path in spool_left.iter().take(20) {
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            let _ = writeln!(out, "- {} ({size} bytes)", path.display());
        }
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Footer. Samples: every {}s from /proc/<pid>/status (VmRSS, VmHWM) and /proc/<pid>/fd, {} in all, from {:.0}s to {:.0}s; RSS restarts with each daemon life.",
        SAMPLE_EVERY.as_secs(),
        samples.len(),
        samples.first().map_or(0.0, |s| s.t),
        samples.last().map_or(0.0, |s| s.t)
    );
    let pids: HashSet<u32> = samples.iter().map(|s| s.pid).collect();
    let _ = writeln!(out, "Daemon processes sampled: {}.", pids.len());
    let _ = writeln!(out, "Events (seconds from start):");
    for (t, what) in &life.events {
        let _ = writeln!(out, "- {t:7.1}s {what}");
    }
    let _ = writeln!(out, "Provider faults injected:");
    for (name, n) in &l.faults {
        let _ = writeln!(out, "- {name}: {n}");
    }
    print!("{out}");

    let failed = !lost.is_empty() || !spool_left.is_empty();
    // `exit` runs no destructors: stop the store's processes first.
    drop(l);
    drop(life);
    drop(store);
    if failed {
        let kept = dir.keep();
        eprintln!(
            "chaos-soak: FAILED; workdir kept for inspection (config, queue, daemon-NN.log): {}",
            kept.display()
        );
        std::process::exit(1);
    }
}
