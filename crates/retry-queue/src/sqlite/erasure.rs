//! Erasure on the database thread (`crate::erasure` has the schema and the
//! rules). The thread runs one command at a time, so a plan and a worker's
//! record of the same blob never interleave.

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::lease::Held;
use super::thread::{Store, StoreResult};
use crate::QueueError;
use crate::backend::millis;
use crate::erasure::{
    BlobRef, CommittedErasure, ErasedMessage, ErasureFilter, ErasurePlan, ErasureRefused,
    STALE_ERASURE,
};

/// The rows of `jobs` or `blob_refs` an erasure's filter takes; the
/// parameters are ?1 account, ?2 chat, ?3 message ids (a JSON array), ?4
/// before.
const MATCHES: &str = "account = ?1 AND (?2 IS NULL OR chat_id = ?2)
    AND (?3 IS NULL OR message_id IN (SELECT value FROM json_each(?3)))
    AND (?4 IS NULL OR message_at < ?4)";

/// The filter as the parameters of [`MATCHES`].
fn filter_params(filter: &ErasureFilter) -> (String, Option<String>, Option<String>, Option<i64>) {
    let ids = (!filter.message_ids.is_empty())
        .then(|| serde_json::Value::from(filter.message_ids.clone()).to_string());
    (
        filter.account.clone(),
        filter.chat_id.clone(),
        ids,
        filter.before,
    )
}

impl Store {
    pub(super) fn record_ref(&mut self, held: &Held, blob: &BlobRef) -> StoreResult<()> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let holds = tx
            .prepare_cached(
                "SELECT 1 FROM jobs WHERE id = ?1 AND state = 'leased' AND lease_token = ?2",
            )?
            .query_row(params![held.job_id(), held.token()?], |_| Ok(()))
            .optional()?;
        if holds.is_none() {
            return Err(held.lost());
        }
        take_over_or_refuse(&tx, &blob.store, &blob.blob_key, now)?;
        insert_ref(&tx, blob)?;
        tx.commit()?;
        Ok(())
    }

    pub(super) fn restore_refs(&mut self, refs: &[BlobRef]) -> StoreResult<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for blob in refs {
            insert_ref(&tx, blob)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn mark_index_complete(&mut self, store: &str) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO blob_index_complete (store) VALUES (?1) ON CONFLICT DO NOTHING",
            params![store],
        )?;
        Ok(())
    }

    pub(super) fn index_complete(&mut self, store: &str) -> StoreResult<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM blob_index_complete WHERE store = ?1")?
            .exists(params![store])?)
    }

    pub(super) fn plan_erasure(
        &mut self,
        store: &str,
        filter: &ErasureFilter,
        dry_run: bool,
    ) -> StoreResult<Result<ErasurePlan, ErasureRefused>> {
        let now = self.now();
        let (account, chat, ids, before) = filter_params(filter);
        if !filter.is_bounded() {
            return Err(QueueError::Config("an erasure needs a chat or message ids".into()).into());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let complete = tx
            .prepare_cached("SELECT 1 FROM blob_index_complete WHERE store = ?1")?
            .exists(params![store])?;
        if !complete {
            return Ok(Err(ErasureRefused::IndexIncomplete));
        }
        let in_flight: Option<String> = tx
            .prepare_cached(&format!(
                "SELECT id FROM jobs WHERE state = 'leased' AND {MATCHES} LIMIT 1"
            ))?
            .query_row(params![account, chat, ids, before], |row| row.get(0))
            .optional()?;
        if let Some(job) = in_flight {
            return Ok(Err(ErasureRefused::InFlight(job)));
        }
        let unfinished = format!("state IN ('pending', 'waiting', 'dead') AND {MATCHES}");
        let jobs_erased = if dry_run {
            tx.prepare_cached(&format!("SELECT COUNT(*) FROM jobs WHERE {unfinished}"))?
                .query_row(params![account, chat, ids, before], |row| {
                    row.get::<_, i64>(0)
                })?
        } else {
            let n = tx
                .prepare_cached(&format!(
                    "UPDATE jobs SET state = 'erased', lease_expires_at = NULL, updated_at = ?5
                     WHERE {unfinished}"
                ))?
                .execute(params![account, chat, ids, before, now])?;
            i64::try_from(n).unwrap_or(i64::MAX)
        };
        let rows: Vec<(String, String, i64)> = tx
            .prepare_cached(&format!(
                "SELECT blob_key, message_id, message_at FROM blob_refs WHERE store = ?5 AND {MATCHES}"
            ))?
            .query_map(params![account, chat, ids, before, store], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let erased: BTreeSet<&str> = rows.iter().map(|(_, id, _)| id.as_str()).collect();
        let mut plan = ErasurePlan {
            messages: rows
                .iter()
                .map(|(_, message_id, message_at)| ErasedMessage {
                    message_id: message_id.clone(),
                    message_at: *message_at,
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            jobs_erased: u64::try_from(jobs_erased).unwrap_or_default(),
            ..ErasurePlan::default()
        };
        {
            let mut namers = tx.prepare_cached(
                "SELECT account, message_id FROM blob_refs WHERE store = ?1 AND blob_key = ?2",
            )?;
            let blobs: BTreeSet<&str> = rows.iter().map(|(blob, _, _)| blob.as_str()).collect();
            for blob in blobs {
                let shared = namers
                    .query_map(params![store, blob], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?
                    .iter()
                    .any(|(a, id)| *a != filter.account || !erased.contains(id.as_str()));
                if shared {
                    plan.blobs_kept_shared += 1;
                } else {
                    plan.blobs_unshared += 1;
                }
            }
        }
        tx.commit()?;
        Ok(Ok(plan))
    }

    pub(super) fn commit_erasure(
        &mut self,
        store: &str,
        account: &str,
        messages: &[ErasedMessage],
    ) -> StoreResult<CommittedErasure> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut blobs = BTreeSet::new();
        {
            let mut remove = tx.prepare_cached(
                "DELETE FROM blob_refs WHERE store = ?1 AND account = ?2 AND message_id = ?3
                 RETURNING blob_key",
            )?;
            for message in messages {
                let removed = remove
                    .query_map(params![store, account, message.message_id], |row| {
                        row.get::<_, String>(0)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                blobs.extend(removed);
            }
        }
        let mut done = CommittedErasure::default();
        {
            let mut named = tx.prepare_cached(
                "SELECT 1 FROM blob_refs WHERE store = ?1 AND blob_key = ?2 LIMIT 1",
            )?;
            let mut mark = tx.prepare_cached(
                "INSERT INTO blob_erasures (store, blob_key, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO UPDATE SET since = excluded.since",
            )?;
            for blob in blobs {
                if named.exists(params![store, blob])? {
                    done.blobs_kept_shared += 1;
                } else {
                    mark.execute(params![store, blob, now])?;
                    done.blobs_to_delete.push(blob);
                }
            }
        }
        tx.commit()?;
        Ok(done)
    }

    pub(super) fn confirm_blob_erasure(
        &mut self,
        store: &str,
        blob_key: &str,
    ) -> StoreResult<bool> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let marked = tx
            .prepare_cached("SELECT 1 FROM blob_erasures WHERE store = ?1 AND blob_key = ?2")?
            .exists(params![store, blob_key])?;
        let named = tx
            .prepare_cached("SELECT 1 FROM blob_refs WHERE store = ?1 AND blob_key = ?2 LIMIT 1")?
            .exists(params![store, blob_key])?;
        let delete = marked && !named;
        if delete {
            tx.execute(
                "UPDATE blob_erasures SET since = ?3 WHERE store = ?1 AND blob_key = ?2",
                params![store, blob_key, now],
            )?;
        } else {
            // Named again (a worker took a stale mark over): keep the blob.
            tx.execute(
                "DELETE FROM blob_erasures WHERE store = ?1 AND blob_key = ?2",
                params![store, blob_key],
            )?;
        }
        tx.commit()?;
        Ok(delete)
    }

    pub(super) fn end_blob_erasure(&mut self, store: &str, blob_key: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached("DELETE FROM blob_erasures WHERE store = ?1 AND blob_key = ?2")?
            .execute(params![store, blob_key])?;
        Ok(())
    }

    pub(super) fn export_refs(
        &mut self,
        after: Option<&BlobRef>,
        limit: usize,
    ) -> StoreResult<Vec<BlobRef>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let part = |f: fn(&BlobRef) -> &str| after.map(f);
        let (store, account, message_id, blob_key) = (
            part(|r| &r.store),
            part(|r| &r.account),
            part(|r| &r.message_id),
            part(|r| &r.blob_key),
        );
        // Two statements, so that each page is a seek on the primary key.
        let after_clause = if after.is_some() {
            "WHERE (store, account, message_id, blob_key) > (?1, ?2, ?3, ?4)"
        } else {
            "WHERE ?1 IS NULL AND ?2 IS NULL AND ?3 IS NULL AND ?4 IS NULL"
        };
        let refs = self
            .conn
            .prepare_cached(&format!(
                "SELECT store, blob_key, account, message_id, chat_id, message_at FROM blob_refs
                 {after_clause} ORDER BY store, account, message_id, blob_key LIMIT ?5"
            ))?
            .query_map(
                params![store, account, message_id, blob_key, limit],
                read_ref,
            )?
            .collect::<Result<_, _>>()?;
        Ok(refs)
    }

    pub(super) fn complete_indexes(&mut self) -> StoreResult<Vec<String>> {
        let stores = self
            .conn
            .prepare_cached("SELECT store FROM blob_index_complete ORDER BY store")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(stores)
    }

    pub(super) fn unfinished_blob_erasures(&mut self, store: &str) -> StoreResult<Vec<String>> {
        let blobs = self
            .conn
            .prepare_cached(
                "SELECT blob_key FROM blob_erasures WHERE store = ?1 ORDER BY blob_key",
            )?
            .query_map(params![store], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(blobs)
    }
}

/// A mark on the blob refuses the record while it is fresh (an erasure is
/// deleting it); a stale one (its erasure died) is taken over.
fn take_over_or_refuse(
    tx: &Transaction<'_>,
    store: &str,
    blob_key: &str,
    now: i64,
) -> StoreResult<()> {
    let since: Option<i64> = tx
        .prepare_cached("SELECT since FROM blob_erasures WHERE store = ?1 AND blob_key = ?2")?
        .query_row(params![store, blob_key], |row| row.get(0))
        .optional()?;
    match since {
        None => Ok(()),
        Some(since) if since < now.saturating_sub(millis(STALE_ERASURE)) => {
            tx.execute(
                "DELETE FROM blob_erasures WHERE store = ?1 AND blob_key = ?2",
                params![store, blob_key],
            )?;
            Ok(())
        }
        Some(_) => Err(QueueError::BlobBeingErased {
            blob_key: blob_key.to_owned(),
        }
        .into()),
    }
}

fn read_ref(row: &rusqlite::Row<'_>) -> rusqlite::Result<BlobRef> {
    Ok(BlobRef {
        store: row.get(0)?,
        blob_key: row.get(1)?,
        account: row.get(2)?,
        message_id: row.get(3)?,
        chat_id: row.get(4)?,
        message_at: row.get(5)?,
    })
}

fn insert_ref(tx: &Transaction<'_>, blob: &BlobRef) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO blob_refs (store, blob_key, account, message_id, chat_id, message_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        blob.store,
        blob.blob_key,
        blob.account,
        blob.message_id,
        blob.chat_id,
        blob.message_at
    ])?;
    Ok(())
}
