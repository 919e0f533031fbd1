//! The daemon's config for a test, written once: what every test shares
//! (fast retries, private networks allowed because the fakes listen on
//! 127.0.0.1, the admin API on, JSON logs the harness reads the listening
//! address from) around the store and accounts the test chooses.

/// The admin token every test config uses.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// The secret of every `[[notify]]` target in the tests (the Standard
/// Webhooks libraries' own example secret).
pub const NOTIFY_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A `[[notify]]` entry named `name` for `url`, with [`NOTIFY_SECRET`], a
/// 2 s timeout, and `extra` keys (TOML lines); append it to a config.
pub fn notify_target(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[[notify]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{NOTIFY_SECRET}\"\ntimeout = \"2s\"\n{extra}\n"
    )
}

/// Where archived files go in a test.
#[derive(Debug, Clone)]
pub enum StoreUnderTest {
    /// The folder `data/archive` in the daemon's working directory.
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
/// listen on 127.0.0.1), the admin API on ([`ADMIN_TOKEN`]), the store, and
/// `accounts` (snippets from [`crate::accounts`]) last, so that a caller may
/// append keys to the last account or further sections.
pub fn config(store: &StoreUnderTest, accounts: &str) -> String {
    config_with_guard(store, accounts, true)
}

/// [`config()`] with the SSRF guard's address check on
/// (`fetch.allow_private_networks = false`), as in production: the
/// accounts reach only their own gateway's `api_url` host on 127.0.0.1.
pub fn guarded_config(store: &StoreUnderTest, accounts: &str) -> String {
    config_with_guard(store, accounts, false)
}

fn config_with_guard(
    store: &StoreUnderTest,
    accounts: &str,
    allow_private_networks: bool,
) -> String {
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
allow_private_networks = {allow_private_networks}

[log]
format = "json"

{storage}
{accounts}
"#
    )
}

/// The `[queue]` section for a PostgreSQL-backed daemon in the test
/// database's private schema (append it to the accounts of [`config`]).
/// A `[queue]` section for the fjall backend, in the daemon's workdir.
pub fn fjall_queue() -> String {
    "\n[queue]\nbackend = \"fjall\"\npath = \"data/queue\"\n".to_owned()
}

pub fn postgres_queue(db: &retry_queue::conformance::pg::PgTestDatabase) -> String {
    format!(
        "\n[queue]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\nmax_connections = 8\n",
        db.url(),
        db.schema
    )
}
