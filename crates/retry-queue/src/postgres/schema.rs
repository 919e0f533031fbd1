//! The schema's migrations (embedded from `migrations/`) and creating the
//! queue's own schema, both run once at connect.

use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool};

use super::row::db;
use crate::QueueError;

/// The schema migrations, applied in order by [`PgQueue::connect`].
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "jobs", include_str!("../../migrations/0001_jobs.sql")),
    (
        2,
        "jobs_message",
        include_str!("../../migrations/0002_jobs_message.sql"),
    ),
    (
        3,
        "jobs_message_partial",
        include_str!("../../migrations/0003_jobs_message_partial.sql"),
    ),
    (
        4,
        "outbox",
        include_str!("../../migrations/0004_outbox.sql"),
    ),
    (
        5,
        "erasure",
        include_str!("../../migrations/0005_erasure.sql"),
    ),
];

/// Creates `schema` unless it exists (checked first, so that a role without
/// `CREATE` on the database can use a schema made for it).
pub(super) async fn create_schema(
    connect: &PgConnectOptions,
    schema: &str,
) -> Result<(), QueueError> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect_with(connect)
        .await
        .map_err(|e| QueueError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
    if !exists {
        // The name was validated as a plain identifier.
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        if let Err(e) = sqlx::query(&create).execute(&mut conn).await {
            // Another replica may have created it at the same moment.
            let raced = matches!(&e, sqlx::Error::Database(d)
                if matches!(d.code().as_deref(), Some("23505" | "42P06")));
            if !raced {
                return Err(db(e));
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// The embedded [`MIGRATIONS`] as a source for sqlx's migrator.
#[derive(Debug)]
pub(super) struct EmbeddedMigrations;

impl<'s> MigrationSource<'s> for EmbeddedMigrations {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    (*name).into(),
                    MigrationType::Simple,
                    (*sql).into(),
                    false,
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// Applies the pending migrations under sqlx's advisory lock (replicas that
/// start together migrate once). sqlx records them in `_sqlx_migrations`
/// of the queue's schema.
pub(super) async fn migrate(pool: &PgPool) -> Result<(), QueueError> {
    let migrator = Migrator::new(EmbeddedMigrations)
        .await
        .map_err(|e| QueueError::Corrupt(format!("embedded migrations: {e}")))?;
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => QueueError::Corrupt(format!(
            "queue schema has migration {v} applied, unknown to this build (a newer \
             media-archiver wrote it, or another application's sqlx migrations share this \
             schema: give the queue its own with queue.schema)"
        )),
        other => QueueError::Unavailable(format!("cannot migrate the queue schema: {other}")),
    })
}
