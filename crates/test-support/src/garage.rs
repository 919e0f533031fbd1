//! A real S3-compatible server for tests: a single-node Garage in a temp dir.
//!
//! Garage checks `ChecksumSHA256` on PutObject and UploadPart and SigV4
//! signatures, which fakes such as moto do not, so integrity tests run
//! against it. The binary is not a Cargo dependency (it takes ten minutes to
//! build): it is looked up in `$GARAGE_BIN`, then `PATH`, then
//! `$CARGO_HOME/bin` (`~/.cargo/bin`), where `cargo install garage --locked`
//! puts it. Without it, [`Garage::start`] returns `None` and the test skips,
//! unless `MEDIA_ARCHIVER_REQUIRE_S3=1` (CI), which makes it a failure.

use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let Some(bin) = find_binary() else {
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
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("garage-test-")
            .tempdir()
            .expect("create a temp dir for garage");
        let s3_addr = free_addr();
        let admin_addr = free_addr();
        let rpc_addr = free_addr();
        let config = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
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
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
            rpc_secret = random_hex(32),
        );
        fs::write(dir.path().join("garage.toml"), config).expect("write garage.toml");
        let mut garage = Garage {
            endpoint: format!("http://{s3_addr}"),
            region: "us-east-1".into(),
            bucket: "media-archiver-test".into(),
            access_key_id: format!("GK{}", random_hex(12)),
            secret_access_key: random_hex(32),
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

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open garage.log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key_id)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_access_key)
            .env("GARAGE_DEFAULT_BUCKET", &self.bucket)
            .env("RUST_LOG", "warn,garage=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
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

/// A 127.0.0.1 port that was free a moment ago.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// `n` random bytes as hex (test credentials; not cryptographic).
fn random_hex(n: usize) -> String {
    let mut out = String::with_capacity(n * 2 + 16);
    while out.len() < n * 2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n * 2);
    out
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
        let a = random_hex(12);
        let b = random_hex(32);
        assert_eq!(a.len(), 24);
        assert_eq!(b.len(), 64);
        assert!(b.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(random_hex(32), b);
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
}
