//! `queue` bench: what durability costs at the front door, and what leasing
//! costs as the backlog grows. Not a test: it prints tables (see
//! BENCHMARKS.md for the method and the figures of a run).
//!
//! ```text
//! cargo bench -p media-archiver --bench queue              # full run
//! cargo bench -p media-archiver --bench queue -- --quick   # smaller, for a smoke run
//! cargo bench -p media-archiver --bench queue -- --ingest  # the ingest table only
//! cargo bench -p media-archiver --bench queue -- --ingest --only fjall,discard
//! ```
//!
//! `--only` (a comma list of `discard`, `sqlite`, `fjall`, `postgres`)
//! keeps those ingest rows beside the no-op one, for profiling one
//! server; figures to quote come from full runs.
//!
//! 1. **Ingest**: the same load (64 keep-alive HTTP/1.1 connections, each
//!    sending 1 KiB Green API file webhooks back to back, every one a new
//!    message id) against (a) a no-op hyper handler that reads the body and
//!    answers 200, (b) the real webhook receiver over a queue that keeps
//!    nothing (what routing, authentication and parsing cost before any
//!    durability), (c) the receiver with the SQLite queue (WAL; each 200 is
//!    after the fsync that covers its group commit), (d) the same with the
//!    fjall queue (journal fsynced once per group), and (e) the same
//!    receiver with the PostgreSQL queue when the test server is
//!    reachable. Only the receiver runs: no worker drains the queue, so the
//!    figure is ingest alone. Bounded by a request count and a duration,
//!    loopback only. CPU per request is split by thread name, and the
//!    bytes the process wrote per request are printed beside it.
//! 2. **Lease + ack**: with P jobs pending, a loop leases 16 jobs and
//!    completes each (every call a durable commit), for a bounded number of
//!    jobs; reported as jobs/s and the latency of one `lease` call, at
//!    P = 1k and P = 1M.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use archiver_core::{ErrorClass, JobSpec, JobState, ProviderKind, SystemClock, UnixMillis};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use retry_queue::conformance::pg::PgTestDatabase;
use retry_queue::{
    Disposition, Enqueued, FjallOptions, FjallQueue, JobFilter, JobQueue, JobRecord, Lease, Leased,
    PgQueue, QueueError, QueueStats, RetryPolicy, SqliteQueue,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use webhook_receiver::{Readiness, Receiver, ReceiverConfig};

const WEBHOOK_TOKEN: &str = "bench-webhook-token";
const CONNECTIONS: usize = 64;
const LEASE_BATCH: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Most requests per ingest run.
    requests: usize,
    /// Longest ingest run.
    duration: Duration,
    /// The large backlog of the lease+ack run.
    big_backlog: usize,
    /// Jobs leased and acked per lease+ack run.
    lease_jobs: usize,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let ingest_only = std::env::args().any(|a| a == "--ingest");
    let only: Option<Vec<String>> =
        std::env::args()
            .skip_while(|a| a != "--only")
            .nth(1)
            .map(|rows| {
                let rows: Vec<String> = rows.split(',').map(str::to_owned).collect();
                let known = ["discard", "sqlite", "fjall", "postgres"];
                if let Some(unknown) = rows.iter().find(|r| !known.contains(&r.as_str())) {
                    panic!(
                        "--only {unknown:?}: the ingest rows are {}",
                        known.join(", ")
                    );
                }
                rows
            });
    let wanted = |row: &str| {
        only.as_ref()
            .is_none_or(|rows| rows.iter().any(|r| r == row))
    };
    let settings = if quick {
        Settings {
            requests: 20_000,
            duration: Duration::from_secs(5),
            big_backlog: 100_000,
            lease_jobs: 2_000,
        }
    } else {
        Settings {
            requests: 200_000,
            duration: Duration::from_secs(10),
            big_backlog: 1_000_000,
            lease_jobs: 10_000,
        }
    };
    println!("{}", machine());
    println!(
        "settings: {CONNECTIONS} connections, at most {} requests or {:?} per ingest run; \
         lease batches of {LEASE_BATCH}, {} jobs per lease+ack run\n",
        settings.requests, settings.duration, settings.lease_jobs
    );
    let postgres = PgTestDatabase::create();

    // Server and load generator each get a runtime of their own (two
    // worker threads each, on the same two cores).
    let server_rt = runtime("server");
    let client_rt = runtime("client");

    let dir = tempfile::tempdir().expect("tempdir");
    let fsync = fsync_latency(dir.path());
    println!(
        "fsync of a 4 KiB append here: p50 {:.2} ms, p99 {:.2} ms. A durable 200 waits for at least \
         one, so {CONNECTIONS} connections (one request in flight each) are bounded near \
         {:.0} req/s at this latency, whatever the batching.\n",
        fsync.0.as_secs_f64() * 1e3,
        fsync.1.as_secs_f64() * 1e3,
        CONNECTIONS as f64 / fsync.0.as_secs_f64()
    );
    let mut ingest = Vec::new();
    {
        let addr = server_rt.block_on(noop_server());
        ingest.push((
            "no-op hyper handler",
            client_rt.block_on(load(addr, settings, "noop")),
        ));
    }
    if wanted("discard") {
        let (addr, stop) = server_rt.block_on(receiver(Arc::new(StoresNothing)));
        ingest.push((
            "receiver, nothing stored",
            client_rt.block_on(load(addr, settings, "discard")),
        ));
        stop.cancel();
    }
    if wanted("sqlite") {
        let queue: Arc<dyn JobQueue> = Arc::new(
            SqliteQueue::open(
                &dir.path().join("ingest.db"),
                RetryPolicy::default(),
                Arc::new(SystemClock),
            )
            .expect("sqlite queue"),
        );
        let (addr, stop) = server_rt.block_on(receiver(queue));
        ingest.push((
            "receiver + SQLite queue",
            client_rt.block_on(load(addr, settings, "sqlite")),
        ));
        stop.cancel();
    }
    if wanted("fjall") {
        let queue: Arc<dyn JobQueue> = Arc::new(
            FjallQueue::open(
                &FjallOptions::at(dir.path().join("ingest-fjall")),
                RetryPolicy::default(),
                Arc::new(SystemClock),
            )
            .expect("fjall queue"),
        );
        let (addr, stop) = server_rt.block_on(receiver(queue));
        ingest.push((
            "receiver + fjall queue",
            client_rt.block_on(load(addr, settings, "fjall")),
        ));
        stop.cancel();
    }
    if let Some(db) = postgres.as_ref().filter(|_| wanted("postgres")) {
        let queue: Arc<dyn JobQueue> = Arc::new(
            server_rt
                .block_on(PgQueue::connect_with(
                    retry_queue::PgOptions {
                        max_connections: 16,
                        ..db.options()
                    },
                    RetryPolicy::default(),
                    Arc::new(SystemClock),
                ))
                .expect("postgres queue"),
        );
        let (addr, stop) = server_rt.block_on(receiver(queue));
        ingest.push((
            "receiver + PostgreSQL queue",
            client_rt.block_on(load(addr, settings, "postgres")),
        ));
        stop.cancel();
    }
    print_ingest(&ingest);
    if ingest_only {
        return;
    }

    let mut leasing = Vec::new();
    for (backend, backlog) in [("SQLite", 1_000), ("SQLite", settings.big_backlog)] {
        let path = dir.path().join(format!("lease-{backlog}.db"));
        let queue: Arc<dyn JobQueue> = Arc::new(
            SqliteQueue::open(&path, RetryPolicy::default(), Arc::new(SystemClock))
                .expect("sqlite queue"),
        );
        leasing.push((
            backend,
            backlog,
            server_rt.block_on(lease_ack(queue, backlog, settings)),
        ));
    }
    for backlog in [1_000, settings.big_backlog] {
        let queue: Arc<dyn JobQueue> = Arc::new(
            FjallQueue::open(
                &FjallOptions::at(dir.path().join(format!("lease-{backlog}-fjall"))),
                RetryPolicy::default(),
                Arc::new(SystemClock),
            )
            .expect("fjall queue"),
        );
        leasing.push((
            "fjall",
            backlog,
            server_rt.block_on(lease_ack(queue, backlog, settings)),
        ));
    }
    if let Some(db) = &postgres {
        for backlog in [1_000, settings.big_backlog] {
            // A fresh schema per backlog, so the 1k run is not behind 1M.
            let fresh = PgTestDatabase::create().unwrap_or_else(|| panic!("{db:?} went away"));
            let queue: Arc<dyn JobQueue> = Arc::new(
                server_rt
                    .block_on(PgQueue::connect_with(
                        fresh.options(),
                        RetryPolicy::default(),
                        Arc::new(SystemClock),
                    ))
                    .expect("postgres queue"),
            );
            leasing.push((
                "PostgreSQL",
                backlog,
                server_rt.block_on(lease_ack(queue, backlog, settings)),
            ));
        }
    } else {
        println!("(PostgreSQL not reachable: its rows are left out)");
    }
    print_leasing(&leasing);
}

/// p50 and p99 of `fsync` after a 4 KiB append, on the disk of `dir`.
fn fsync_latency(dir: &std::path::Path) -> (Duration, Duration) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(dir.join("fsync-probe")).expect("probe file");
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            file.write_all(&[0u8; 4096]).expect("write");
            let started = Instant::now();
            file.sync_all().expect("fsync");
            started.elapsed()
        })
        .collect();
    times.sort();
    (times[100], times[197])
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `nproc` and the CPU model, for the record.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("machine: {cores} cores, {model}")
}

// ---------------------------------------------------------------------------
// Servers

/// A hyper server that reads each body and answers 200 with a small JSON.
async fn noop_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        br#"{"accepted":1,"duplicates":0,"ignored":0}"#,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[derive(Debug)]
struct AlwaysReady;

#[async_trait::async_trait]
impl Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A queue that accepts every job and keeps none: the receiver over it
/// costs what parsing, authentication and routing cost, so the rows over
/// real queues can be read as that plus durability.
#[derive(Debug)]
struct StoresNothing;

#[async_trait::async_trait]
impl JobQueue for StoresNothing {
    async fn enqueue(&self, jobs: Vec<JobSpec>) -> Result<Vec<Enqueued>, QueueError> {
        Ok(vec![Enqueued::New; jobs.len()])
    }
    async fn lease(&self, _: usize, _: Duration) -> Result<Leased, QueueError> {
        Ok(Leased::default())
    }
    async fn renew(&self, lease: &Lease, _: Duration) -> Result<UnixMillis, QueueError> {
        Err(lost(lease))
    }
    async fn complete(&self, lease: &Lease) -> Result<(), QueueError> {
        Err(lost(lease))
    }
    async fn fail(&self, lease: &Lease, _: ErrorClass, _: &str) -> Result<Disposition, QueueError> {
        Err(lost(lease))
    }
    async fn park(&self, lease: &Lease, _: UnixMillis) -> Result<(), QueueError> {
        Err(lost(lease))
    }
    async fn wake(&self, _: &str, _: Option<&str>) -> Result<bool, QueueError> {
        Ok(false)
    }
    async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        Err(lost(lease))
    }
    async fn get(&self, _: &str) -> Result<Option<JobRecord>, QueueError> {
        Ok(None)
    }
    async fn list(&self, _: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        Ok(Vec::new())
    }
    async fn retry_now(&self, _: &str) -> Result<bool, QueueError> {
        Ok(false)
    }
    async fn retry_all(&self, _: JobState) -> Result<u64, QueueError> {
        Ok(0)
    }
    async fn stats(&self, _: Duration) -> Result<QueueStats, QueueError> {
        Ok(QueueStats::default())
    }
    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

fn lost(lease: &Lease) -> QueueError {
    QueueError::LeaseLost {
        job_id: lease.job.id.clone(),
    }
}

/// The real webhook receiver with one Green API account over `queue`.
async fn receiver(queue: Arc<dyn JobQueue>) -> (SocketAddr, CancellationToken) {
    let account: providers::AccountConfig = toml::from_str(&format!(
        "name = \"green\"\nprovider = \"greenapi\"\napi_url = \"https://api.green-api.com\"\n\
         id_instance = 1101000001\napi_token = \"t\"\nwebhook_token = \"{WEBHOOK_TOKEN}\"\n"
    ))
    .expect("account config");
    let api = providers::ApiClient::new(Duration::from_secs(5), Duration::from_secs(5))
        .expect("api client");
    let provider = providers::build(&account, &api).expect("provider");
    let accounts = HashMap::from([("green".to_owned(), provider)]);
    let receiver = Arc::new(Receiver::new(
        accounts,
        queue,
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(AlwaysReady),
        ReceiverConfig::default(),
    ));
    let listener = webhook_receiver::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(receiver.serve(listener, stop.clone(), Duration::from_secs(10)));
    (addr, stop)
}

// ---------------------------------------------------------------------------
// Load generator

/// A Green API incoming-image webhook of about 1 KiB with its own id.
///
/// Ids look like Green API's (`BAE5` and hex) and arrive in random order,
/// as real message ids do: a counter would let every index on the id
/// append to its last page, which flatters a B-tree (the SQLite queue's
/// ingest fell from 17.7k to 11k req/s when these ids became random).
fn webhook(run: &str, n: usize) -> Bytes {
    let id = format!("BAE5{:016X}", splitmix64(fnv1a(run.as_bytes()) ^ n as u64));
    let mut body = format!(
        r#"{{"typeWebhook":"incomingMessageReceived","instanceData":{{"idInstance":1101000001,"wid":"79876543210@c.us","typeInstance":"whatsapp"}},"timestamp":{ts},"idMessage":"{id}","senderData":{{"chatId":"79001234568@c.us","chatName":"Test contact","sender":"79001234568@c.us","senderName":"Test contact","senderContactName":"Test contact"}},"messageData":{{"typeMessage":"imageMessage","fileMessageData":{{"downloadUrl":"https://sw-media-out.storage.yandexcloud.net/1101000001/{id}.jpg","fileName":"photo.jpg","mimeType":"image/jpeg","jpegThumbnail":"","isAnimated":false,"isForwarded":false,"forwardingScore":0,"caption":"CAPTION"}}}}}}"#,
        ts = 1_795_000_000 + n as u64 % 1000
    );
    let pad = 1024usize.saturating_sub(body.len() - "CAPTION".len());
    body = body.replace("CAPTION", &"x".repeat(pad));
    Bytes::from(body)
}

/// A well-mixed 64-bit permutation (SplitMix64's finaliser): distinct
/// inputs give distinct, random-looking outputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, to turn a run's name into a seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01B3)
    })
}

#[derive(Debug)]
struct LoadResult {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    /// Latencies of successful requests, sorted.
    latencies: Vec<Duration>,
    /// CPU used during the run, by role.
    cpu: CpuTime,
    /// Bytes written by this process during the run (both sides' sockets
    /// included).
    written: u64,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Microseconds of CPU per answered request.
    fn cpu_per_request(&self, used: Duration) -> f64 {
        used.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1]
    }
}

/// `CONNECTIONS` keep-alive connections, each sending requests back to
/// back until the shared request budget or the duration runs out.
async fn load(addr: SocketAddr, settings: Settings, run: &str) -> LoadResult {
    let bodies: Arc<Vec<Bytes>> =
        Arc::new((0..settings.requests).map(|n| webhook(run, n)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = CpuSnapshot::now();
    let written_before = written_bytes();
    let started = Instant::now();
    let deadline = started + settings.duration;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (bodies, next) = (bodies.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let stream = TcpStream::connect(addr).await.expect("connect");
                let _ = stream.set_nodelay(true);
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let request = Request::post("/webhooks/green")
                        .header("host", addr.to_string())
                        .header("authorization", format!("Bearer {WEBHOOK_TOKEN}"))
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .expect("request");
                    let sent = Instant::now();
                    match sender.send_request(request).await {
                        Ok(response) => {
                            let ok = response.status() == 200;
                            let _ = response.into_body().collect().await;
                            if ok {
                                latencies.push(sent.elapsed());
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mine, failed) = task.await.expect("load task");
        latencies.extend(mine);
        errors += failed;
    }
    let elapsed = started.elapsed();
    let cpu = CpuSnapshot::now().since(&cpu_before);
    let written = written_bytes().saturating_sub(written_before);
    latencies.sort();
    LoadResult {
        requests: latencies.len(),
        errors,
        elapsed,
        latencies,
        cpu,
        written,
    }
}

/// Bytes this process has handed to `write`-like calls so far (`wchar` of
/// `/proc/self/io`: WAL frames, checkpoint copies, sockets), Linux only.
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time used over a run, by role: the load generator (this process's
/// `client` threads), the server (every other thread of this process: the
/// `server` runtime and the queue's threads) and PostgreSQL's processes;
/// `by_thread` splits the server and database time by thread name.
/// Read from `schedstat` (nanoseconds on a CPU), Linux only; zero elsewhere.
#[derive(Debug, Default, Clone)]
struct CpuTime {
    client: Duration,
    server: Duration,
    database: Duration,
    by_thread: BTreeMap<String, Duration>,
}

/// Each thread's time on a CPU so far, by thread (or process) id: this
/// process's threads, and PostgreSQL's processes.
struct CpuSnapshot(BTreeMap<(Role, u32), (String, Duration)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Client,
    Server,
    Database,
}

impl CpuSnapshot {
    fn now() -> Self {
        let mut tasks = BTreeMap::new();
        for (id, comm, ran) in schedstats("/proc/self/task") {
            let role = if comm.starts_with("client") {
                Role::Client
            } else {
                Role::Server
            };
            tasks.insert((role, id), (comm, ran));
        }
        for (id, comm, ran) in schedstats("/proc") {
            if comm == "postgres" {
                tasks.insert((Role::Database, id), (comm, ran));
            }
        }
        Self(tasks)
    }

    /// The time used since `earlier`, thread by thread: a thread that ended
    /// in between (the queue of the previous row, whose thread stops when
    /// its last handle goes) is neither counted nor subtracted.
    fn since(&self, earlier: &Self) -> CpuTime {
        let mut cpu = CpuTime::default();
        for (key, (comm, ran)) in &self.0 {
            let before = earlier.0.get(key).map_or(Duration::ZERO, |(_, ran)| *ran);
            let used = ran.saturating_sub(before);
            match key.0 {
                Role::Client => cpu.client += used,
                Role::Server => cpu.server += used,
                Role::Database => cpu.database += used,
            }
            if key.0 != Role::Client && !used.is_zero() {
                *cpu.by_thread.entry(comm.clone()).or_default() += used;
            }
        }
        cpu
    }
}

/// `(id, comm, time on a CPU)` of each numbered entry under `dir`.
fn schedstats(dir: &str) -> Vec<(u32, String, Duration)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let id: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
            let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
            Some((id, comm.trim().to_owned(), Duration::from_nanos(ns)))
        })
        .collect()
}

fn print_ingest(results: &[(&str, LoadResult)]) {
    let noop = results.first().map_or(1.0, |(_, r)| r.rate());
    println!("Webhook ingest: 1 KiB Green API webhooks, {CONNECTIONS} connections, loopback");
    println!(
        "{:<30} {:>9} {:>8} {:>10} {:>9} {:>9} {:>7}  {:>24}",
        "server",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "% no-op",
        "CPU us/req server+db/load"
    );
    for (name, r) in results {
        println!(
            "{:<30} {:>9} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>6.0}%  {:>15.1} {:>8.1}",
            name,
            r.requests,
            r.errors,
            r.rate(),
            r.percentile(0.50).as_secs_f64() * 1e3,
            r.percentile(0.99).as_secs_f64() * 1e3,
            100.0 * r.rate() / noop,
            r.cpu_per_request(r.cpu.server + r.cpu.database),
            r.cpu_per_request(r.cpu.client),
        );
    }
    println!(
        "(CPU: time on a CPU per answered request, from schedstat; server+db is this \
         process's server and queue threads plus PostgreSQL's processes, load is the \
         load generator.)"
    );
    println!();
    println!(
        "Server+db CPU by thread name (server: the receiver's runtime), us per answered \
         request; bytes written by this process per request (sockets included)"
    );
    for (name, r) in results {
        let threads: Vec<String> = r
            .cpu
            .by_thread
            .iter()
            .map(|(comm, ran)| (comm, r.cpu_per_request(*ran)))
            .filter(|(_, us)| *us >= 0.05)
            .map(|(comm, us)| format!("{comm} {us:.1}"))
            .collect();
        println!(
            "{name:<30} {}; written {:.1} KiB/req",
            threads.join(", "),
            r.written as f64 / 1024.0 / r.requests.max(1) as f64
        );
    }
    println!();
}

// ---------------------------------------------------------------------------
// Lease + ack

#[derive(Debug)]
struct LeaseResult {
    fill: Duration,
    jobs: usize,
    elapsed: Duration,
    /// Latency of each `lease` call, sorted.
    lease_calls: Vec<Duration>,
}

fn spec(n: usize, now_ms: i64) -> JobSpec {
    let key = format!("{n:012}");
    JobSpec {
        id: JobSpec::job_id("bench", &key),
        account: "bench".to_owned(),
        provider: ProviderKind::Greenapi,
        message_id: key.clone(),
        media_id: None,
        chat_id: None,
        message_at: now_ms,
        // Spread deadlines, so EDF order is not insertion order.
        deadline: now_ms + 86_400_000 + (n as i64 * 7919) % 3_600_000,
        payload: serde_json::json!({ "chatId": "79001234568@c.us", "idMessage": key }),
    }
}

/// Fills the queue with `backlog + jobs` pending jobs, then leases and
/// acks `jobs` of them, so the backlog is at least `backlog` throughout.
async fn lease_ack(queue: Arc<dyn JobQueue>, backlog: usize, settings: Settings) -> LeaseResult {
    let now_ms = chrono_now_ms();
    let total = backlog + settings.lease_jobs;
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let batch: Vec<JobSpec> = (n..(n + 10_000).min(total))
            .map(|i| spec(i, now_ms))
            .collect();
        n += batch.len();
        queue.enqueue(batch).await.expect("fill");
    }
    let fill = started.elapsed();

    let lease_for = Duration::from_secs(300);
    let mut lease_calls = Vec::new();
    let mut jobs = 0;
    let started = Instant::now();
    while jobs < settings.lease_jobs {
        let called = Instant::now();
        let leases = queue
            .lease(LEASE_BATCH.min(settings.lease_jobs - jobs), lease_for)
            .await
            .expect("lease")
            .leases;
        lease_calls.push(called.elapsed());
        assert!(!leases.is_empty(), "the backlog ran dry");
        for lease in &leases {
            queue.complete(lease).await.expect("complete");
        }
        jobs += leases.len();
    }
    let elapsed = started.elapsed();
    lease_calls.sort();
    LeaseResult {
        fill,
        jobs,
        elapsed,
        lease_calls,
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn print_leasing(results: &[(&str, usize, LeaseResult)]) {
    println!("Lease + ack: lease {LEASE_BATCH}, complete each (every call a durable commit)");
    println!(
        "{:<12} {:>10} {:>9} {:>8} {:>10} {:>12} {:>12}",
        "backend", "pending", "fill s", "jobs", "jobs/s", "lease p50 ms", "lease p99 ms"
    );
    for (backend, backlog, r) in results {
        let pct = |p: f64| {
            let i = ((r.lease_calls.len() as f64 * p).ceil() as usize)
                .clamp(1, r.lease_calls.len().max(1));
            r.lease_calls
                .get(i - 1)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "{:<12} {:>10} {:>9.1} {:>8} {:>10.0} {:>12.2} {:>12.2}",
            backend,
            backlog,
            r.fill.as_secs_f64(),
            r.jobs,
            r.jobs as f64 / r.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99)
        );
    }
}
