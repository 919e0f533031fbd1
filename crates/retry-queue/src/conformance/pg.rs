//! A private PostgreSQL schema per test, so that PostgreSQL-backed tests
//! (the conformance suite, the end-to-end tests) run in parallel on one
//! server without seeing each other's jobs.
//!
//! The server is `MEDIA_ARCHIVER_TEST_DATABASE_URL` (default
//! [`DEFAULT_TEST_DATABASE_URL`]). When it cannot be reached,
//! [`PgTestDatabase::create`] prints a notice and returns `None` so the test
//! can skip, unless `MEDIA_ARCHIVER_REQUIRE_POSTGRES=1` (CI), where it panics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Connection as _;

use crate::PgOptions;

/// The local test server: trust auth, database `test`.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of its own on the test server; dropped (with its tables) when
/// this value is dropped.
#[derive(Debug)]
pub struct PgTestDatabase {
    url: String,
    /// `ma_test_{pid}_{n}_{random}`.
    pub schema: String,
}

/// The server URL tests use.
pub fn test_database_url() -> String {
    std::env::var("MEDIA_ARCHIVER_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned())
}

fn required() -> bool {
    std::env::var("MEDIA_ARCHIVER_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// Runs `f` on a runtime of its own on another thread, so this works from
/// sync code, async code and `Drop` alike.
fn block_on<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the test database")
            .block_on(f)
    })
    .join()
}

async fn execute(url: String, sql: String) -> Result<(), String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url))
        .await
        .map_err(|_| "no answer within 5s".to_owned())?
        .map_err(|e| e.to_string())?;
    sqlx::query(&sql)
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

impl PgTestDatabase {
    /// Creates a fresh schema on the test server, or says why not: `None`
    /// with a notice on stderr, or a panic under
    /// `MEDIA_ARCHIVER_REQUIRE_POSTGRES=1`.
    pub fn create() -> Option<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let url = test_database_url();
        let schema = format!(
            "ma_test_{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let created = block_on(execute(url.clone(), format!("CREATE SCHEMA \"{schema}\"")))
            .unwrap_or_else(|_| Err("the setup thread panicked".to_owned()));
        match created {
            Ok(()) => Some(Self { url, schema }),
            Err(e) if required() => panic!(
                "MEDIA_ARCHIVER_REQUIRE_POSTGRES=1 but the test database is not usable: {e} \
                 (set MEDIA_ARCHIVER_TEST_DATABASE_URL, or start the local server)"
            ),
            Err(e) => {
                eprintln!(
                    "skipping: PostgreSQL test database not reachable ({e}); \
                     set MEDIA_ARCHIVER_REQUIRE_POSTGRES=1 to make this fatal"
                );
                None
            }
        }
    }

    /// Options for a queue in this schema.
    pub fn options(&self) -> PgOptions {
        PgOptions {
            max_connections: 8,
            schema: Some(self.schema.clone()),
            ..PgOptions::new(self.url.clone())
        }
    }

    /// The server URL (the schema is separate: see [`PgTestDatabase::options`]).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgTestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        if let Ok(Err(e)) = block_on(execute(self.url.clone(), sql)) {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}
