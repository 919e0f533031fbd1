//! `[server]`: the front door's settings, deserialized here because this
//! crate is the one that consumes them (the binary only composes sections).
//!
//! Every limit bounds what a client, hostile or not, can make the daemon
//! hold. With the defaults the front door's memory stays under roughly
//! `max_connections x READ_BUFFER_BYTES` (64 MiB: the largest request head a
//! connection may buffer) `+ max_inflight_body_bytes` (64 MiB of bodies,
//! all requests together) `+` the parsed form of the bodies being parsed,
//! whatever clients send and however slowly: a 512 MiB pod keeps its
//! headroom for the workers. Time limits free connection permits: a
//! connection waits for its next request at most `idle_timeout`, a head
//! arrives within `header_read_timeout` of its first byte, and a whole body
//! within `body_read_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use archiver_core::config_value::{duration, resolve_secret, verdict};
use archiver_core::{Secret, SecretRef};
use serde::Deserialize;

/// The most a connection buffers while it reads a request head (hyper's
/// read buffer): a larger head is answered 431.
pub(crate) const READ_BUFFER_BYTES: usize = 64 * 1024;

/// `[server]`, as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server binds, e.g. `"127.0.0.1:8080"`.
    pub listen: String,
    /// Largest webhook body accepted; a larger one is answered 413 (before
    /// it is read when it declares its length).
    pub max_body_bytes: usize,
    /// Enables the admin API (`/api/v1/...`); without it those routes are 404.
    pub admin_token: Option<SecretRef>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <metrics token>`
    /// (for a daemon whose port is reachable from the internet).
    pub metrics_token: Option<SecretRef>,
    /// Once the first byte of a request head has arrived, the rest of the
    /// head must arrive within this (slow-header clients are cut off).
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// The whole body must arrive within this, counted from the end of the
    /// head; a body still incomplete is answered 408 and the connection
    /// closed. A provider sends a webhook in milliseconds: only a stalled or
    /// hostile client meets this limit.
    #[serde(deserialize_with = "duration")]
    pub body_read_timeout: Duration,
    /// A connection that waits longer than this for its next request
    /// (keep-alive idle, or a client that never starts one) is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Open connections at most. A permit is taken before `accept`, so a
    /// flood of connections waits in the kernel's backlog instead of
    /// holding memory here.
    pub max_connections: usize,
    /// Open connections one client (an IP address; an IPv6 /64) may hold,
    /// at most `max_connections`; a connection beyond it is closed as soon
    /// as it is accepted. By default a quarter of `max_connections`, so one
    /// host's flood leaves the rest to everyone else. Behind a proxy that
    /// hides client addresses, set it to `max_connections`.
    pub max_connections_per_client: Option<usize>,
    /// Webhook body bytes held at once, all requests together. Bytes are
    /// counted as they arrive; when the budget is spent a request waits
    /// briefly for room, then is answered 503 with `Retry-After` (the
    /// provider redelivers; nothing is lost). At least `max_body_bytes`.
    pub max_inflight_body_bytes: usize,
    /// Body bytes one client may hold at once, between `max_body_bytes` and
    /// `max_inflight_body_bytes`; beyond it that client's requests wait
    /// briefly, then get 503 with `Retry-After`. By default a quarter of
    /// `max_inflight_body_bytes` (at least `max_body_bytes`).
    pub max_inflight_body_bytes_per_client: Option<usize>,
    /// Media files one webhook may announce; more is answered 413 naming
    /// this key (no provider batches more than a few dozen).
    pub max_jobs_per_webhook: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 4 * 1024 * 1024,
            admin_token: None,
            metrics_token: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_client: None,
            max_inflight_body_bytes: 64 * 1024 * 1024,
            max_inflight_body_bytes_per_client: None,
            max_jobs_per_webhook: 256,
        }
    }
}

/// The `[server]` section validated: its address parsed and its secrets
/// resolved. What [`Receiver`](crate::Receiver) runs on.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// The section as written; its limits and timeouts are used as they are.
    pub server: ServerConfig,
    /// `server.listen`, parsed.
    pub listen: SocketAddr,
    /// `server.admin_token`, resolved.
    pub admin_token: Option<Secret>,
    /// `server.metrics_token`, resolved.
    pub metrics_token: Option<Secret>,
    /// `server.max_connections_per_client`, or its default.
    pub connections_per_client: usize,
    /// `server.max_inflight_body_bytes_per_client`, or its default.
    pub body_bytes_per_client: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ServerConfig::default()
            .validate()
            .expect("the default [server] section is valid")
    }
}

impl ServerConfig {
    /// Checks every value and resolves the secrets. Every problem is
    /// returned, each starting with its key path (`server.…`).
    pub fn validate(&self) -> Result<ReceiverConfig, Vec<String>> {
        let mut problems = Vec::new();
        let listen = self.listen.parse::<SocketAddr>().map_err(|_| {
            problems.push(format!(
                "server.listen: {:?} is not an address such as \"127.0.0.1:8080\"",
                self.listen
            ));
        });
        let admin_token = resolve_secret(
            "server.admin_token",
            self.admin_token.as_ref(),
            &mut problems,
        );
        let metrics_token = resolve_secret(
            "server.metrics_token",
            self.metrics_token.as_ref(),
            &mut problems,
        );
        if self.max_body_bytes == 0 {
            problems.push("server.max_body_bytes: must be above 0".into());
        }
        if self.max_inflight_body_bytes < self.max_body_bytes {
            problems.push(format!(
                "server.max_inflight_body_bytes: {} is below server.max_body_bytes ({}); a largest body would never fit",
                self.max_inflight_body_bytes, self.max_body_bytes
            ));
        }
        // tokio's semaphore counts at most usize::MAX >> 3 permits.
        if self.max_inflight_body_bytes > usize::MAX >> 3 {
            problems.push("server.max_inflight_body_bytes: too large".into());
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            problems.push("server.max_connections: must be between 1 and 1000000".into());
        }
        let connections_per_client = self
            .max_connections_per_client
            .unwrap_or((self.max_connections / 4).max(1));
        if (1..=1_000_000).contains(&self.max_connections)
            && !(1..=self.max_connections).contains(&connections_per_client)
        {
            problems.push(format!(
                "server.max_connections_per_client: {connections_per_client} is not between 1 and server.max_connections ({})",
                self.max_connections
            ));
        }
        let body_bytes_per_client = self
            .max_inflight_body_bytes_per_client
            .unwrap_or((self.max_inflight_body_bytes / 4).max(self.max_body_bytes));
        if self.max_body_bytes <= self.max_inflight_body_bytes
            && !(self.max_body_bytes..=self.max_inflight_body_bytes)
                .contains(&body_bytes_per_client)
        {
            problems.push(format!(
                "server.max_inflight_body_bytes_per_client: {body_bytes_per_client} is not between server.max_body_bytes ({}) and server.max_inflight_body_bytes ({})",
                self.max_body_bytes, self.max_inflight_body_bytes
            ));
        }
        if self.max_jobs_per_webhook == 0 {
            problems.push("server.max_jobs_per_webhook: must be above 0".into());
        }
        for (key, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("server.{key}: must be above 0"));
            }
        }
        // An address that did not parse is already among the problems.
        let Ok(listen) = listen else {
            return Err(problems);
        };
        verdict(
            problems,
            ReceiverConfig {
                server: self.clone(),
                listen,
                admin_token,
                metrics_token,
                connections_per_client,
                body_bytes_per_client,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_section_gets_defaults_that_hold_on_a_small_pod() {
        let config = parse("").unwrap().validate().unwrap();
        let server = &config.server;
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(server.max_connections, 1024);
        assert_eq!(config.connections_per_client, 256);
        assert_eq!(server.max_inflight_body_bytes, 64 << 20);
        assert_eq!(config.body_bytes_per_client, 16 << 20);
        assert_eq!(server.max_jobs_per_webhook, 256);
        assert_eq!(server.body_read_timeout, Duration::from_secs(15));
        assert_eq!(server.idle_timeout, Duration::from_secs(60));
        // Head buffers of every connection plus the body budget: well under 512 MiB.
        let worst_case =
            server.max_connections * READ_BUFFER_BYTES + server.max_inflight_body_bytes;
        assert!(worst_case <= 160 << 20, "{worst_case}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("max_conections = 5").unwrap_err();
        assert!(err.contains("max_conections"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_path() {
        let config = parse(
            r#"
            listen = "localhost"
            max_body_bytes = 1000
            max_inflight_body_bytes = 999
            max_connections = 0
            max_jobs_per_webhook = 0
            body_read_timeout = "0s"
            metrics_token = { env = "MEDIA_ARCHIVER_TEST_UNSET_VARIABLE" }
            "#,
        )
        .unwrap();
        let problems = config.validate().unwrap_err();
        for key in [
            "server.listen",
            "server.max_inflight_body_bytes",
            "server.max_connections",
            "server.max_jobs_per_webhook",
            "server.body_read_timeout",
            "server.metrics_token",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }

    #[test]
    fn a_client_share_must_fit_between_one_request_and_the_whole() {
        let problems = parse(
            r#"
            max_connections = 10
            max_connections_per_client = 11
            max_body_bytes = 1000
            max_inflight_body_bytes = 4000
            max_inflight_body_bytes_per_client = 999
            "#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("server.max_connections_per_client: 11 is not between 1 and server.max_connections (10)"), "{problems:#?}");
        assert!(
            problems[1].starts_with("server.max_inflight_body_bytes_per_client: 999"),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_client_share_defaults_to_a_quarter_and_at_least_one_request() {
        let config = parse(
            r#"
            max_connections = 2
            max_body_bytes = 1000
            max_inflight_body_bytes = 1500
            "#,
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(config.connections_per_client, 1);
        assert_eq!(config.body_bytes_per_client, 1000);
    }

    #[test]
    fn secrets_are_resolved_and_never_shown() {
        let config = parse(r#"admin_token = "s3cret-admin""#)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            config.admin_token.as_ref().unwrap().expose(),
            "s3cret-admin"
        );
        assert!(!format!("{config:?}").contains("s3cret-admin"));
    }
}
