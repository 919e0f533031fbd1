//! `archive-bench`: what the daemon costs and delivers, measured side by side
//! with `rclone copy` in one run (issue 6). Not a test: it prints a table and
//! writes `BENCHMARKS-archive.svg`.
//!
//! ```text
//! cargo build --release -p media-archiver
//! cargo run --release -p e2e --bin archive-bench            # full run
//! cargo run --release -p e2e --bin archive-bench -- --quick # smaller files
//! cargo run --release -p e2e --bin archive-bench -- --only small    # or large, or rss (peak RSS only)
//! cargo run --release -p e2e --bin archive-bench -- --parts 8       # max_parallel_parts
//! cargo run --release -p e2e --bin archive-bench -- --stream-buffers 0  # no stream-through
//! cargo run --release -p e2e --bin archive-bench -- --pipe-parts    # storage.s3.pipe_parts
//! ```
//!
//! Method: one local HTTP file host (this process, serving files from
//! memory, with an HTML index so that rclone's `http` backend can list it),
//! one single-node Garage (the same bucket for both tools), and the release
//! daemon with an S3 store and `workers.concurrency = 16`. Each size runs
//! twice for the daemon: announced by Green API webhooks (the file host's
//! URLs; no hash vouched for, `computed-only`) and by Cloud API webhooks
//! (the fake Graph API serving the same bytes from memory; the sha256
//! vouched for in the webhook, `provider-sha256`); rclone copies the same
//! files from the file host right after each daemon run. Each workload is
//! timed from the first webhook to the last job `done` (so queueing, sha256,
//! the S3 checksums and the manifests are all inside the figure); rclone is
//! timed around `rclone copy` with `--transfers 16` and the same 8 MiB parts.
//! Peak RSS is the daemon's `VmHWM` after archiving, in a fresh process,
//! one file of each size, then 16 large files at once, from each announcer
//! (Green API files are staged in the spool; Cloud API files, whose hash is
//! vouched for, stream through the daemon's part buffers, or with
//! `--pipe-parts` straight into the part requests). CPU is each tool's own user+system time over its
//! workload (the daemon's from `/proc/<pid>/stat`, rclone's from this
//! process's waited-children times), per GiB archived and per file;
//! Garage's CPU over each tool's run is printed apart (per file), since on
//! a shared machine what a tool's requests cost the store slows both.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::accounts::{self, GREEN_WEBHOOK_TOKEN};
use e2e::process::{cpu_seconds, waited_children_cpu_seconds};
use e2e::{Daemon, StoreUnderTest, bytes as random_bytes, config, now};
use serde_json::{Value, json};
use test_support::garage::Garage;
use test_support::http::{TestServer, response};
use test_support::meta::{FakeCloudApi, HashEncoding};

const MIB: usize = 1024 * 1024;

/// Files served by the bench's host, by path (`/{set}/{name}`).
type Files = Arc<HashMap<String, Bytes>>;

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    set: &'static str,
    count: usize,
    size: usize,
}

/// Who announces a workload's files to the daemon.
#[derive(Debug, Clone, Copy)]
enum Announcer {
    /// Green API webhooks with the file host's URLs: no hash vouched for.
    GreenApi,
    /// Cloud API webhooks for media registered with the fake Graph API,
    /// with the sha256 in the webhook.
    CloudApi,
}

impl Announcer {
    fn label(self) -> &'static str {
        match self {
            Announcer::GreenApi => "Green API, computed-only",
            Announcer::CloudApi => "Cloud API, provider-sha256",
        }
    }

    fn account(self) -> &'static str {
        match self {
            Announcer::GreenApi => "green",
            Announcer::CloudApi => "cloud",
        }
    }
}

/// One webhook as posted: path, headers, raw body.
struct Hook {
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// The webhooks announcing workload `w` through `announcer`.
fn hooks(
    announcer: Announcer,
    cloud: &FakeCloudApi,
    files: &Files,
    host: &str,
    w: &Workload,
) -> Vec<Hook> {
    (0..w.count)
        .map(|i| match announcer {
            Announcer::GreenApi => Hook {
                path: "/webhooks/green".into(),
                headers: vec![("authorization", format!("Bearer {GREEN_WEBHOOK_TOKEN}"))],
                body: serde_json::to_vec(&webhook(host, w.set, i, w.size)).expect("json"),
            },
            Announcer::CloudApi => {
                let bytes = &files[&format!("/{}/{}", w.set, file_name(i))];
                let media_id = cloud.add_media("video", bytes.to_vec(), "video/mp4");
                let message_id =
                    format!("wamid.BENCH{}{i:06}", w.set.replace('-', "").to_uppercase());
                let hook =
                    cloud.message_webhook(&media_id, &message_id, now(), HashEncoding::Base64);
                let body = serde_json::to_vec(&hook).expect("json");
                Hook {
                    path: "/webhooks/cloud".into(),
                    headers: vec![("x-hub-signature-256", cloud.sign(&body))],
                    body,
                }
            }
        })
        .collect()
}

struct Measured {
    seconds: f64,
    bytes: u64,
    files: usize,
    /// CPU time (user + system) of the tool while it worked.
    cpu_seconds: f64,
    /// Garage's CPU time over the same span: what the tool's requests cost
    /// the store.
    store_cpu_seconds: f64,
}

impl Measured {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }

    fn files_per_s(&self) -> f64 {
        self.files as f64 / self.seconds
    }

    fn cpu_per_gib(&self) -> f64 {
        self.cpu_seconds / (self.bytes as f64 / (1u64 << 30) as f64)
    }

    /// Milliseconds of the tool's CPU per file.
    fn cpu_ms_per_file(&self) -> f64 {
        self.cpu_seconds * 1e3 / self.files as f64
    }

    /// Milliseconds of Garage's CPU per file.
    fn store_cpu_ms_per_file(&self) -> f64 {
        self.store_cpu_seconds * 1e3 / self.files as f64
    }
}

fn file_name(i: usize) -> String {
    format!("f{i:05}.mp4")
}

async fn file_host(files: Files) -> TestServer {
    TestServer::start(move |request| {
        let files = files.clone();
        async move {
            let path = request.uri().path().to_owned();
            if let Some(body) = files.get(&path) {
                return response(200, "video/mp4", body.clone());
            }
            // rclone's http backend lists a directory from its HTML index.
            let dir = path.trim_end_matches('/');
            let mut names: Vec<&str> = files
                .keys()
                .filter_map(|k| k.strip_prefix(dir).and_then(|r| r.strip_prefix('/')))
                .collect();
            if names.is_empty() {
                return response(404, "text/plain", "not found");
            }
            // A directory without its trailing slash redirects, as web
            // servers do: rclone probes the bare path, and a 200 there makes
            // it copy the index page as if it were the one file.
            if !path.ends_with('/') {
                let mut moved = response(301, "text/plain", "");
                if let Ok(location) = format!("{path}/").parse() {
                    moved.headers_mut().insert("location", location);
                }
                return moved;
            }
            names.sort_unstable();
            let mut html = String::from("<html><body>\n");
            for name in names {
                let _ = writeln!(html, "<a href=\"{name}\">{name}</a>");
            }
            html.push_str("</body></html>\n");
            response(200, "text/html", html)
        }
    })
    .await
}

fn bench_config(store: &StoreUnderTest, host: &str, cloud: &FakeCloudApi) -> String {
    config(
        store,
        &(accounts::green_api_at(host, "1101000001", "bench-token") + &accounts::cloud_api(cloud)),
    )
    .replace("concurrency = 4", "concurrency = 16")
    .replace("max_body_bytes = 65536", "max_body_bytes = 4194304")
    .replace("read_timeout = \"2s\"", "read_timeout = \"60s\"")
    .replace("lease = \"30s\"", "lease = \"5m\"")
}

fn webhook(host: &str, set: &str, i: usize, size: usize) -> Value {
    json!({
        "typeWebhook": "incomingMessageReceived",
        "instanceData": {"idInstance": 1101000001u64, "wid": "79876543210@c.us", "typeInstance": "whatsapp"},
        "timestamp": now(),
        "idMessage": format!("BENCH{}{i:027}", set.to_uppercase().chars().next().unwrap_or('X')),
        "senderData": {"chatId": "79001234568@c.us", "chatName": "bench", "sender": "79001234568@c.us", "senderName": "bench"},
        "messageData": {"typeMessage": "videoMessage", "fileMessageData": {
            "downloadUrl": format!("{host}/{set}/{}", file_name(i)),
            "caption": "", "fileName": file_name(i), "jpegThumbnail": "", "mimeType": "video/mp4",
            "isForwarded": false, "forwardingScore": 0, "videoNote": false, "size": size
        }}
    })
}

/// Posts every webhook (32 in flight) and waits until all jobs are done.
async fn archive_with_daemon(
    daemon: &Daemon,
    hooks: Vec<Hook>,
    account: &str,
    w: &Workload,
) -> Measured {
    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let client = reqwest::Client::new();
    for hook in hooks {
        if in_flight.len() >= 32 {
            in_flight.join_next().await;
        }
        let mut request = client
            .post(daemon.url(&hook.path))
            .header("content-type", "application/json")
            .body(hook.body);
        for (name, value) in hook.headers {
            request = request.header(name, value);
        }
        in_flight.spawn(async move {
            let status = request.send().await.map(|r| r.status());
            assert_eq!(
                status.ok().map(|s| s.as_u16()),
                Some(200),
                "webhook not accepted"
            );
        });
    }
    while in_flight.join_next().await.is_some() {}
    /// Longer than any workload takes when nothing goes wrong.
    const STALL: Duration = Duration::from_secs(60);
    let mut stall_reported = false;
    loop {
        let (_, stats) = daemon.admin_get("/api/v1/stats").await;
        let done = stats["by_account"][account]["done"].as_u64().unwrap_or(0);
        let dead = stats["by_state"]["dead"].as_u64().unwrap_or(0);
        assert_eq!(dead, 0, "a bench job died: {stats}");
        if done as usize >= w.count {
            break;
        }
        if !stall_reported && started.elapsed() > STALL {
            // A figure this slow is a stall, not a rate: say what the
            // daemon logged about it.
            stall_reported = true;
            eprintln!(
                "{}: {done} of {} done after {STALL:?}; the daemon's warnings and errors:\n{}\nstats: {stats}",
                w.name,
                w.count,
                warnings(daemon).join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // A retried attempt is part of the figure: say so.
    let warnings = warnings(daemon);
    if !warnings.is_empty() {
        eprintln!(
            "{}: the daemon logged {} warnings or errors; the first:\n{}",
            w.name,
            warnings.len(),
            warnings[..warnings.len().min(5)].join("\n")
        );
    }
    Measured {
        seconds,
        bytes: (w.count * w.size) as u64,
        files: w.count,
        // The caller reads the CPU times around this.
        cpu_seconds: 0.0,
        store_cpu_seconds: 0.0,
    }
}

/// The daemon's log lines at level WARN or ERROR.
fn warnings(daemon: &Daemon) -> Vec<String> {
    daemon
        .logs()
        .lines()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .map(str::to_owned)
        .collect()
}

/// rclone with the bench's two remotes: `src:` (the file host, rclone's
/// `http` backend) and `dst:` (Garage), configured from the environment.
fn rclone(garage: &Garage, host: &str) -> std::process::Command {
    let mut command = std::process::Command::new("rclone");
    command
        .args(["--config", "/dev/null", "-q"])
        .env("RCLONE_CONFIG_SRC_TYPE", "http")
        .env("RCLONE_CONFIG_SRC_URL", format!("{host}/"))
        .env("RCLONE_CONFIG_DST_TYPE", "s3")
        .env("RCLONE_CONFIG_DST_PROVIDER", "Other")
        .env("RCLONE_CONFIG_DST_ENDPOINT", &garage.endpoint)
        .env("RCLONE_CONFIG_DST_REGION", &garage.region)
        .env("RCLONE_CONFIG_DST_ACCESS_KEY_ID", &garage.access_key_id)
        .env(
            "RCLONE_CONFIG_DST_SECRET_ACCESS_KEY",
            &garage.secret_access_key,
        )
        .env("RCLONE_CONFIG_DST_FORCE_PATH_STYLE", "true")
        // The endpoint is plain HTTP on loopback; a CA bundle from the
        // environment only makes rclone's S3 client refuse to start.
        .env_remove("AWS_CA_BUNDLE");
    command
}

fn rclone_copy(garage: &Garage, host: &str, w: &Workload) -> Measured {
    let cpu_before = waited_children_cpu_seconds().expect("/proc/self/stat");
    let store_before = store_cpu(garage);
    let started = Instant::now();
    let status = rclone(garage, host)
        .args([
            "copy",
            &format!("src:{}", w.set),
            &format!("dst:{}/rclone/{}", garage.bucket, w.set),
        ])
        .args(["--transfers", "16", "--checkers", "16"])
        .args(["--s3-chunk-size", "8M", "--s3-upload-cutoff", "8M"])
        .args(["--s3-upload-concurrency", "4"])
        .status()
        .expect("run rclone (apt-get install rclone)");
    assert!(status.success(), "rclone failed: {status}");
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_seconds = waited_children_cpu_seconds().expect("/proc/self/stat") - cpu_before;
    let store_cpu_seconds = store_cpu(garage) - store_before;
    let copied = rclone_object_count(garage, host, w);
    assert_eq!(
        copied, w.count,
        "rclone reported success but copied {copied} of {} files: its figure would be meaningless",
        w.count
    );
    Measured {
        seconds: elapsed,
        bytes: (w.count * w.size) as u64,
        files: w.count,
        cpu_seconds,
        store_cpu_seconds,
    }
}

/// Garage's CPU time so far, seconds.
fn store_cpu(garage: &Garage) -> f64 {
    garage.pid().and_then(cpu_seconds).unwrap_or(0.0)
}

/// Objects under the prefix rclone copied `w` to, counted by rclone itself.
fn rclone_object_count(garage: &Garage, host: &str, w: &Workload) -> usize {
    let out = rclone(garage, host)
        .args(["lsf", "--files-only", "-R"])
        .arg(format!("dst:{}/rclone/{}", garage.bucket, w.set))
        .output()
        .expect("run rclone lsf");
    assert!(out.status.success(), "rclone lsf failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn svg_chart(rows: &[(String, f64, f64)], rss: &[(String, u64)]) -> String {
    let (x0, y0, plot_h, group_w) = (60.0, 300.0, 240.0, 160.0);
    // Wide enough for every group and the legend beside them; tall enough
    // for the legend's lines.
    let legend_x = x0 + rows.len() as f64 * (group_w + 40.0);
    let (w, h) = (
        legend_x + 420.0,
        (150.0 + 18.0 * rss.len() as f64).max(360.0),
    );
    let max = rows.iter().flat_map(|r| [r.1, r.2]).fold(1.0f64, f64::max) * 1.15;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"20\" y=\"22\" font-size=\"15\">Archive throughput, MB/s (higher is better): media-archiver vs rclone copy</text>\n"
    );
    for (g, (name, ours, rclone)) in rows.iter().enumerate() {
        let gx = x0 + g as f64 * (group_w + 40.0);
        for (k, (value, colour, label)) in [
            (*ours, "#2b6cb0", "media-archiver"),
            (*rclone, "#a0aec0", "rclone"),
        ]
        .into_iter()
        .enumerate()
        {
            let bh = value / max * plot_h;
            let bx = gx + k as f64 * (group_w / 2.0);
            let _ = writeln!(
                svg,
                "<rect x=\"{bx:.0}\" y=\"{:.0}\" width=\"{:.0}\" height=\"{bh:.0}\" fill=\"{colour}\"><title>{label}</title></rect>\n\
                 <text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{value:.0}</text>",
                y0 - bh,
                group_w / 2.0 - 8.0,
                bx + group_w / 4.0 - 4.0,
                y0 - bh - 4.0
            );
        }
        // "size (announcer)" on two lines: one would overrun its group.
        let (size, announcer) = name.split_once(" (").unwrap_or((name.as_str(), ""));
        for (line, text) in [size, announcer.trim_end_matches(')')].iter().enumerate() {
            let _ = writeln!(
                svg,
                "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{text}</text>",
                gx + group_w / 2.0,
                y0 + 18.0 + 15.0 * line as f64
            );
        }
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{:.0}\" y2=\"{y0}\" stroke=\"black\"/>",
        w - 20.0
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{legend_x:.0}\" y=\"60\" width=\"12\" height=\"12\" fill=\"#2b6cb0\"/><text x=\"{:.0}\" y=\"71\">media-archiver</text>\n\
         <rect x=\"{legend_x:.0}\" y=\"80\" width=\"12\" height=\"12\" fill=\"#a0aec0\"/><text x=\"{:.0}\" y=\"91\">rclone copy</text>",
        legend_x + 18.0,
        legend_x + 18.0
    );
    let mut y = 130.0;
    let _ = writeln!(
        svg,
        "<text x=\"{legend_x:.0}\" y=\"{y}\">daemon peak RSS:</text>"
    );
    for (what, kib) in rss {
        y += 18.0;
        let _ = writeln!(
            svg,
            "<text x=\"{legend_x:.0}\" y=\"{y}\">{what}: {:.1} MiB</text>",
            *kib as f64 / 1024.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    // `--only small|large|rss`: one size alone, or peak RSS alone (A/B runs
    // of one change).
    let only = value_of("--only");
    // `--parts N`: the daemon's `storage.s3.max_parallel_parts`.
    let parts: Option<usize> = value_of("--parts").map(|n| n.parse().expect("--parts N"));
    // `--stream-buffers N`: the daemon's `storage.s3.stream_buffers` (0:
    // no stream-through, every file staged).
    let stream_buffers: Option<usize> =
        value_of("--stream-buffers").map(|n| n.parse().expect("--stream-buffers N"));
    // `--pipe-parts`: the daemon's `storage.s3.pipe_parts` (stream-through
    // parts piped into their requests, no part buffers).
    let pipe_parts = args.iter().any(|a| a == "--pipe-parts");
    let (small, large, rss_sizes) = if quick {
        (
            Workload {
                name: "200 files x 200 KiB",
                set: "small",
                count: 200,
                size: 200 * 1024,
            },
            Workload {
                name: "2 files x 64 MiB",
                set: "large",
                count: 2,
                size: 64 * MIB,
            },
            vec![16usize, 64],
        )
    } else {
        (
            Workload {
                name: "1000 files x 200 KiB",
                set: "small",
                count: 1000,
                size: 200 * 1024,
            },
            Workload {
                name: "4 files x 256 MiB",
                set: "large",
                count: 4,
                size: 256 * MIB,
            },
            vec![64usize, 256, 1024],
        )
    };
    // Peak RSS with many large files in flight at once: `workers.concurrency`
    // (16) of them, each larger than the stream buffers can hold.
    let parallel = Workload {
        name: "rss-parallel",
        set: "rss-parallel",
        count: 16,
        size: if quick { 16 * MIB } else { 64 * MIB },
    };
    let Some(garage) = Garage::start() else {
        eprintln!(
            "archive-bench needs garage on PATH (cargo install garage --version 2.5.0 --locked)"
        );
        std::process::exit(1);
    };
    let store = StoreUnderTest::garage(&garage);

    // Every run gets bytes of its own: Garage keeps one copy of a block
    // whatever objects share it, so a tool copying bytes the other had
    // just stored would skip its block writes.
    const ANNOUNCERS: [Announcer; 2] = [Announcer::GreenApi, Announcer::CloudApi];
    let set_of = |w: &Workload, tool: &str, a: Announcer| -> &'static str {
        Box::leak(format!("{}-{tool}-{}", w.set, a.account()).into_boxed_str())
    };
    let mut files = HashMap::new();
    let mut seed = 0u64;
    for w in [&small, &large] {
        for a in ANNOUNCERS {
            for tool in ["daemon", "rclone"] {
                let set = set_of(w, tool, a);
                for i in 0..w.count {
                    seed += 1;
                    files.insert(
                        format!("/{set}/{}", file_name(i)),
                        Bytes::from(random_bytes(w.size, seed)),
                    );
                }
            }
        }
    }
    for &mib in &rss_sizes {
        files.insert(
            format!("/rss{mib}/{}", file_name(0)),
            Bytes::from(random_bytes(mib * MIB, mib as u64)),
        );
    }
    for i in 0..parallel.count {
        files.insert(
            format!("/{}/{}", parallel.set, file_name(i)),
            Bytes::from(random_bytes(parallel.size, 10_000 + i as u64)),
        );
    }
    let files: Files = Arc::new(files);
    let host = file_host(files.clone()).await;
    let host_url = host.base_url();
    let cloud = FakeCloudApi::start().await;

    let mut rows = Vec::new();
    let sizes: Vec<&Workload> = match only.as_deref() {
        Some("small") => vec![&small],
        Some("large") => vec![&large],
        Some("rss") => vec![],
        Some(other) => panic!("--only small|large|rss, not {other}"),
        None => vec![&small, &large],
    };
    let bench_config = |store: &StoreUnderTest, host: &str, cloud: &FakeCloudApi| {
        let mut s3 = String::new();
        if let Some(n) = parts {
            s3.push_str(&format!("max_parallel_parts = {n}\n"));
        }
        if let Some(n) = stream_buffers {
            s3.push_str(&format!("stream_buffers = {n}\n"));
        }
        if pipe_parts {
            s3.push_str("pipe_parts = true\n");
        }
        bench_config(store, host, cloud).replace("[storage.s3]\n", &format!("[storage.s3]\n{s3}"))
    };
    for w in sizes {
        for a in ANNOUNCERS {
            let ours_set = Workload {
                set: set_of(w, "daemon", a),
                ..*w
            };
            let hooks = hooks(a, &cloud, &files, &host_url, &ours_set);
            let dir = tempfile::tempdir().expect("temp dir");
            let daemon = Daemon::start(&bench_config(&store, &host_url, &cloud), dir.path());
            let cpu_before = cpu_seconds(daemon.pid()).unwrap_or(0.0);
            let store_before = store_cpu(&garage);
            let mut ours = archive_with_daemon(&daemon, hooks, a.account(), &ours_set).await;
            ours.cpu_seconds = cpu_seconds(daemon.pid()).unwrap_or(0.0) - cpu_before;
            ours.store_cpu_seconds = store_cpu(&garage) - store_before;
            drop(daemon);
            let theirs_set = Workload {
                set: set_of(w, "rclone", a),
                ..*w
            };
            let theirs = rclone_copy(&garage, &host_url, &theirs_set);
            rows.push((format!("{} ({})", w.name, a.label()), ours, theirs));
        }
    }

    // Peak RSS of a fresh daemon after one file of each size, then after
    // `parallel`, from each announcer (staged: Green API; streamed through:
    // Cloud API).
    let mut rss = Vec::new();
    let rss_runs = rss_sizes
        .iter()
        .map(|&mib| Workload {
            name: Box::leak(format!("one {mib} MiB file").into_boxed_str()),
            set: Box::leak(format!("rss{mib}").into_boxed_str()),
            count: 1,
            size: mib * MIB,
        })
        .chain([Workload {
            name: Box::leak(
                format!("{} x {} MiB in flight", parallel.count, parallel.size / MIB)
                    .into_boxed_str(),
            ),
            ..parallel
        }]);
    for w in rss_runs.filter(|_| matches!(only.as_deref(), None | Some("rss"))) {
        for a in ANNOUNCERS {
            let dir = tempfile::tempdir().expect("temp dir");
            let daemon = Daemon::start(&bench_config(&store, &host_url, &cloud), dir.path());
            let hooks = hooks(a, &cloud, &files, &host_url, &w);
            archive_with_daemon(&daemon, hooks, a.account(), &w).await;
            rss.push((format!("{} ({})", w.name, a.label()), daemon.peak_rss_kib()));
        }
    }

    println!();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!();
    println!(
        "| workload | media-archiver | rclone copy | rate ratio | CPU-s/GiB media-archiver / rclone |"
    );
    println!("|---|---|---|---|---|");
    for (name, ours, theirs) in &rows {
        println!(
            "| {name} | {:.1} s, {:.0} MB/s, {:.0} files/s | {:.1} s, {:.0} MB/s, {:.0} files/s | {:.2}x | {:.2} / {:.2} ({:.2}x) |",
            ours.seconds,
            ours.mb_per_s(),
            ours.files_per_s(),
            theirs.seconds,
            theirs.mb_per_s(),
            theirs.files_per_s(),
            ours.mb_per_s() / theirs.mb_per_s(),
            ours.cpu_per_gib(),
            theirs.cpu_per_gib(),
            ours.cpu_per_gib() / theirs.cpu_per_gib()
        );
    }
    println!();
    println!(
        "| workload | CPU ms per file: media-archiver / rclone | Garage's CPU ms per file: for media-archiver / for rclone |"
    );
    println!("|---|---|---|");
    for (name, ours, theirs) in &rows {
        println!(
            "| {name} | {:.2} / {:.2} | {:.2} / {:.2} |",
            ours.cpu_ms_per_file(),
            theirs.cpu_ms_per_file(),
            ours.store_cpu_ms_per_file(),
            theirs.store_cpu_ms_per_file()
        );
    }
    println!();
    println!("| archived by a fresh daemon | daemon peak RSS |");
    println!("|---|---|");
    for (what, kib) in &rss {
        println!("| {what} | {:.1} MiB |", *kib as f64 / 1024.0);
    }
    let chart_rows: Vec<(String, f64, f64)> = rows
        .iter()
        .map(|(n, o, t)| (n.clone(), o.mb_per_s(), t.mb_per_s()))
        .collect();
    let path = "BENCHMARKS-archive.svg";
    std::fs::write(path, svg_chart(&chart_rows, &rss)).expect("write chart");
    println!("chart: {path}");
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
