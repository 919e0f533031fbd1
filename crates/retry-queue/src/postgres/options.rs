//! How to reach the database: [`PgConfig`] as the config file writes it,
//! and [`PgOptions`], its URL resolved, checked without connecting.

use std::str::FromStr;

use archiver_core::config_value::verdict;
use archiver_core::{Secret, SecretRef};
use sqlx::postgres::PgConnectOptions;

/// `[queue]` with `backend = "postgres"`, as written: the URL is still a
/// reference to a secret. [`PgConfig::validate`] resolves it into the
/// [`PgOptions`] that [`PgQueue::connect_with`](crate::PgQueue::connect_with)
/// takes.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `queue.url`: where the URL comes from (it may hold a password).
    pub url: SecretRef,
    /// `queue.max_connections`: pool size of each process.
    pub max_connections: u32,
    /// `queue.schema`: the queue's tables' schema, created when missing;
    /// `None` uses the server's `search_path`.
    pub schema: Option<String>,
}

impl PgConfig {
    /// Resolves the URL and checks what can be checked without connecting.
    /// Problems start with their key path and never quote the URL.
    pub fn validate(&self) -> Result<PgOptions, Vec<String>> {
        let url = self
            .url
            .resolve()
            .map_err(|e| vec![format!("queue.url: {e}")])?;
        let options = PgOptions {
            url,
            max_connections: self.max_connections,
            schema: self.schema.clone(),
        };
        options
            .validate()
            .map_err(|problems| vec![format!("queue: {problems}")])?;
        Ok(options)
    }
}

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database?sslmode=...`; a secret,
    /// since it may hold a password.
    pub url: Secret,
    /// Pool size. Leasing, acks and the batching tasks share it.
    pub max_connections: u32,
    /// The schema holding the queue's tables, created when missing; `None`
    /// uses the server's `search_path` (normally `public`).
    pub schema: Option<String>,
}

impl PgOptions {
    /// The default pool size.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

    /// Options for `url` with the default pool and no schema of its own.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            schema: None,
        }
    }

    /// Checks what can be checked without connecting: the URL parses, the
    /// pool has a size, the schema is a plain identifier. Messages never
    /// quote the URL.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let url = self.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push("url must start with postgres:// or postgresql://".to_owned());
        } else if let Err(e) = PgConnectOptions::from_str(url) {
            problems.push(format!("url is not a PostgreSQL connection URL: {e}"));
        }
        if self.max_connections < 2 {
            problems.push(format!(
                "max_connections ({}) must be at least 2 (enqueues and leases need a connection each)",
                self.max_connections
            ));
        }
        if let Some(schema) = &self.schema
            && !valid_identifier(schema)
        {
            problems.push(format!(
                "schema {schema:?} must match [a-z_][a-z0-9_]{{0,62}}"
            ));
        }
        verdict(problems, ()).map_err(|problems| problems.join("; "))
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &"[redacted]")
            .field("max_connections", &self.max_connections)
            .field("schema", &self.schema)
            .finish()
    }
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && name.len() <= 63
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_without_connecting_and_never_show_the_url() {
        let good = PgOptions::new("postgres://app:s3cret@db.internal:5432/media");
        assert_eq!(good.validate(), Ok(()));
        let debug = format!("{good:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains("db.internal"), "{debug}");

        let bad = PgOptions {
            url: Secret::new("mysql://root:hunter2@x/y"),
            max_connections: 1,
            schema: Some("Bad-Name".into()),
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("url"), "{err}");
        assert!(err.contains("max_connections"), "{err}");
        assert!(err.contains("schema"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["media_archiver", "_q", "q1", &"a".repeat(63)] {
            assert!(valid_identifier(ok), "{ok}");
        }
        for bad in ["", "1q", "Q", "a-b", "a\"; DROP", &"a".repeat(64)] {
            assert!(!valid_identifier(bad), "{bad}");
        }
    }
}
