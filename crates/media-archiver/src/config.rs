//! The config file (PRODUCT.md section 4): TOML, every key defaulted,
//! unknown keys rejected, and every problem reported at once.
//!
//! Each top-level section and each `[[accounts]]` entry is deserialized on
//! its own, so a typo in `[fetch]` and a missing token in the second account
//! are both reported by one run, each with its key path. Then the values are
//! checked without I/O except reading secrets, still collecting every
//! problem, before any port is bound.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use archiver_core::SecretRef;
use archiver_core::config_value::duration;
use providers::AccountConfig;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The whole file.
#[derive(Debug, Default)]
pub(crate) struct Config {
    pub(crate) server: webhook_receiver::ServerConfig,
    pub(crate) queue: Queue,
    pub(crate) storage: Storage,
    pub(crate) workers: Workers,
    pub(crate) retry: Retry,
    pub(crate) fetch: Fetch,
    pub(crate) log: Log,
    pub(crate) accounts: Vec<AccountConfig>,
}

/// `[queue]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Queue {
    /// `sqlite` (embedded, one process) or `postgres` (several replicas).
    pub(crate) backend: String,
    /// SQLite database file.
    pub(crate) path: PathBuf,
    /// PostgreSQL connection URL; a secret, since it may hold a password.
    pub(crate) url: Option<SecretRef>,
    /// PostgreSQL pool size per process.
    pub(crate) max_connections: Option<u32>,
    /// PostgreSQL schema for the queue's tables (created if missing);
    /// the server's `search_path` when unset.
    pub(crate) schema: Option<String>,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            backend: "sqlite".into(),
            path: "data/queue.db".into(),
            url: None,
            max_connections: None,
            schema: None,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Storage {
    /// `fs` (local folder) or `s3`.
    pub(crate) backend: String,
    /// Root folder of the `fs` backend.
    pub(crate) path: PathBuf,
    /// `[storage.s3]`.
    pub(crate) s3: Option<S3>,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            backend: "fs".into(),
            path: "data/archive".into(),
            s3: None,
        }
    }
}

/// `[storage.s3]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3 {
    pub(crate) bucket: String,
    #[serde(default = "default_region")]
    pub(crate) region: String,
    #[serde(default)]
    pub(crate) endpoint: Option<String>,
    #[serde(default)]
    pub(crate) force_path_style: bool,
    #[serde(default)]
    pub(crate) prefix: String,
    #[serde(default)]
    pub(crate) access_key_id: Option<SecretRef>,
    #[serde(default)]
    pub(crate) secret_access_key: Option<SecretRef>,
    #[serde(default)]
    pub(crate) server_side_encryption: Option<String>,
    #[serde(default)]
    pub(crate) kms_key_id: Option<String>,
    #[serde(default)]
    pub(crate) storage_class: Option<String>,
    #[serde(default)]
    pub(crate) object_lock_mode: Option<String>,
    #[serde(default)]
    pub(crate) object_lock_days: Option<u32>,
    #[serde(default = "default_presign_ttl", deserialize_with = "duration")]
    pub(crate) presign_ttl: Duration,
    #[serde(default = "default_part_size")]
    pub(crate) part_size: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_presign_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_part_size() -> u64 {
    8 * 1024 * 1024
}

/// `[workers]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Workers {
    pub(crate) concurrency: usize,
    #[serde(deserialize_with = "duration")]
    pub(crate) lease: Duration,
    #[serde(deserialize_with = "duration")]
    pub(crate) shutdown_grace: Duration,
    #[serde(deserialize_with = "duration")]
    pub(crate) idle_poll: Duration,
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(25),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// `[retry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Retry {
    #[serde(deserialize_with = "duration")]
    pub(crate) initial: Duration,
    #[serde(deserialize_with = "duration")]
    pub(crate) max: Duration,
    pub(crate) multiplier: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            multiplier: 2.0,
        }
    }
}

/// `[fetch]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Fetch {
    #[serde(deserialize_with = "duration")]
    pub(crate) connect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub(crate) read_timeout: Duration,
    pub(crate) max_file_bytes: u64,
    pub(crate) allow_private_networks: bool,
    pub(crate) spool_dir: PathBuf,
}

impl Default for Fetch {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            allow_private_networks: false,
            spool_dir: "data/spool".into(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Log {
    pub(crate) format: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: "json".into(),
        }
    }
}

const SECTIONS: [&str; 8] = [
    "server", "queue", "storage", "workers", "retry", "fetch", "log", "accounts",
];

/// Every problem found in a config file.
#[derive(Debug)]
pub(crate) struct ConfigErrors(pub(crate) Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "the configuration has {} problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, parses and checks a config file.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", path.display())]))?;
        Self::parse(&text)
    }

    /// Parses and checks config text.
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![format!("TOML syntax: {e}")]))?;
        let mut errors = Vec::new();
        for key in table.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
            errors.push(format!(
                "{key}: unknown key (expected one of {})",
                SECTIONS.join(", ")
            ));
        }
        let mut config = Config {
            server: section(&table, "server", &mut errors),
            queue: section(&table, "queue", &mut errors),
            storage: section(&table, "storage", &mut errors),
            workers: section(&table, "workers", &mut errors),
            retry: section(&table, "retry", &mut errors),
            fetch: section(&table, "fetch", &mut errors),
            log: section(&table, "log", &mut errors),
            accounts: Vec::new(),
        };
        match table.get("accounts") {
            None => {}
            Some(toml::Value::Array(entries)) => {
                for (i, entry) in entries.iter().enumerate() {
                    let label = entry.get("name").and_then(toml::Value::as_str).map_or_else(
                        || format!("accounts[{i}]"),
                        |n| format!("accounts[{i}] ({n})"),
                    );
                    match AccountConfig::deserialize(entry.clone()) {
                        Ok(account) => config.accounts.push(account),
                        Err(e) => errors.push(format!("{label}: {}", one_line(&e.to_string()))),
                    }
                }
            }
            Some(_) => errors.push("accounts: must be an array of tables ([[accounts]])".into()),
        }
        config.check(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Checks values that parsed but make no sense together.
    fn check(&self, errors: &mut Vec<String>) {
        if let Err(problems) = self.server.validate() {
            errors.extend(problems);
        }
        match self.queue.backend.as_str() {
            "sqlite" => {}
            "postgres" => {
                if let Err(problems) = self.pg_options() {
                    errors.extend(problems);
                }
            }
            other => errors.push(format!(
                "queue.backend: {other:?} is not \"sqlite\" or \"postgres\""
            )),
        }
        match (self.storage.backend.as_str(), &self.storage.s3) {
            ("fs", _) => {}
            ("s3", None) => errors.push(
                "storage.s3: required when storage.backend = \"s3\" (at least bucket)".into(),
            ),
            ("s3", Some(s3)) => {
                if let Err(problems) = self.s3_config(s3) {
                    errors.extend(problems.into_iter().map(|p| format!("storage.s3: {p}")));
                }
            }
            (other, _) => errors.push(format!(
                "storage.backend: {other:?} is not \"fs\" or \"s3\""
            )),
        }
        if !(1..=1024).contains(&self.workers.concurrency) {
            errors.push("workers.concurrency: must be between 1 and 1024".into());
        }
        if self.workers.lease < Duration::from_secs(3) {
            errors.push("workers.lease: must be at least 3s".into());
        }
        if let Err(e) = self.retry_policy().validate() {
            errors.push(format!("retry: {e}"));
        }
        if self.fetch.connect_timeout.is_zero() || self.fetch.read_timeout.is_zero() {
            errors.push("fetch: connect_timeout and read_timeout must be above 0".into());
        }
        if self.fetch.max_file_bytes == 0 {
            errors.push("fetch.max_file_bytes: must be above 0".into());
        }
        if !["json", "pretty"].contains(&self.log.format.as_str()) {
            errors.push(format!(
                "log.format: {:?} is not \"json\" or \"pretty\"",
                self.log.format
            ));
        }
        if self.accounts.is_empty() && errors.iter().all(|e| !e.starts_with("accounts")) {
            errors.push("accounts: at least one [[accounts]] entry is needed".into());
        }
        let mut seen = BTreeSet::new();
        for account in &self.accounts {
            if !seen.insert(account.name().as_str()) {
                errors.push(format!(
                    "accounts: name {:?} is used twice",
                    account.name().as_str()
                ));
            }
        }
    }

    /// The queue's retry policy.
    pub(crate) fn retry_policy(&self) -> retry_queue::RetryPolicy {
        retry_queue::RetryPolicy {
            initial: self.retry.initial,
            max: self.retry.max,
            multiplier: self.retry.multiplier,
        }
    }

    /// The PostgreSQL queue's settings, the URL resolved. Problems carry
    /// their key path and never the URL itself.
    pub(crate) fn pg_options(&self) -> Result<retry_queue::PgOptions, Vec<String>> {
        let Some(url) = &self.queue.url else {
            return Err(vec![
                "queue.url: required when queue.backend = \"postgres\"".into(),
            ]);
        };
        let url = url.resolve().map_err(|e| vec![format!("queue.url: {e}")])?;
        let options = retry_queue::PgOptions {
            url,
            max_connections: self
                .queue
                .max_connections
                .unwrap_or(retry_queue::PgOptions::DEFAULT_MAX_CONNECTIONS),
            schema: self.queue.schema.clone(),
        };
        options
            .validate()
            .map_err(|problems| vec![format!("queue: {problems}")])?;
        Ok(options)
    }

    /// The fetch step's settings.
    pub(crate) fn fetch_config(&self) -> media_fetch::FetchConfig {
        media_fetch::FetchConfig {
            connect_timeout: self.fetch.connect_timeout,
            read_timeout: self.fetch.read_timeout,
            max_file_bytes: self.fetch.max_file_bytes,
            allow_private_networks: self.fetch.allow_private_networks,
            spool_dir: self.fetch.spool_dir.clone(),
        }
    }

    /// The S3 backend's settings, secrets resolved.
    pub(crate) fn s3_config(&self, s3: &S3) -> Result<s3_uploader::S3Config, Vec<String>> {
        let mut problems = Vec::new();
        let mut secret = |name: &str, r: &Option<SecretRef>| {
            r.as_ref().and_then(|r| {
                r.resolve()
                    .map_err(|e| problems.push(format!("{name}: {e}")))
                    .ok()
            })
        };
        let access_key_id = secret("access_key_id", &s3.access_key_id);
        let secret_access_key = secret("secret_access_key", &s3.secret_access_key);
        if access_key_id.is_some() != secret_access_key.is_some() && problems.is_empty() {
            problems.push("access_key_id and secret_access_key go together (or neither, for the AWS credential chain)".into());
        }
        if s3.presign_ttl > s3_uploader::MAX_PRESIGN_TTL {
            problems.push("presign_ttl: at most 7d (the S3 limit)".into());
        }
        if s3.presign_ttl.is_zero() {
            problems.push("presign_ttl: must be above 0".into());
        }
        let config = s3_uploader::S3Config {
            bucket: s3.bucket.clone(),
            region: s3.region.clone(),
            endpoint: s3.endpoint.clone(),
            force_path_style: s3.force_path_style,
            access_key_id,
            secret_access_key,
            server_side_encryption: s3.server_side_encryption.clone(),
            kms_key_id: s3.kms_key_id.clone(),
            storage_class: s3.storage_class.clone(),
            object_lock_mode: s3.object_lock_mode.clone(),
            object_lock_days: s3.object_lock_days,
            part_size: s3.part_size,
            ..s3_uploader::S3Config::default()
        };
        problems.extend(config.validate());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Lifetime of the presigned URLs of `GET /api/v1/media` (S3 only).
    pub(crate) fn presign_ttl(&self) -> Duration {
        match (&self.storage.backend[..], &self.storage.s3) {
            ("s3", Some(s3)) => s3.presign_ttl,
            _ => Duration::from_secs(3600),
        }
    }

    /// The key prefix of the storage layout (S3 only; the fs root is the folder).
    pub(crate) fn storage_prefix(&self) -> &str {
        match (&self.storage.backend[..], &self.storage.s3) {
            ("s3", Some(s3)) => &s3.prefix,
            _ => "",
        }
    }
}

/// Deserializes one top-level section, recording a problem (and using the
/// defaults) when it does not fit.
fn section<T: DeserializeOwned + Default>(
    table: &toml::Table,
    key: &str,
    errors: &mut Vec<String>,
) -> T {
    match table.get(key) {
        None => T::default(),
        Some(value) => T::deserialize(value.clone()).unwrap_or_else(|e| {
            errors.push(format!("[{key}]: {}", one_line(&e.to_string())));
            T::default()
        }),
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
