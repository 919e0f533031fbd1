//! Erasure on PostgreSQL (`crate::erasure` has the schema and the rules),
//! statement for statement as on SQLite. Replicas run concurrently here, so
//! two locks stand in for SQLite's one writer: a transaction-scoped
//! advisory lock per blob, taken by a worker's record and by a plan (in
//! key order), so the two never interleave on one blob; and the matching
//! jobs' rows, which a plan locks (`FOR UPDATE`) so that no replica leases
//! one of them between the plan's look and its commit.

use std::collections::BTreeSet;

use sqlx::Row as _;
use sqlx::postgres::Postgres;

use super::PgQueue;
use super::row::db;
use crate::backend::millis;
use crate::erasure::{
    BlobRef, CommittedErasure, ErasedMessage, ErasureFilter, ErasurePlan, ErasureRefused, Erasures,
    STALE_ERASURE,
};
use crate::{Lease, QueueError};

/// The rows of `jobs` or `blob_refs` an erasure's filter takes; the
/// parameters are $1 account, $2 chat, $3 message ids, $4 before.
const MATCHES: &str = "account = $1 AND ($2::TEXT IS NULL OR chat_id = $2)
    AND ($3::TEXT[] IS NULL OR message_id = ANY($3))
    AND ($4::BIGINT IS NULL OR message_at < $4)";

type Tx<'a> = sqlx::Transaction<'a, Postgres>;

/// Binds the filter as [`MATCHES`]' parameters.
fn bind_filter<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    filter: &'q ErasureFilter,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let ids = (!filter.message_ids.is_empty()).then_some(&filter.message_ids);
    query
        .bind(&filter.account)
        .bind(&filter.chat_id)
        .bind(ids)
        .bind(filter.before)
}

/// Serialises everything done to one blob of one store until the
/// transaction ends.
async fn lock_blob(tx: &mut Tx<'_>, store: &str, blob_key: &str) -> Result<(), QueueError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 0))")
        .bind(store)
        .bind(blob_key)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

async fn insert_ref(tx: &mut Tx<'_>, blob: &BlobRef) -> Result<(), QueueError> {
    sqlx::query(
        "INSERT INTO blob_refs (store, blob_key, account, message_id, chat_id, message_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&blob.store)
    .bind(&blob.blob_key)
    .bind(&blob.account)
    .bind(&blob.message_id)
    .bind(&blob.chat_id)
    .bind(blob.message_at)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

#[async_trait::async_trait]
impl Erasures for PgQueue {
    async fn record_ref(&self, lease: &Lease, blob: &BlobRef) -> Result<(), QueueError> {
        let now = self.now();
        let token = i64::try_from(lease.token).map_err(|_| lost(lease))?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_blob(&mut tx, &blob.store, &blob.blob_key).await?;
        let holds = sqlx::query(
            "SELECT 1 FROM jobs WHERE id = $1 AND state = 'leased' AND lease_token = $2 FOR SHARE",
        )
        .bind(&lease.job.id)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if holds.is_none() {
            return Err(lost(lease));
        }
        let since: Option<i64> = sqlx::query_scalar(
            "SELECT since FROM blob_erasures WHERE store = $1 AND blob_key = $2",
        )
        .bind(&blob.store)
        .bind(&blob.blob_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        match since {
            None => {}
            Some(since) if since < now.saturating_sub(millis(STALE_ERASURE)) => {
                sqlx::query("DELETE FROM blob_erasures WHERE store = $1 AND blob_key = $2")
                    .bind(&blob.store)
                    .bind(&blob.blob_key)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            Some(_) => {
                return Err(QueueError::BlobBeingErased {
                    blob_key: blob.blob_key.clone(),
                });
            }
        }
        insert_ref(&mut tx, blob).await?;
        tx.commit().await.map_err(db)
    }

    async fn restore_refs(&self, refs: &[BlobRef]) -> Result<(), QueueError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for blob in refs {
            insert_ref(&mut tx, blob).await?;
        }
        tx.commit().await.map_err(db)
    }

    async fn mark_index_complete(&self, store: &str) -> Result<(), QueueError> {
        sqlx::query("INSERT INTO blob_index_complete (store) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(store)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn index_complete(&self, store: &str) -> Result<bool, QueueError> {
        Ok(
            sqlx::query("SELECT 1 FROM blob_index_complete WHERE store = $1")
                .bind(store)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?
                .is_some(),
        )
    }

    async fn plan_erasure(
        &self,
        store: &str,
        filter: &ErasureFilter,
        dry_run: bool,
    ) -> Result<Result<ErasurePlan, ErasureRefused>, QueueError> {
        if !filter.is_bounded() {
            return Err(QueueError::Config(
                "an erasure needs a chat or message ids".into(),
            ));
        }
        let now = self.now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !self.index_complete(store).await? {
            return Ok(Err(ErasureRefused::IndexIncomplete));
        }
        // Locked, so that no replica leases one of them until this commits.
        let matching = bind_filter(
            sqlx::query(&format!(
                "SELECT id, state FROM jobs WHERE {MATCHES} ORDER BY id FOR UPDATE"
            )),
            filter,
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut jobs_erased = 0;
        for row in &matching {
            let state: String = row.try_get(1).map_err(db)?;
            match state.as_str() {
                "leased" => return Ok(Err(ErasureRefused::InFlight(row.try_get(0).map_err(db)?))),
                "pending" | "waiting" | "dead" => jobs_erased += 1,
                _ => {}
            }
        }
        if !dry_run {
            bind_filter(
                sqlx::query(&format!(
                    "UPDATE jobs SET state = 'erased', lease_expires_at = NULL, updated_at = $5
                     WHERE state IN ('pending', 'waiting', 'dead') AND {MATCHES}"
                )),
                filter,
            )
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let rows = bind_filter(
            sqlx::query(&format!(
                "SELECT blob_key, message_id, message_at FROM blob_refs WHERE store = $5 AND {MATCHES}"
            )),
            filter,
        )
        .bind(store)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut blobs = BTreeSet::new();
        let mut messages = BTreeSet::new();
        for row in &rows {
            blobs.insert(row.try_get::<String, _>(0).map_err(db)?);
            messages.insert(ErasedMessage {
                message_id: row.try_get(1).map_err(db)?,
                message_at: row.try_get(2).map_err(db)?,
            });
        }
        let erased: BTreeSet<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
        let mut plan = ErasurePlan {
            jobs_erased,
            ..ErasurePlan::default()
        };
        for blob in &blobs {
            let namers = sqlx::query(
                "SELECT account, message_id FROM blob_refs WHERE store = $1 AND blob_key = $2",
            )
            .bind(store)
            .bind(blob)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            let mut shared = false;
            for row in &namers {
                let (account, id): (String, String) =
                    (row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?);
                shared |= account != filter.account || !erased.contains(id.as_str());
            }
            if shared {
                plan.blobs_kept_shared += 1;
            } else {
                plan.blobs_unshared += 1;
            }
        }
        plan.messages = messages.into_iter().collect();
        tx.commit().await.map_err(db)?;
        Ok(Ok(plan))
    }

    async fn commit_erasure(
        &self,
        store: &str,
        account: &str,
        messages: &[ErasedMessage],
    ) -> Result<CommittedErasure, QueueError> {
        let now = self.now();
        let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let removed: Vec<String> = sqlx::query_scalar(
            "DELETE FROM blob_refs WHERE store = $1 AND account = $2 AND message_id = ANY($3)
             RETURNING blob_key",
        )
        .bind(store)
        .bind(account)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let blobs: BTreeSet<String> = removed.into_iter().collect();
        // In key order: two erasures never wait on each other in a cycle.
        // A worker recording one of these blobs either committed before
        // (its row is counted below) or waits and then finds the mark.
        for blob in &blobs {
            lock_blob(&mut tx, store, blob).await?;
        }
        let mut done = CommittedErasure::default();
        for blob in blobs {
            let named =
                sqlx::query("SELECT 1 FROM blob_refs WHERE store = $1 AND blob_key = $2 LIMIT 1")
                    .bind(store)
                    .bind(&blob)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            if named.is_some() {
                done.blobs_kept_shared += 1;
                continue;
            }
            sqlx::query(
                "INSERT INTO blob_erasures (store, blob_key, since) VALUES ($1, $2, $3)
                 ON CONFLICT (store, blob_key) DO UPDATE SET since = EXCLUDED.since",
            )
            .bind(store)
            .bind(&blob)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            done.blobs_to_delete.push(blob);
        }
        tx.commit().await.map_err(db)?;
        Ok(done)
    }

    async fn confirm_blob_erasure(&self, store: &str, blob_key: &str) -> Result<bool, QueueError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_blob(&mut tx, store, blob_key).await?;
        let marked = sqlx::query("SELECT 1 FROM blob_erasures WHERE store = $1 AND blob_key = $2")
            .bind(store)
            .bind(blob_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        let named =
            sqlx::query("SELECT 1 FROM blob_refs WHERE store = $1 AND blob_key = $2 LIMIT 1")
                .bind(store)
                .bind(blob_key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
        let delete = marked && !named;
        if delete {
            sqlx::query("UPDATE blob_erasures SET since = $3 WHERE store = $1 AND blob_key = $2")
                .bind(store)
                .bind(blob_key)
                .bind(self.now())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        } else {
            // Named again (a worker took a stale mark over): keep the blob.
            sqlx::query("DELETE FROM blob_erasures WHERE store = $1 AND blob_key = $2")
                .bind(store)
                .bind(blob_key)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(delete)
    }

    async fn end_blob_erasure(&self, store: &str, blob_key: &str) -> Result<(), QueueError> {
        sqlx::query("DELETE FROM blob_erasures WHERE store = $1 AND blob_key = $2")
            .bind(store)
            .bind(blob_key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn unfinished_blob_erasures(&self, store: &str) -> Result<Vec<String>, QueueError> {
        sqlx::query_scalar("SELECT blob_key FROM blob_erasures WHERE store = $1 ORDER BY blob_key")
            .bind(store)
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    async fn export_refs(
        &self,
        after: Option<&BlobRef>,
        limit: usize,
    ) -> Result<Vec<BlobRef>, QueueError> {
        let part = |f: fn(&BlobRef) -> &str| after.map(f);
        // Two statements, so that each page is a seek on the primary key.
        let after_clause = if after.is_some() {
            "WHERE (store, account, message_id, blob_key) > ($1, $2::TEXT, $3::TEXT, $4::TEXT)"
        } else {
            "WHERE $1::TEXT IS NULL AND $2::TEXT IS NULL AND $3::TEXT IS NULL AND $4::TEXT IS NULL"
        };
        let sql = format!(
            "SELECT store, blob_key, account, message_id, chat_id, message_at FROM blob_refs
             {after_clause} ORDER BY store, account, message_id, blob_key LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(part(|r| &r.store))
            .bind(part(|r| &r.account))
            .bind(part(|r| &r.message_id))
            .bind(part(|r| &r.blob_key))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(BlobRef {
                    store: row.try_get("store").map_err(db)?,
                    blob_key: row.try_get("blob_key").map_err(db)?,
                    account: row.try_get("account").map_err(db)?,
                    message_id: row.try_get("message_id").map_err(db)?,
                    chat_id: row.try_get("chat_id").map_err(db)?,
                    message_at: row.try_get("message_at").map_err(db)?,
                })
            })
            .collect()
    }

    async fn complete_indexes(&self) -> Result<Vec<String>, QueueError> {
        sqlx::query_scalar("SELECT store FROM blob_index_complete ORDER BY store")
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }
}

fn lost(lease: &Lease) -> QueueError {
    QueueError::LeaseLost {
        job_id: lease.job.id.clone(),
    }
}
