//! `media-archiver check-config`: what a config would run, once it is known
//! to be valid (every problem, secrets included, was reported while it was
//! loaded). Nothing secret is printed: no token, no PostgreSQL URL.

use std::fmt::Write as _;

use retry_queue::QueueSettings;
use s3_uploader::StorageSettings;

use crate::config::Settings;

/// The summary: listen address, admin API, backends, accounts and which of
/// them take unauthenticated webhooks, and the SSRF guard when it is off.
pub(crate) fn summary(config: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config ok");
    let _ = writeln!(out, "listen: {}", config.receiver.listen);
    let _ = writeln!(
        out,
        "admin API: {}",
        if config.receiver.admin_token.is_some() {
            "enabled"
        } else {
            "disabled (no server.admin_token)"
        }
    );
    let queue = queue_summary(&config.queue);
    let _ = writeln!(out, "queue: {queue}");
    let _ = writeln!(out, "storage: {}", storage(&config.storage));
    let _ = writeln!(out, "accounts:");
    for name in config.account_names() {
        let provider = &config.providers[name];
        let auth = if provider.webhook_auth_configured() {
            "authenticated"
        } else {
            "UNAUTHENTICATED webhooks"
        };
        let _ = writeln!(
            out,
            "  {name}: {} ({auth}) -> POST /webhooks/{name}",
            provider.kind()
        );
        if let Some((_, own)) = config.account_storage.iter().find(|(a, _)| a == name) {
            let _ = writeln!(out, "    storage: {}", storage(own));
        }
    }
    if !config.notify.is_empty() {
        let _ = writeln!(out, "notify:");
    }
    for target in &config.notify {
        let events: Vec<&str> = target.events.iter().map(|e| e.as_str()).collect();
        let accounts = if target.accounts.is_empty() {
            "every account".to_owned()
        } else {
            target
                .accounts
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Scheme and host only: a path or query may carry a token.
        let _ = writeln!(
            out,
            "  {}: {} of {accounts} -> {}://{}",
            target.name,
            events.join(", "),
            target.url.scheme(),
            target.url.host_str().unwrap_or("?"),
        );
    }
    if config.fetch.allow_private_networks {
        let _ = writeln!(
            out,
            "warning: fetch.allow_private_networks = true (SSRF guard off for addresses)"
        );
    }
    out
}

/// A store, as the summary names it (never credentials).
fn storage(settings: &StorageSettings) -> String {
    match settings {
        StorageSettings::S3(s3) => {
            let s3 = s3.config();
            format!(
                "s3 (bucket {}, endpoint {}, prefix {:?})",
                s3.bucket,
                s3.endpoint.as_deref().unwrap_or("AWS default"),
                s3.prefix
            )
        }
        StorageSettings::Fs { path } => format!("fs ({})", path.display()),
    }
}

/// The queue a config names, in one line (never a PostgreSQL URL: it may
/// hold a password).
pub(crate) fn queue_summary(queue: &QueueSettings) -> String {
    match queue {
        QueueSettings::Sqlite { path } => format!("sqlite ({})", path.display()),
        QueueSettings::Fjall(options) => format!(
            "fjall ({}, done jobs kept {})",
            options.path.display(),
            humantime::format_duration(options.done_retention)
        ),
        QueueSettings::Postgres(options) => format!(
            "postgres (schema {})",
            options.schema.as_deref().unwrap_or("from search_path")
        ),
    }
}
