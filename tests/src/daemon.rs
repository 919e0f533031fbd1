//! The real daemon as a child process: started with a config in a working
//! directory, ready once it logged the address it listens on, stopped by
//! SIGTERM or SIGKILL (or when dropped), and talked to over HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::ADMIN_TOKEN;
use crate::process::{ProcSample, proc_sample};

/// How long a daemon may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running daemon; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The daemon's working directory (its `config.toml` and `data/`).
    pub workdir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
    /// The working directory when the daemon owns it: removed after the
    /// process is killed (fields drop after [`Drop::drop`]).
    _temp_dir: Option<tempfile::TempDir>,
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

/// A 127.0.0.1 port for a daemon that must come back on the same address
/// after a restart (see `test_support::ports` for why not port 0).
pub fn free_port() -> u16 {
    test_support::ports::reserved_addr().port()
}

impl Daemon {
    /// Writes `config` to `workdir/config.toml` and starts the daemon there;
    /// returns once it logged the address it listens on.
    pub fn start(config: &str, workdir: &Path) -> Daemon {
        Self::try_start(config, workdir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Daemon::start`] in a temp dir of its own, removed with the daemon:
    /// for a test that does not restart it.
    pub fn start_in_temp_dir(config: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir for the daemon");
        let mut daemon = Self::start(config, dir.path());
        daemon._temp_dir = Some(dir);
        daemon
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
        let Ok(addr) = addr_rx.recv_timeout(START_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "daemon did not start; logs:\n{}",
                logs.lock().unwrap().join("\n")
            ));
        };
        Ok(Daemon {
            child,
            base_url: format!("http://{addr}"),
            workdir: workdir.to_owned(),
            logs,
            http: reqwest::Client::new(),
            _temp_dir: None,
        })
    }

    /// Everything the daemon printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits until the daemon has logged `needle` (its output is collected
    /// by a reader thread, so a line may land just after the request that
    /// caused it); panics with the logs after 10 s.
    pub async fn wait_for_log(&self, needle: &str) {
        let started = Instant::now();
        while !self.logs().contains(needle) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{needle:?} never logged:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
        answer(request.send().await.expect("webhook request")).await
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

    /// `method path` (no body), with `Authorization: Bearer <token>` when
    /// `token` is given: the status and the JSON answer (`Null` if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.expect("request to the daemon")).await
    }

    /// GET on the admin API with the admin token.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(ADMIN_TOKEN))
            .await
    }

    /// `POST path` with a JSON `body` and the admin token: the status and
    /// the JSON answer.
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let request = self
            .http
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(body);
        answer(request.send().await.expect("request to the daemon")).await
    }

    /// `GET /api/v1/jobs/{id}` (the id percent-encoded).
    pub async fn job(&self, id: &str) -> (u16, Value) {
        self.admin_get(&format!("/api/v1/jobs/{}", id.replace(':', "%3A")))
            .await
    }

    /// Polls the admin API until job `id` is in `state` (done or dead), and
    /// returns it. Panics with the job and the logs after `timeout`.
    pub async fn wait_for_job(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (status, job) = self.job(id).await;
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

    /// `GET /api/v1/notifications?{query}`, which must answer 200: the
    /// notifications listed.
    pub async fn notifications(&self, query: &str) -> Vec<Value> {
        let (status, answer) = self
            .admin_get(&format!("/api/v1/notifications?{query}"))
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls the admin API until a notification that `matches` is listed,
    /// and returns it. Panics with the list and the logs after `timeout`.
    pub async fn wait_for_notification(
        &self,
        what: &str,
        matches: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let started = Instant::now();
        loop {
            let all = self.notifications("limit=1000").await;
            if let Some(found) = all.iter().find(|n| matches(n)) {
                return found.clone();
            }
            if started.elapsed() > timeout {
                panic!(
                    "no notification {what} after {timeout:?}: {all:?}\nlogs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `GET /metrics` until `series` has `value` (a counter counted
    /// just after the state it counts is visible). Panics after `timeout`.
    pub async fn wait_for_metric(&self, series: &str, value: f64, timeout: Duration) {
        let started = Instant::now();
        loop {
            let text = self.metrics().await;
            if metric_sample(&text, series) == Some(value) {
                return;
            }
            if started.elapsed() > timeout {
                panic!("{series} never became {value} after {timeout:?}:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /metrics`, the Prometheus exposition.
    pub async fn metrics(&self) -> String {
        let answer = self.http.get(self.url("/metrics")).send().await;
        answer
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics' text")
    }

    /// The value of `series` (`name{labels}`) in `GET /metrics`, 0 when the
    /// daemon has not counted it yet.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_sample(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// `GET /api/v1/stats`, which must answer 200.
    pub async fn stats(&self) -> Value {
        let (status, stats) = self.admin_get("/api/v1/stats").await;
        assert_eq!(status, 200, "stats: {stats}");
        stats
    }

    /// Polls the stats until no job is pending, leased or waiting and
    /// returns them; `Err` with the last stats (or the error) after
    /// `timeout`.
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
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Daemon::idle_within`], panicking with the stats and the logs.
    pub async fn wait_until_idle(&self, timeout: Duration) -> Value {
        self.idle_within(timeout).await.unwrap_or_else(|stats| {
            panic!(
                "jobs still live after {timeout:?}: {stats}\nlogs:\n{}",
                self.logs()
            )
        })
    }

    /// Sends SIGKILL (a crash) and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        self.child.wait().expect("wait for daemon")
    }

    /// Sends SIGTERM and waits at most `timeout` for the exit status; `None`
    /// if the daemon was still running then (it is left running: the
    /// caller decides whether to [`Daemon::kill`] it).
    pub fn terminate_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.sigterm();
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// The exit status if the process has exited (on its own, or after
    /// [`Daemon::kill`]); `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's memory and open files now (Linux); `None` once the
    /// process is gone.
    pub fn proc_sample(&self) -> Option<ProcSample> {
        proc_sample(self.child.id())
    }

    /// The daemon's peak resident memory so far, KiB: what a streaming
    /// pipeline must keep flat as files grow.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_sample()
            .expect("read /proc/<pid>/status (Linux)")
            .peak_rss_kib
    }

    /// Resets the peak (`echo 5 > /proc/<pid>/clear_refs`), so that the next
    /// [`Daemon::peak_rss_kib`] measures only what happens from now on.
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .expect("reset the peak RSS through /proc/<pid>/clear_refs");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status of an answer and its JSON body (`Null` when not JSON).
async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The value of one sample line (`name{labels} value`) in an exposition.
pub fn metric_sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
