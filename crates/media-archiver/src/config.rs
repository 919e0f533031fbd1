//! The config file (PRODUCT.md section 4): TOML, every key defaulted,
//! unknown keys rejected, and every problem reported at once.
//!
//! Each crate owns the section it consumes (its fields, their defaults and
//! their checks): `[server]` the webhook receiver, `[queue]` and `[retry]`
//! the queue, `[storage]` the store, `[workers]` the pipeline, `[fetch]` the
//! fetcher, `[[accounts]]` the providers, `[[notify]]` the notifier. This module only composes them,
//! in two steps that both collect every problem:
//!
//! 1. Reading ([`Config::read`]): each top-level section and each
//!    `[[accounts]]` entry is deserialized on its own, so a typo in
//!    `[fetch]` and a missing key in the second account are both reported
//!    by one run, each with its section. A section that does not read is
//!    replaced by its defaults, so that the next step still checks the
//!    others.
//! 2. Checking ([`Config::validate`]): every section's values, and every
//!    secret resolved, the accounts' included (building an account's
//!    adapter is what resolves its secrets; no I/O but reading them).
//!
//! The result is [`Settings`], what `serve` and the other commands run on:
//! nothing resolves a secret after it, and nothing binds a port before it.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use archiver_core::{Clock, SystemClock};
use media_fetch::FetchConfig;
use media_notify::NotifyConfig;
use pipeline::WorkerConfig;
use providers::{AccountConfig, ApiClient, Provider};
use retry_queue::{QueueConfig, QueueSettings, RetryPolicy};
use s3_uploader::{StorageConfig, StorageSettings};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use webhook_receiver::{ReceiverConfig, ServerConfig};

/// The checked config, every secret resolved.
#[derive(Debug)]
pub(crate) struct Settings {
    /// `[server]`, its address parsed and its tokens resolved.
    pub(crate) receiver: ReceiverConfig,
    /// `[queue]`: which queue to open.
    pub(crate) queue: QueueSettings,
    /// `[retry]`.
    pub(crate) retry: RetryPolicy,
    /// `[storage]`: which store to open.
    pub(crate) storage: StorageSettings,
    /// `[accounts.storage]`: the accounts with a store of their own, by
    /// name, in file order.
    pub(crate) account_storage: Vec<(String, StorageSettings)>,
    /// `[workers]`.
    pub(crate) workers: WorkerConfig,
    /// `[fetch]`.
    pub(crate) fetch: FetchConfig,
    /// `[log]`.
    pub(crate) log: Log,
    /// `[[notify]]`: the user's apps told of archived and dead jobs.
    pub(crate) notify: Vec<media_notify::Target>,
    /// One adapter per `[[accounts]]` entry, by account name.
    pub(crate) providers: HashMap<String, Arc<dyn Provider>>,
    /// The process's one clock: the queue, every adapter and the worker
    /// read "now" from it, so a job's times (webhook arrival, deadline,
    /// retries, park timeout, `archived_at`) are all on the same clock.
    pub(crate) clock: Arc<dyn Clock>,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Log {
    /// `"json"` (one object per line) or `"pretty"`.
    pub(crate) format: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: "json".into(),
        }
    }
}

/// The whole file as written: each crate's section.
#[derive(Debug, Default)]
struct Config {
    server: ServerConfig,
    queue: QueueConfig,
    storage: StorageConfig,
    workers: WorkerConfig,
    retry: RetryPolicy,
    fetch: FetchConfig,
    log: Log,
    /// The entries that read, each with its index in the file.
    accounts: Vec<(usize, AccountConfig)>,
    /// `[accounts.storage]` of the entries that have one, by index in the
    /// file (read here rather than by the providers, which must not know
    /// about stores).
    account_storage: Vec<(usize, StorageConfig)>,
    /// `[[notify]]`, the entries that read.
    notify: Vec<NotifyConfig>,
}

const SECTIONS: [&str; 9] = [
    "server", "queue", "storage", "workers", "retry", "fetch", "log", "accounts", "notify",
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

impl Settings {
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
        let mut problems = Vec::new();
        let config = Config::read(&table, &mut problems);
        match config.validate(&mut problems) {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(ConfigErrors(problems)),
        }
    }

    /// The account names, sorted.
    pub(crate) fn account_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

impl Config {
    /// Deserializes every section and account, recording what does not fit.
    fn read(table: &toml::Table, problems: &mut Vec<String>) -> Self {
        for key in table.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
            problems.push(format!(
                "{key}: unknown key (expected one of {})",
                SECTIONS.join(", ")
            ));
        }
        let mut config = Config {
            server: section(table, "server", problems),
            queue: section(table, "queue", problems),
            storage: section(table, "storage", problems),
            workers: section(table, "workers", problems),
            retry: section(table, "retry", problems),
            fetch: section(table, "fetch", problems),
            log: section(table, "log", problems),
            accounts: Vec::new(),
            account_storage: Vec::new(),
            notify: Vec::new(),
        };
        match table.get("notify") {
            None => {}
            Some(toml::Value::Array(entries)) => {
                for (i, entry) in entries.iter().enumerate() {
                    match NotifyConfig::deserialize(entry.clone()) {
                        Ok(target) => config.notify.push(target),
                        Err(e) => {
                            problems.push(format!("notify[{i}]: {}", one_line(&e.to_string())))
                        }
                    }
                }
            }
            Some(_) => problems.push("notify: must be an array of tables ([[notify]])".into()),
        }
        match table.get("accounts") {
            None => {}
            Some(toml::Value::Array(entries)) => {
                for (i, entry) in entries.iter().enumerate() {
                    let name = entry.get("name").and_then(toml::Value::as_str);
                    let mut entry = entry.clone();
                    if let Some(storage) = entry.as_table_mut().and_then(|t| t.remove("storage")) {
                        if let Some(problem) = isolation_problem(&storage) {
                            problems
                                .push(format!("{}: storage: {problem}", account_label(i, name)));
                        }
                        match StorageConfig::deserialize(storage) {
                            Ok(storage) => config.account_storage.push((i, storage)),
                            Err(e) => problems.push(format!(
                                "{}: storage: {}",
                                account_label(i, name),
                                one_line(&e.to_string())
                            )),
                        }
                    }
                    match AccountConfig::deserialize(entry) {
                        Ok(account) => config.accounts.push((i, account)),
                        Err(e) => problems.push(format!(
                            "{}: {}",
                            account_label(i, name),
                            one_line(&e.to_string())
                        )),
                    }
                }
            }
            Some(_) => problems.push("accounts: must be an array of tables ([[accounts]])".into()),
        }
        if config.accounts.is_empty() && problems.iter().all(|e| !e.starts_with("accounts")) {
            problems.push("accounts: at least one [[accounts]] entry is needed".into());
        }
        config
    }

    /// Checks every section and resolves every secret, recording every
    /// problem; the settings when each section could be checked.
    fn validate(&self, problems: &mut Vec<String>) -> Option<Settings> {
        let receiver = checked(self.server.validate(), problems);
        let queue = checked(self.queue.validate(), problems);
        if let Err(e) = self.retry.validate() {
            problems.push(format!("retry: {e}"));
        }
        let storage = checked(self.storage.validate(), problems);
        checked(self.workers.validate(), problems);
        checked(self.fetch.validate(), problems);
        if !["json", "pretty"].contains(&self.log.format.as_str()) {
            problems.push(format!(
                "log.format: {:?} is not \"json\" or \"pretty\"",
                self.log.format
            ));
        }
        let account_storage = self.account_storage(problems);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let providers = self.build_providers(&clock, problems);
        let names: Vec<&str> = self
            .accounts
            .iter()
            .map(|(_, a)| a.name().as_str())
            .collect();
        let notify = checked(media_notify::validate_all(&self.notify, &names), problems);
        Some(Settings {
            receiver: receiver?,
            queue: queue?,
            retry: self.retry,
            storage: storage?,
            account_storage: account_storage?,
            workers: self.workers.clone(),
            fetch: self.fetch.clone(),
            log: Log {
                format: self.log.format.clone(),
            },
            notify: notify?,
            providers: providers?,
            clock,
        })
    }

    /// Each `[accounts.storage]` checked, its secrets resolved; problems
    /// name the account (`accounts[1] (shop): storage.s3: bucket: ...`).
    fn account_storage(
        &self,
        problems: &mut Vec<String>,
    ) -> Option<Vec<(String, StorageSettings)>> {
        let mut checked = Vec::new();
        let mut complete = true;
        for (i, storage) in &self.account_storage {
            let Some(name) = self
                .accounts
                .iter()
                .find(|(j, _)| j == i)
                .map(|(_, a)| a.name())
            else {
                complete = false; // the entry did not read; its problems are listed
                continue;
            };
            match storage.validate() {
                Ok(settings) => checked.push((name.as_str().to_owned(), settings)),
                Err(found) => {
                    complete = false;
                    let label = account_label(*i, Some(name.as_str()));
                    // The section's own check names `storage.s3: ...`.
                    problems.extend(found.into_iter().map(|p| format!("{label}: {p}")));
                }
            }
        }
        complete.then_some(checked)
    }

    /// One adapter per account, its secrets resolved, on the provider API
    /// client with `fetch.connect_timeout` and `fetch.api_timeout`. Account
    /// names are unique.
    fn build_providers(
        &self,
        clock: &Arc<dyn Clock>,
        problems: &mut Vec<String>,
    ) -> Option<HashMap<String, Arc<dyn Provider>>> {
        let mut seen = BTreeSet::new();
        for (_, account) in &self.accounts {
            if !seen.insert(account.name().as_str()) {
                problems.push(format!(
                    "accounts: name {:?} is used twice",
                    account.name().as_str()
                ));
            }
        }
        let api = ApiClient::new(self.fetch.connect_timeout, self.fetch.api_timeout)
            .map_err(|e| problems.push(e))
            .ok()?;
        let mut providers = HashMap::new();
        let mut complete = true;
        for (i, account) in &self.accounts {
            let name = account.name().as_str();
            match providers::build_with_clock(account, &api, clock.clone()) {
                Ok(provider) => {
                    providers.insert(name.to_owned(), provider);
                }
                Err(found) => {
                    complete = false;
                    let label = account_label(*i, Some(name));
                    problems.extend(found.into_iter().map(|p| format!("{label}: {p}")));
                }
            }
        }
        complete.then_some(providers)
    }
}

/// What `[storage]` lets pass but an account's own store must not: its
/// point is isolation, so a section for another backend than the one in
/// use (a forgotten `backend = "s3"` would archive the tenant to a local
/// folder) and a folder left at the global default are refused.
fn isolation_problem(storage: &toml::Value) -> Option<&'static str> {
    let backend = storage.get("backend").and_then(toml::Value::as_str);
    match backend {
        None | Some("fs") if storage.get("s3").is_some() => Some(
            "an s3 section is given but backend is not \"s3\" (without backend = \"s3\" the account would archive to a local folder)",
        ),
        None | Some("fs") if storage.get("path").is_none() => {
            Some("backend = \"fs\" needs a path of its own")
        }
        _ => None,
    }
}

/// How problems name the `i`-th `[[accounts]]` entry.
fn account_label(i: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("accounts[{i}] ({name})"),
        None => format!("accounts[{i}]"),
    }
}

/// A section's checked form, its problems recorded.
fn checked<T>(result: Result<T, Vec<String>>, problems: &mut Vec<String>) -> Option<T> {
    result.map_err(|found| problems.extend(found)).ok()
}

/// Deserializes one top-level section, recording a problem (and using the
/// defaults) when it does not fit.
fn section<T: DeserializeOwned + Default>(
    table: &toml::Table,
    key: &str,
    problems: &mut Vec<String>,
) -> T {
    match table.get(key) {
        None => T::default(),
        Some(value) => T::deserialize(value.clone()).unwrap_or_else(|e| {
            problems.push(format!("[{key}]: {}", one_line(&e.to_string())));
            T::default()
        }),
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
