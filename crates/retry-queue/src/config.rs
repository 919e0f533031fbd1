//! `[queue]`: which backend holds the jobs, deserialized here because this
//! crate opens it (the binary only composes the sections).
//!
//! Users write the section flat, `backend = "postgres"` beside `url`
//! (PRODUCT.md section 4), and it is read into an enum with the backend's
//! own settings, so a PostgreSQL queue without a URL, or a backend that does
//! not exist, cannot be represented. The flat form is read first, into
//! [`QueueSection`], for two things an internally tagged enum cannot do:
//! `backend` defaults to `"sqlite"`, and the other backend's keys stay
//! accepted and unused, as they always were (the shipped examples keep
//! `path` while telling how to switch to PostgreSQL).

use std::path::PathBuf;
use std::time::Duration;

use archiver_core::SecretRef;
use serde::Deserialize;

use crate::{FjallOptions, PgConfig, PgOptions};

/// The shortest `done_retention` accepted.
const MIN_DONE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// `[queue]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "QueueSection")]
pub enum QueueConfig {
    /// `backend = "sqlite"`: the embedded queue, one database file used by
    /// one process.
    Sqlite {
        /// `queue.path`: the database file.
        path: PathBuf,
    },
    /// `backend = "fjall"`: the embedded LSM queue, one directory used by
    /// one process.
    Fjall(FjallOptions),
    /// `backend = "postgres"`: one database that several replicas share.
    Postgres(PgConfig),
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueSection::default()
            .try_into()
            .expect("the default [queue] section is complete")
    }
}

/// The `[queue]` section checked, its URL resolved: which queue to open.
#[derive(Debug, Clone)]
pub enum QueueSettings {
    /// Open [`SqliteQueue`](crate::SqliteQueue) on this file.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// Open [`FjallQueue`](crate::FjallQueue) with these options.
    Fjall(FjallOptions),
    /// Connect [`PgQueue`](crate::PgQueue) with these options.
    Postgres(PgOptions),
}

impl QueueConfig {
    /// Resolves the secrets and checks the values; every problem is
    /// returned, each starting with its key path (`queue…`).
    pub fn validate(&self) -> Result<QueueSettings, Vec<String>> {
        match self {
            QueueConfig::Sqlite { path } => Ok(QueueSettings::Sqlite { path: path.clone() }),
            QueueConfig::Fjall(options) if options.done_retention < MIN_DONE_RETENTION => {
                Err(vec![format!(
                    "queue.done_retention: must be at least 1d (providers redeliver webhooks \
                     for days; a job deleted sooner would be archived again)"
                )])
            }
            QueueConfig::Fjall(options) => Ok(QueueSettings::Fjall(options.clone())),
            QueueConfig::Postgres(pg) => pg.validate().map(QueueSettings::Postgres),
        }
    }
}

/// `[queue]` as users write it: every key of every backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct QueueSection {
    /// Which backend.
    backend: Backend,
    /// sqlite: the database file (default `data/queue.db`); fjall: the
    /// database directory (default `data/queue`).
    path: Option<PathBuf>,
    /// fjall: how long `done` jobs are kept.
    #[serde(deserialize_with = "archiver_core::config_value::opt_duration")]
    done_retention: Option<Duration>,
    /// postgres: the connection URL; required.
    url: Option<SecretRef>,
    /// postgres: pool size of each process.
    max_connections: u32,
    /// postgres: the schema of the queue's tables.
    schema: Option<String>,
}

/// The values of `backend`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    #[default]
    Sqlite,
    Fjall,
    Postgres,
}

impl Default for QueueSection {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            path: None,
            done_retention: None,
            url: None,
            max_connections: PgOptions::DEFAULT_MAX_CONNECTIONS,
            schema: None,
        }
    }
}

impl TryFrom<QueueSection> for QueueConfig {
    type Error = String;

    fn try_from(section: QueueSection) -> Result<Self, String> {
        match section.backend {
            Backend::Sqlite => Ok(QueueConfig::Sqlite {
                path: section.path.unwrap_or_else(|| "data/queue.db".into()),
            }),
            Backend::Fjall => Ok(QueueConfig::Fjall(FjallOptions {
                path: section.path.unwrap_or_else(|| "data/queue".into()),
                done_retention: section
                    .done_retention
                    .unwrap_or(FjallOptions::DEFAULT_DONE_RETENTION),
            })),
            Backend::Postgres => match section.url {
                Some(url) => Ok(QueueConfig::Postgres(PgConfig {
                    url,
                    max_connections: section.max_connections,
                    schema: section.schema,
                })),
                None => Err("url: required when backend = \"postgres\"".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<QueueConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_section_is_the_embedded_queue_in_data() {
        match parse("{}").unwrap() {
            QueueConfig::Sqlite { path } => assert_eq!(path, PathBuf::from("data/queue.db")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fjall_takes_a_directory_and_a_retention_with_defaults() {
        let QueueConfig::Fjall(options) = parse(r#"{"backend": "fjall"}"#).unwrap() else {
            panic!("not fjall")
        };
        assert_eq!(options.path, PathBuf::from("data/queue"));
        assert_eq!(options.done_retention, FjallOptions::DEFAULT_DONE_RETENTION);
        let config =
            parse(r#"{"backend": "fjall", "path": "/var/lib/q", "done_retention": "7d"}"#).unwrap();
        let QueueSettings::Fjall(options) = config.validate().unwrap() else {
            panic!("not fjall")
        };
        assert_eq!(options.path, PathBuf::from("/var/lib/q"));
        assert_eq!(options.done_retention, Duration::from_secs(7 * 24 * 3600));
        let short = parse(r#"{"backend": "fjall", "done_retention": "1h"}"#).unwrap();
        let problems = short.validate().unwrap_err();
        assert!(
            problems[0].starts_with("queue.done_retention: must be at least 1d"),
            "{problems:?}"
        );
    }

    #[test]
    fn postgres_takes_its_url_and_defaults_the_pool() {
        let config = parse(r#"{"backend": "postgres", "url": "postgres://db/q"}"#).unwrap();
        let QueueConfig::Postgres(pg) = config else {
            panic!("{config:?}")
        };
        assert_eq!(pg.max_connections, PgOptions::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(pg.schema, None);
        let QueueSettings::Postgres(options) = QueueConfig::Postgres(pg).validate().unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(options.url.expose(), "postgres://db/q");
    }

    #[test]
    fn a_backend_that_does_not_exist_or_lacks_its_url_is_refused() {
        let unknown = parse(r#"{"backend": "mysql"}"#).unwrap_err();
        assert!(
            unknown
                .contains("unknown variant `mysql`, expected one of `sqlite`, `fjall`, `postgres`"),
            "{unknown}"
        );
        let no_url = parse(r#"{"backend": "postgres"}"#).unwrap_err();
        assert!(no_url.contains("url: required"), "{no_url}");
        assert!(parse(r#"{"pth": "q.db"}"#).unwrap_err().contains("pth"));
    }

    #[test]
    fn the_other_backends_keys_are_accepted_and_unused() {
        let config =
            parse(r#"{"backend": "postgres", "path": "data/queue.db", "url": "postgres://db/q"}"#)
                .unwrap();
        assert!(matches!(config, QueueConfig::Postgres(_)), "{config:?}");
        let config = parse(r#"{"url": "postgres://db/q", "path": "q.db"}"#).unwrap();
        assert!(
            matches!(&config, QueueConfig::Sqlite { path } if path == &PathBuf::from("q.db")),
            "{config:?}"
        );
    }

    #[test]
    fn the_url_is_resolved_by_validate_and_never_shown() {
        let config = parse(
            r#"{"backend": "postgres", "url": {"env": "MEDIA_ARCHIVER_TEST_UNSET_QUEUE_URL"}}"#,
        )
        .unwrap();
        let problems = config.validate().unwrap_err();
        assert!(
            problems[0].starts_with("queue.url: ")
                && problems[0].contains("MEDIA_ARCHIVER_TEST_UNSET_QUEUE_URL"),
            "{problems:?}"
        );
        let config =
            parse(r#"{"backend": "postgres", "url": "mysql://root:hunter2@db/q"}"#).unwrap();
        let problems = config.validate().unwrap_err().join("\n");
        assert!(
            problems.contains("queue: url must start with postgres://"),
            "{problems}"
        );
        assert!(!problems.contains("hunter2"), "{problems}");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
