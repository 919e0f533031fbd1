//! Harness for the end-to-end tests in `tests/tests/`: runs the real
//! `media-archiver` binary as a child process with a generated config, and
//! talks to it over HTTP like a provider and an operator would.
//!
//! The binary is the one cargo built for this workspace
//! (`target/<profile>/media-archiver`); `cargo test --workspace` builds it
//! because the `media-archiver` package has integration tests of its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::Digest as _;

/// The admin token every test config uses.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// Where archived files go in a test.
#[derive(Debug, Clone)]
pub enum StoreUnderTest {
    /// A folder in the test's temp dir.
    Fs,
    /// A bucket on a running Garage.
    S3 {
        /// `http://127.0.0.1:PORT`.
        endpoint: String,
        /// Bucket name.
        bucket: String,
        /// Key id.
        access_key_id: String,
        /// Secret key.
        secret_access_key: String,
    },
}

impl StoreUnderTest {
    /// The S3 variant for a Garage started by `test_support::garage`.
    pub fn garage(g: &test_support::garage::Garage) -> Self {
        StoreUnderTest::S3 {
            endpoint: g.endpoint.clone(),
            bucket: g.bucket.clone(),
            access_key_id: g.access_key_id.clone(),
            secret_access_key: g.secret_access_key.clone(),
        }
    }

    /// The S3 variant for a three-node cluster started by
    /// `test_support::garage`, through node 0's endpoint.
    pub fn garage_cluster(c: &test_support::garage::GarageCluster) -> Self {
        StoreUnderTest::S3 {
            endpoint: c.endpoint.clone(),
            bucket: c.bucket.clone(),
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
        }
    }
}

/// A config for tests: fast retries, private networks allowed (the fakes
/// listen on 127.0.0.1), the admin API on, plus the given accounts.
pub fn config(store: &StoreUnderTest, accounts: &str) -> String {
    let storage = match store {
        StoreUnderTest::Fs => "[storage]\nbackend = \"fs\"\npath = \"data/archive\"\n".to_owned(),
        StoreUnderTest::S3 {
            endpoint,
            bucket,
            access_key_id,
            secret_access_key,
        } => format!(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\n\
             endpoint = \"{endpoint}\"\nforce_path_style = true\naccess_key_id = \"{access_key_id}\"\n\
             secret_access_key = \"{secret_access_key}\"\n"
        ),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
admin_token = "{ADMIN_TOKEN}"

[workers]
concurrency = 4
lease = "30s"
shutdown_grace = "5s"
idle_poll = "50ms"

[retry]
initial = "100ms"
max = "500ms"
multiplier = 2.0

[fetch]
connect_timeout = "2s"
read_timeout = "2s"
allow_private_networks = true

[log]
format = "json"

{storage}
{accounts}
"#
    )
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The daemon's working directory (its `data/` lives here).
    pub workdir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

/// Runs `media-archiver args...` in `workdir` (where a daemon's
/// `config.toml` and `data/` are), with the admin token in the environment
/// and no inherited URL or config path.
pub fn cli(workdir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .current_dir(workdir)
        .env("MEDIA_ARCHIVER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("MEDIA_ARCHIVER_URL")
        .env_remove("MEDIA_ARCHIVER_CONFIG")
        .output()
        .expect("run media-archiver")
}

/// `media-archiver backfill --account account` of `references` (one JSON
/// line each, written to `workdir/backfill.jsonl`) against the daemon's
/// config in `workdir`; returns its standard output, and panics with both
/// streams if it did not exit 0.
pub fn backfill(workdir: &Path, account: &str, references: &[Value]) -> String {
    let lines: Vec<String> = references.iter().map(Value::to_string).collect();
    std::fs::write(workdir.join("backfill.jsonl"), lines.join("\n") + "\n")
        .expect("write backfill.jsonl");
    let run = cli(
        workdir,
        &[
            "backfill",
            "--config",
            "config.toml",
            "--account",
            account,
            "--input",
            "backfill.jsonl",
        ],
    );
    let (stdout, stderr) = output_text(&run);
    assert_eq!(
        run.status.code(),
        Some(0),
        "backfill failed\n{stdout}{stderr}"
    );
    stdout
}

/// A command's standard output and error, as text.
pub fn output_text(output: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `media-archiver` binary built for this workspace.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // A test runs from target/<profile>/deps/, a bench binary from
    // target/<profile>/; the daemon is target/<profile>/media-archiver.
    let dir = exe.parent().expect("target/<profile>");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    let binary = profile_dir.join("media-archiver");
    assert!(
        binary.exists(),
        "{} not built; run `cargo test --workspace` (or `cargo build -p media-archiver`)",
        binary.display()
    );
    binary
}

impl Daemon {
    /// Writes `config` to `workdir/config.toml` and starts the daemon there;
    /// returns once it logged the address it listens on.
    pub fn start(config: &str, workdir: &Path) -> Daemon {
        Self::try_start(config, workdir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Daemon::start`], but a daemon that exits or does not say where it
    /// listens within 20 s is an `Err` with its logs (it is killed), not a
    /// panic: for a caller that restarts daemons and reports failures.
    pub fn try_start(config: &str, workdir: &Path) -> Result<Daemon, String> {
        std::fs::create_dir_all(workdir).map_err(|e| format!("{}: {e}", workdir.display()))?;
        let config_path = workdir.join("config.toml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .current_dir(workdir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn media-archiver: {e}"))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            let addr_tx = addr_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(event) = serde_json::from_str::<Value>(&line)
                        && event["message"] == "listening"
                        && let Some(addr) = event["addr"].as_str()
                    {
                        let _ = addr_tx.send(addr.to_owned());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        drop(addr_tx);
        let addr = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "daemon did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                ));
            }
        };
        Ok(Daemon {
            child,
            base_url: format!("http://{addr}"),
            workdir: workdir.to_owned(),
            logs,
            http: reqwest::Client::new(),
        })
    }

    /// Everything the daemon printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// A URL on the daemon.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// POSTs raw bytes to `/webhooks/{account}` with optional headers.
    pub async fn post_raw(
        &self,
        account: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url(&format!("/webhooks/{account}")))
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("webhook request");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// POSTs a JSON webhook with `Authorization: Bearer <token>`.
    pub async fn webhook(&self, account: &str, body: &Value, token: &str) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        self.post_raw(
            account,
            serde_json::to_vec(body).unwrap(),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
        )
        .await
    }

    /// GET on the admin API.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request");
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    }

    /// Polls the admin API until job `id` is in `state` (done or dead), and
    /// returns it. Panics with the job and the logs after `timeout`.
    pub async fn wait_for_job(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        let path = format!("/api/v1/jobs/{}", id.replace(':', "%3A"));
        loop {
            let (status, job) = self.admin_get(&path).await;
            if status == 200 && job["state"] == state {
                return job;
            }
            if started.elapsed() > timeout {
                panic!(
                    "job {id} not {state} after {timeout:?}: {job}\nlogs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGKILL (a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for daemon")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sha256 of bytes as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes (incompressible, unlike zeros).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An S3 client for checking what landed in Garage.
pub async fn s3_client(store: &StoreUnderTest) -> aws_sdk_s3::Client {
    let StoreUnderTest::S3 {
        endpoint,
        access_key_id,
        secret_access_key,
        ..
    } = store
    else {
        panic!("not an S3 store");
    };
    let credentials =
        aws_sdk_s3::config::Credentials::new(access_key_id, secret_access_key, None, None, "e2e");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(credentials)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An object read back from the store under test.
#[derive(Debug)]
pub struct S3Object {
    /// User metadata (`x-amz-meta-*`).
    pub metadata: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Reads `key` from `bucket`; panics naming the key when it cannot.
pub async fn s3_object(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> S3Object {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"));
    let metadata = object.metadata().cloned().unwrap_or_default();
    let body = object.body.collect().await.unwrap().into_bytes().to_vec();
    S3Object { metadata, body }
}

/// The manifest archived for `message_id` of `account` (storage layout:
/// `messages/{account}/YYYY/MM/DD/{message_id}.json`); panics when none.
pub async fn s3_manifest(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    account: &str,
    message_id: &str,
) -> Value {
    let listed = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(format!("messages/{account}/"))
        .send()
        .await
        .unwrap();
    let key = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .find(|k| k.ends_with(&format!("/{message_id}.json")))
        .unwrap_or_else(|| panic!("no manifest for {message_id}"))
        .to_owned();
    serde_json::from_slice(&s3_object(client, bucket, &key).await.body).unwrap()
}

/// The `[queue]` section for a PostgreSQL-backed daemon in the test
/// database's private schema (append it to the accounts of [`config`]).
pub fn postgres_queue(db: &retry_queue::conformance::pg::PgTestDatabase) -> String {
    format!(
        "\n[queue]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\nmax_connections = 8\n",
        db.url(),
        db.schema
    )
}

pub use test_support::files_under;

impl Daemon {
    /// `GET /api/v1/stats`, which must answer 200.
    pub async fn stats(&self) -> Value {
        let (status, stats) = self.admin_get("/api/v1/stats").await;
        assert_eq!(status, 200, "stats: {stats}");
        stats
    }

    /// Polls the stats until no job is pending, leased or waiting, and
    /// returns them. Panics with the stats and the logs after `timeout`.
    pub async fn wait_until_idle(&self, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let stats = self.stats().await;
            let live: u64 = ["pending", "leased", "waiting"]
                .iter()
                .map(|s| stats["by_state"][*s].as_u64().unwrap_or(0))
                .sum();
            if live == 0 {
                return stats;
            }
            if started.elapsed() > timeout {
                panic!(
                    "jobs still live after {timeout:?}: {stats}\nlogs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Daemon {
    /// The daemon's process id (for reading its resource use from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Daemon {
    /// The daemon's peak resident memory (`VmHWM` in `/proc/<pid>/status`),
    /// in KiB: what a streaming pipeline must keep flat as files grow.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status (Linux)");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// Resets the peak (`echo 5 > /proc/<pid>/clear_refs`), so that the next
    /// [`Daemon::peak_rss_kib`] measures only what happens from now on.
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .expect("reset the peak RSS through /proc/<pid>/clear_refs");
    }
}

impl Daemon {
    /// Sends SIGTERM and waits at most `timeout` for the exit status; `None`
    /// if the daemon was still running then (it is left running: the
    /// caller decides whether to [`Daemon::kill`] it).
    pub fn terminate_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has exited (on its own, or after
    /// [`Daemon::kill`]); `None` while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The daemon's memory and open files now, from `/proc/<pid>` (Linux);
    /// `None` once the process is gone.
    pub fn proc_sample(&self) -> Option<ProcSample> {
        proc_sample(self.child.id())
    }

    /// Polls the stats until no job is pending, leased or waiting and
    /// returns them; `Err` with the last stats (or the error) after
    /// `timeout`. [`Daemon::wait_until_idle`] without the panic.
    pub async fn idle_within(&self, timeout: Duration) -> Result<Value, Value> {
        let started = Instant::now();
        loop {
            let (status, stats) = self.admin_get("/api/v1/stats").await;
            let live: u64 = ["pending", "leased", "waiting"]
                .iter()
                .map(|s| stats["by_state"][*s].as_u64().unwrap_or(0))
                .sum();
            if status == 200 && live == 0 {
                return Ok(stats);
            }
            if started.elapsed() > timeout {
                return Err(stats);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A process's resident memory and open file descriptors at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS of the process so far), KiB.
    pub peak_rss_kib: u64,
    /// Entries in `/proc/<pid>/fd`.
    pub open_fds: u64,
}

/// [`ProcSample`] of process `pid`; `None` if it is gone (or not Linux).
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcSample {
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
        open_fds,
    })
}

/// A 127.0.0.1 port that was free a moment ago (for a daemon that must come
/// back on the same address after a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Every key under `prefix` in `bucket` with its size, all pages.
pub async fn s3_keys(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, i64)>, String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| format!("list {prefix}: {e:?}"))?;
        out.extend(
            page.contents()
                .iter()
                .filter_map(|o| Some((o.key()?.to_owned(), o.size().unwrap_or(0)))),
        );
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
            _ => return Ok(out),
        }
    }
}

/// An object's bytes, or why it could not be read.
pub async fn s3_get(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, String> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| format!("{key}: {e:?}"))?;
    let body = object
        .body
        .collect()
        .await
        .map_err(|e| format!("{key}: {e}"))?;
    Ok(body.into_bytes().to_vec())
}
