//! A real S3-compatible server for tests: a single-node Garage in a temp dir
//! ([`Garage`]), or a three-node cluster ([`GarageCluster`]).
//!
//! Garage checks `ChecksumSHA256` on PutObject and UploadPart and SigV4
//! signatures, which fakes such as moto do not, so integrity tests run
//! against it. The binary is not a Cargo dependency (it takes ten minutes to
//! build): it is looked up in `$GARAGE_BIN`, then `PATH`, then
//! `$CARGO_HOME/bin` (`~/.cargo/bin`), where `cargo install garage --locked`
//! puts it. Without it, [`Garage::start`] (and [`GarageCluster::start`])
//! returns `None` and the test skips, unless `MEDIA_ARCHIVER_REQUIRE_S3=1`
//! (CI), which makes it a failure.
//!
//! [`GarageCluster`] is three `garage server` processes on 127.0.0.1, each
//! with its own config, metadata and data dirs, RPC, S3 and admin ports, and
//! one shared `rpc_secret`, with `replication_factor = 3` (every object on
//! every node; reads and writes need a quorum of two). It is built the way
//! an operator builds one: start the three nodes, `garage node id` on each,
//! `garage node connect <id>@<rpc addr>` from node 0 to the two others,
//! `garage layout assign -z zone-<i> -c 1G <id>` for each node (three
//! zones) and `garage layout apply --version 1`, then `garage bucket create`,
//! `garage key import` and `garage bucket allow --read --write --owner`.
//! Clients use node 0's S3 endpoint ([`GarageCluster::endpoint`]); any
//! node's answers ([`GarageCluster::endpoints`]). A node can be stopped
//! (losing it: the two others still form a quorum) and started again on
//! the same ports and data; it finds its peers from the peer list it keeps
//! in its metadata dir.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ids::random_hex;

/// How long a start may take before the test fails (the machine may be busy
/// compiling; Garage itself is ready in about 0.1 s).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running single-node Garage with one bucket and one key allowed on it.
/// Dropping it kills the server and deletes its data.
#[derive(Debug)]
pub struct Garage {
    /// `http://127.0.0.1:PORT`, the S3 API (path-style addressing).
    pub endpoint: String,
    /// The S3 region Garage expects in signatures (`us-east-1`).
    pub region: String,
    /// The bucket created at startup.
    pub bucket: String,
    /// Access key id with read/write/owner rights on `bucket`.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    bin: PathBuf,
    /// Config, metadata, data and log; kept across restarts.
    dir: tempfile::TempDir,
    s3_addr: SocketAddr,
    admin_addr: SocketAddr,
    child: Option<Child>,
}

impl Garage {
    /// Starts a single-node Garage in a temp dir on free 127.0.0.1 ports and
    /// returns it once it answers S3 requests for its bucket.
    ///
    /// Without a `garage` binary: panics when `MEDIA_ARCHIVER_REQUIRE_S3=1`,
    /// otherwise prints a skip notice to stderr and returns `None`. A binary
    /// that is present but fails to start always panics.
    pub fn start() -> Option<Garage> {
        let bin = binary_or_skip()?;
        let dir = temp_dir("garage-test-");
        let [rpc_addr, s3_addr, admin_addr] = crate::ports::reserved_addrs();
        let config = node_config(
            dir.path(),
            1,
            rpc_addr,
            &random_hex(64),
            s3_addr,
            admin_addr,
        );
        fs::write(dir.path().join("garage.toml"), config).expect("write garage.toml");
        let (access_key_id, secret_access_key) = new_key();
        let mut garage = Garage {
            endpoint: format!("http://{s3_addr}"),
            region: "us-east-1".into(),
            bucket: "media-archiver-test".into(),
            access_key_id,
            secret_access_key,
            bin,
            dir,
            s3_addr,
            admin_addr,
            child: None,
        };
        garage.spawn();
        Some(garage)
    }

    /// Kills the server (as a crash or outage would). Data stays; see
    /// [`Garage::restart`]. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports, with the same data, keys
    /// and bucket, and waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The server's process id while it runs (benches read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server's log so far (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Creates bucket `name` with read, write and owner rights for this
    /// Garage's key (an account with a bucket of its own).
    pub fn create_bucket(&self, name: &str) {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            &self.access_key_id,
        ]);
    }

    /// Runs the `garage` CLI against this node; panics if it fails.
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.bin.display()));
        assert!(
            output.status.success(),
            "garage {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    fn spawn(&mut self) {
        let config = self.dir.path().join("garage.toml");
        let child = server(&self.bin, &config, &self.log_path())
            .args(["--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key_id)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_access_key)
            .env("GARAGE_DEFAULT_BUCKET", &self.bucket)
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Ready means: the admin API says the node is healthy, and the S3 API
    /// answers for the bucket (an unsigned request is refused, but only a
    /// live S3 endpoint refuses it with an S3 error document).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "garage exited during startup ({status}); log:\n{}",
                    self.log()
                );
            }
            let healthy = http_status(self.admin_addr, "/health") == Some(200);
            if healthy && http_status(self.s3_addr, &format!("/{}", self.bucket)).is_some() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "garage did not become ready within {READY_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The number of nodes of a [`GarageCluster`] (and its replication factor).
pub const CLUSTER_NODES: usize = 3;

/// A running three-node Garage cluster (replication factor 3, one zone per
/// node) with one bucket and one key allowed on it; see the module docs for
/// how it is assembled. Dropping it kills every node and deletes the data.
#[derive(Debug)]
pub struct GarageCluster {
    /// Node 0's S3 API, `http://127.0.0.1:PORT` (path-style addressing).
    pub endpoint: String,
    /// Every node's S3 API, by node index.
    pub endpoints: Vec<String>,
    /// The S3 region Garage expects in signatures (`us-east-1`).
    pub region: String,
    /// The bucket created at startup.
    pub bucket: String,
    /// Access key id with read/write/owner rights on `bucket`.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    bin: PathBuf,
    /// One `n<i>/` per node (config, metadata, data, log); kept across
    /// restarts, deleted on drop.
    _dir: tempfile::TempDir,
    nodes: Vec<ClusterNode>,
}

#[derive(Debug)]
struct ClusterNode {
    /// `<node id>@<rpc addr>`, as `garage node connect` takes it.
    id: String,
    config: PathBuf,
    log: PathBuf,
    s3_addr: SocketAddr,
    admin_addr: SocketAddr,
    child: Option<Child>,
}

impl GarageCluster {
    /// Starts three nodes in a temp dir on free 127.0.0.1 ports, connects
    /// them, applies a three-zone layout, creates the bucket and the key,
    /// and returns once every node answers S3 requests for the bucket.
    ///
    /// Without a `garage` binary: as [`Garage::start`] (`None`, or a panic
    /// under `MEDIA_ARCHIVER_REQUIRE_S3=1`). A step that fails panics with
    /// the command's output and the nodes' logs.
    pub fn start() -> Option<GarageCluster> {
        let bin = binary_or_skip()?;
        let dir = temp_dir("garage-cluster-");
        let rpc_secret = random_hex(64);
        let mut nodes = Vec::with_capacity(CLUSTER_NODES);
        let addrs: [SocketAddr; 3 * CLUSTER_NODES] = crate::ports::reserved_addrs();
        for (i, node_addrs) in addrs.chunks_exact(3).enumerate() {
            let node_dir = dir.path().join(format!("n{i}"));
            fs::create_dir_all(&node_dir).expect("create a garage node dir");
            let (rpc_addr, s3_addr, admin_addr) = (node_addrs[0], node_addrs[1], node_addrs[2]);
            let config = node_config(
                &node_dir,
                CLUSTER_NODES,
                rpc_addr,
                &rpc_secret,
                s3_addr,
                admin_addr,
            );
            let config_path = node_dir.join("garage.toml");
            fs::write(&config_path, config).expect("write garage.toml");
            nodes.push(ClusterNode {
                id: String::new(),
                config: config_path,
                log: node_dir.join("garage.log"),
                s3_addr,
                admin_addr,
                child: None,
            });
        }
        let (access_key_id, secret_access_key) = new_key();
        let mut cluster = GarageCluster {
            endpoint: format!("http://{}", nodes[0].s3_addr),
            endpoints: nodes
                .iter()
                .map(|n| format!("http://{}", n.s3_addr))
                .collect(),
            region: "us-east-1".into(),
            bucket: "media-archiver-test".into(),
            access_key_id,
            secret_access_key,
            bin,
            _dir: dir,
            nodes,
        };
        for i in 0..CLUSTER_NODES {
            cluster.spawn(i);
        }
        for i in 0..CLUSTER_NODES {
            cluster.wait_until(i, "its admin API to answer", |n| {
                http_status(n.admin_addr, "/health").is_some()
            });
        }
        let ids: Vec<String> = (0..CLUSTER_NODES)
            .map(|i| {
                let id = cluster.garage(i, &["node", "id", "-q"]);
                id.trim().to_owned()
            })
            .collect();
        for (node, id) in cluster.nodes.iter_mut().zip(&ids) {
            node.id = id.clone();
        }
        for id in &ids[1..] {
            cluster.garage(0, &["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let node = id.split('@').next().unwrap_or(id);
            let zone = format!("zone-{i}");
            cluster.garage(0, &["layout", "assign", "-z", &zone, "-c", "1G", node]);
        }
        cluster.garage(0, &["layout", "apply", "--version", "1"]);
        let bucket = cluster.bucket.clone();
        let (key_id, secret) = (
            cluster.access_key_id.clone(),
            cluster.secret_access_key.clone(),
        );
        cluster.garage(0, &["bucket", "create", &bucket]);
        cluster.garage(
            0,
            &["key", "import", "--yes", "-n", "test", &key_id, &secret],
        );
        cluster.garage(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", &key_id,
            ],
        );
        for i in 0..CLUSTER_NODES {
            cluster.wait_ready(i);
        }
        Some(cluster)
    }

    /// Kills node `i` (a crash, or the machine lost). Its data stays; see
    /// [`GarageCluster::start_node`]. Does nothing if it is not running.
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on the same ports and data (after
    /// [`GarageCluster::stop_node`]) and waits until it is ready, which
    /// needs a quorum: at least one other node running.
    pub fn start_node(&mut self, i: usize) {
        self.start_nodes(&[i]);
    }

    /// Starts the given nodes again at once (a single node alone cannot be
    /// ready: readiness needs a quorum) and waits until each is ready.
    ///
    /// Nodes started together do not always find each other again from
    /// their stored peer lists (seen after a whole-cluster outage: each
    /// stayed "Not connected" for over a minute), so each started node is
    /// told to connect to every other running node, as an operator would.
    pub fn start_nodes(&mut self, nodes: &[usize]) {
        for &i in nodes {
            self.stop_node(i);
            self.spawn(i);
        }
        for &i in nodes {
            self.wait_until(i, "its admin API to answer", |n| {
                http_status(n.admin_addr, "/health").is_some()
            });
        }
        for &i in nodes {
            for j in 0..CLUSTER_NODES {
                if j != i && self.is_running(j) {
                    let peer = self.nodes[j].id.clone();
                    self.garage(i, &["node", "connect", &peer]);
                }
            }
        }
        for &i in nodes {
            self.wait_ready(i);
        }
    }

    /// Kills every node (the whole store is down).
    pub fn stop(&mut self) {
        for i in 0..CLUSTER_NODES {
            self.stop_node(i);
        }
    }

    /// Starts every node again and waits until each is ready.
    pub fn restart(&mut self) {
        let all: Vec<usize> = (0..CLUSTER_NODES).collect();
        self.start_nodes(&all);
    }

    /// Whether node `i`'s process is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Node `i`'s log so far (stdout and stderr), for failure messages.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// `garage -c <node i's config> args...`, retried for a while (the
    /// node's RPC may not be up yet); panics with its output if it never
    /// succeeds. Returns its standard output.
    fn garage(&mut self, i: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let output = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.nodes[i].config)
                .args(args)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("could not run {}: {e}", self.bin.display()));
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "garage {args:?} on node {i} failed ({}):\n{}{}\nlogs:\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        (0..CLUSTER_NODES)
            .map(|i| format!("--- node {i}\n{}", self.log(i)))
            .collect()
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = server(&self.bin, &node.config, &node.log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.bin.display()));
        node.child = Some(child);
    }

    /// Ready: the admin API says the node is healthy (it sees a quorum) and
    /// its S3 API answers for the bucket.
    fn wait_ready(&mut self, i: usize) {
        let bucket = format!("/{}", self.bucket);
        self.wait_until(i, "it to be ready", |n| {
            http_status(n.admin_addr, "/health") == Some(200)
                && http_status(n.s3_addr, &bucket).is_some()
        });
    }

    fn wait_until(&mut self, i: usize, what: &str, ready: impl Fn(&ClusterNode) -> bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "garage node {i} exited ({status}) waiting for {what}; logs:\n{}",
                    self.logs()
                );
            }
            if ready(&self.nodes[i]) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "garage node {i}: no {what} within {READY_TIMEOUT:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `garage` binary, or `None` after a skip notice (a panic when
/// `MEDIA_ARCHIVER_REQUIRE_S3=1`).
fn binary_or_skip() -> Option<PathBuf> {
    let bin = find_binary();
    if bin.is_none() {
        if std::env::var("MEDIA_ARCHIVER_REQUIRE_S3").is_ok_and(|v| v == "1") {
            panic!(
                "MEDIA_ARCHIVER_REQUIRE_S3=1 but no garage binary was found \
                 ($GARAGE_BIN, PATH, $CARGO_HOME/bin); install it with \
                 `cargo install garage --locked`"
            );
        }
        eprintln!(
            "skipping: garage not on PATH (set MEDIA_ARCHIVER_REQUIRE_S3=1 to make this fatal)"
        );
    }
    bin
}

/// `$GARAGE_BIN`, else `garage` on `PATH`, else in `$CARGO_HOME/bin`.
fn find_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        let bin = PathBuf::from(bin);
        return is_executable(&bin).then_some(bin);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("garage"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join("garage"));
    on_path.chain(cargo_home).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// `garage -c config server`, its output appended to `log`: add the
/// node's arguments and environment, then spawn it.
fn server(bin: &Path, config: &Path, log: &Path) -> Command {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open garage.log");
    let mut command = Command::new(bin);
    command
        .arg("-c")
        .arg(config)
        .arg("server")
        .env("RUST_LOG", "warn,garage=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log);
    command
}

/// A temp dir for Garage's config, metadata, data and logs.
fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir for garage")
}

/// A node's `garage.toml`: metadata and data under `dir`, SQLite metadata,
/// the given replication factor, addresses and RPC secret.
fn node_config(
    dir: &Path,
    replication_factor: usize,
    rpc_addr: SocketAddr,
    rpc_secret: &str,
    s3_addr: SocketAddr,
    admin_addr: SocketAddr,
) -> String {
    format!(
        r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = {replication_factor}
rpc_bind_addr = "{rpc_addr}"
rpc_public_addr = "{rpc_addr}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "{s3_addr}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "{admin_addr}"
"#,
        meta = dir.join("meta").display(),
        data = dir.join("data").display(),
    )
}

/// A fresh (access key id, secret key) in Garage's shapes: `GK` and 24 hex
/// digits, 64 hex digits (test credentials; not cryptographic).
fn new_key() -> (String, String) {
    (format!("GK{}", random_hex(24)), random_hex(64))
}

/// The status code of a plain `GET path` (HTTP/1.1), or `None` if nothing
/// answered.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_have_garage_shapes() {
        let (id, secret) = new_key();
        assert!(id.starts_with("GK") && id.len() == 26, "{id}");
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(new_key().1, secret);
    }

    #[test]
    fn starts_restarts_and_stops() {
        let Some(mut g) = Garage::start() else {
            return;
        };
        assert!(g.endpoint.starts_with("http://127.0.0.1:"));
        assert!(g.is_running());
        g.stop();
        assert!(!g.is_running());
        assert_eq!(http_status(g.s3_addr, "/"), None);
        g.restart();
        assert!(g.is_running());
        assert!(http_status(g.s3_addr, &format!("/{}", g.bucket)).is_some());
    }

    #[test]
    fn a_cluster_keeps_serving_with_one_node_lost() {
        let Some(mut c) = GarageCluster::start() else {
            return;
        };
        assert_eq!(c.endpoints.len(), CLUSTER_NODES);
        c.stop_node(2);
        assert!(!c.is_running(2));
        c.start_node(1);
        assert!(http_status(c.nodes[0].admin_addr, "/health") == Some(200));
        c.stop();
        assert_eq!(http_status(c.nodes[0].s3_addr, "/"), None);
        c.restart();
        for i in 0..CLUSTER_NODES {
            assert!(c.is_running(i));
        }
    }
}
