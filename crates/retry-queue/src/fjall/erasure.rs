//! Erasure on the fjall thread (`crate::erasure` has the rules). The
//! thread runs one command at a time, so a plan and a worker's record of
//! the same blob never interleave.

use std::collections::BTreeSet;
use std::ops::Bound;

use archiver_core::{JobState, UnixMillis};
use serde::{Deserialize, Serialize};

use super::jobs::Held;
use super::keys::{Key, split};
use super::store::{Job, Store, StoreResult, Tx, decode};
use crate::QueueError;
use crate::backend::millis;
use crate::erasure::{
    BlobRef, CommittedErasure, ErasedMessage, ErasureFilter, ErasurePlan, ErasureRefused,
    STALE_ERASURE,
};

/// The value of a `blob_refs` entry.
#[derive(Serialize, Deserialize)]
struct RefValue {
    chat_id: Option<String>,
    message_at: UnixMillis,
}

/// A `blob_refs` entry, read back.
struct Ref {
    message_id: String,
    blob_key: String,
    value: RefValue,
}

fn ref_key(store: &str, account: &str, message_id: &str, blob_key: &str) -> Vec<u8> {
    Key::new()
        .text(store)
        .text(account)
        .text(message_id)
        .tail(blob_key)
}

fn by_blob_key(store: &str, blob_key: &str, account: &str, message_id: &str) -> Vec<u8> {
    Key::new()
        .text(store)
        .text(blob_key)
        .text(account)
        .tail(message_id)
}

fn mark_key(store: &str, blob_key: &str) -> Vec<u8> {
    Key::new().text(store).tail(blob_key)
}

fn malformed() -> QueueError {
    QueueError::Corrupt("a blob index key is malformed".to_owned())
}

impl ErasureFilter {
    /// Whether a message of the filter's account is taken.
    fn takes(&self, message_id: &str, chat_id: Option<&str>, message_at: UnixMillis) -> bool {
        self.chat_id.as_deref().is_none_or(|c| chat_id == Some(c))
            && (self.message_ids.is_empty() || self.message_ids.iter().any(|m| m == message_id))
            && self.before.is_none_or(|before| message_at < before)
    }
}

impl Store {
    pub(super) fn record_ref(&mut self, held: &Held, blob: &BlobRef) -> StoreResult<()> {
        let now = self.now();
        match self.job(&held.job_id)? {
            Some(job) if job.state == JobState::Leased && job.lease_token == held.token => {}
            _ => return Err(held.lost()),
        }
        let mut tx = self.tx();
        let mark = mark_key(&blob.store, &blob.blob_key);
        if let Some(since) = self.ks.blob_erasures.get(&mark)? {
            let since = i64::from_be_bytes(since.as_ref().try_into().map_err(|_| malformed())?);
            if since >= now.saturating_sub(millis(STALE_ERASURE)) {
                return Err(QueueError::BlobBeingErased {
                    blob_key: blob.blob_key.clone(),
                });
            }
            // Its erasure died: the blob is named again and kept.
            tx.remove(&self.ks.blob_erasures, mark);
        }
        self.insert_ref(&mut tx, blob)?;
        self.commit(tx)
    }

    fn insert_ref(&self, tx: &mut Tx, blob: &BlobRef) -> StoreResult<()> {
        let key = ref_key(&blob.store, &blob.account, &blob.message_id, &blob.blob_key);
        if self.ks.blob_refs.contains_key(&key)? {
            return Ok(());
        }
        let value = RefValue {
            chat_id: blob.chat_id.clone(),
            message_at: blob.message_at,
        };
        let value = serde_json::to_vec(&value).expect("a ref serializes");
        tx.insert(&self.ks.blob_refs, key, value);
        tx.insert(
            &self.ks.blob_refs_by_blob,
            by_blob_key(&blob.store, &blob.blob_key, &blob.account, &blob.message_id),
            b"".as_slice(),
        );
        Ok(())
    }

    pub(super) fn restore_refs(&mut self, refs: &[BlobRef]) -> StoreResult<()> {
        let mut tx = self.tx();
        for blob in refs {
            self.insert_ref(&mut tx, blob)?;
        }
        self.commit(tx)
    }

    pub(super) fn mark_index_complete(&mut self, store: &str) -> StoreResult<()> {
        let mut tx = self.tx();
        tx.insert(
            &self.ks.index_complete,
            store.as_bytes().to_vec(),
            b"".as_slice(),
        );
        self.commit(tx)
    }

    pub(super) fn index_complete(&self, store: &str) -> StoreResult<bool> {
        Ok(self.ks.index_complete.contains_key(store)?)
    }

    /// The refs of `account` in `store`, as many as `prefix` narrows them.
    fn refs(&self, prefix: Vec<u8>) -> StoreResult<Vec<Ref>> {
        let mut refs = Vec::new();
        for entry in self.ks.blob_refs.prefix(&prefix) {
            let (key, value) = entry.into_inner()?;
            let (parts, blob_key) = split(&key, 3).ok_or_else(malformed)?;
            refs.push(Ref {
                message_id: parts[2].to_owned(),
                blob_key: blob_key.to_owned(),
                value: decode("a blob ref", &value)?,
            });
        }
        Ok(refs)
    }

    /// Who names a blob in a store: (account, message id) pairs.
    fn namers(&self, store: &str, blob_key: &str) -> StoreResult<Vec<(String, String)>> {
        let prefix = Key::new().text(store).text(blob_key).prefix();
        let mut namers = Vec::new();
        for entry in self.ks.blob_refs_by_blob.prefix(&prefix) {
            let key = entry.key()?;
            let (parts, message_id) = split(&key, 3).ok_or_else(malformed)?;
            namers.push((parts[2].to_owned(), message_id.to_owned()));
        }
        Ok(namers)
    }

    pub(super) fn plan_erasure(
        &mut self,
        store: &str,
        filter: &ErasureFilter,
        dry_run: bool,
    ) -> StoreResult<Result<ErasurePlan, ErasureRefused>> {
        let now = self.now();
        if !filter.is_bounded() {
            return Err(QueueError::Config(
                "an erasure needs a chat or message ids".into(),
            ));
        }
        if !self.index_complete(store)? {
            return Ok(Err(ErasureRefused::IndexIncomplete));
        }
        let mut unfinished: Vec<Job> = Vec::new();
        let prefix = Key::new().text(&filter.account).prefix();
        for entry in self.ks.by_account.prefix(&prefix) {
            let key = entry.key()?;
            let id = super::keys::id_after(&key, prefix.len() + 8).ok_or_else(malformed)?;
            let Some(job) = self.job(id)? else { continue };
            if !filter.takes(&job.message_id, job.chat_id.as_deref(), job.message_at) {
                continue;
            }
            match job.state {
                JobState::Leased => return Ok(Err(ErasureRefused::InFlight(job.id))),
                JobState::Pending | JobState::Waiting | JobState::Dead => unfinished.push(job),
                JobState::Done | JobState::Erased => {}
            }
        }
        let jobs_erased = unfinished.len() as u64;
        if !dry_run {
            let mut tx = self.tx();
            for old in unfinished {
                let mut job = old.clone();
                job.state = JobState::Erased;
                job.lease_expires_at = None;
                job.updated_at = now;
                self.put_job(&mut tx, Some(&old), job, now)?;
            }
            self.commit(tx)?;
        }
        let refs: Vec<Ref> = self
            .refs(Key::new().text(store).text(&filter.account).prefix())?
            .into_iter()
            .filter(|r| {
                filter.takes(
                    &r.message_id,
                    r.value.chat_id.as_deref(),
                    r.value.message_at,
                )
            })
            .collect();
        let erased: BTreeSet<&str> = refs.iter().map(|r| r.message_id.as_str()).collect();
        let mut plan = ErasurePlan {
            messages: refs
                .iter()
                .map(|r| ErasedMessage {
                    message_id: r.message_id.clone(),
                    message_at: r.value.message_at,
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            jobs_erased,
            ..ErasurePlan::default()
        };
        let blobs: BTreeSet<&str> = refs.iter().map(|r| r.blob_key.as_str()).collect();
        for blob in blobs {
            let shared = self
                .namers(store, blob)?
                .iter()
                .any(|(a, id)| *a != filter.account || !erased.contains(id.as_str()));
            if shared {
                plan.blobs_kept_shared += 1;
            } else {
                plan.blobs_unshared += 1;
            }
        }
        Ok(Ok(plan))
    }

    pub(super) fn commit_erasure(
        &mut self,
        store: &str,
        account: &str,
        messages: &[ErasedMessage],
    ) -> StoreResult<CommittedErasure> {
        let now = self.now();
        let mut tx = self.tx();
        let mut removed: BTreeSet<(String, String)> = BTreeSet::new();
        let mut blobs = BTreeSet::new();
        for message in messages {
            let prefix = Key::new()
                .text(store)
                .text(account)
                .text(&message.message_id)
                .prefix();
            for r in self.refs(prefix)? {
                tx.remove(
                    &self.ks.blob_refs,
                    ref_key(store, account, &r.message_id, &r.blob_key),
                );
                tx.remove(
                    &self.ks.blob_refs_by_blob,
                    by_blob_key(store, &r.blob_key, account, &r.message_id),
                );
                removed.insert((r.message_id, r.blob_key.clone()));
                blobs.insert(r.blob_key);
            }
        }
        let mut done = CommittedErasure::default();
        for blob in blobs {
            // Named by a row this commit does not remove?
            let named = self
                .namers(store, &blob)?
                .into_iter()
                .any(|(a, id)| a != account || !removed.contains(&(id, blob.clone())));
            if named {
                done.blobs_kept_shared += 1;
            } else {
                tx.insert(
                    &self.ks.blob_erasures,
                    mark_key(store, &blob),
                    now.to_be_bytes().as_slice(),
                );
                done.blobs_to_delete.push(blob);
            }
        }
        self.commit(tx)?;
        Ok(done)
    }

    pub(super) fn confirm_blob_erasure(
        &mut self,
        store: &str,
        blob_key: &str,
    ) -> StoreResult<bool> {
        let now = self.now();
        let mark = mark_key(store, blob_key);
        let marked = self.ks.blob_erasures.contains_key(&mark)?;
        let named = !self.namers(store, blob_key)?.is_empty();
        let delete = marked && !named;
        let mut tx = self.tx();
        if delete {
            tx.insert(&self.ks.blob_erasures, mark, now.to_be_bytes().as_slice());
        } else if marked {
            // Named again (a worker took a stale mark over): keep the blob.
            tx.remove(&self.ks.blob_erasures, mark);
        }
        self.commit(tx)?;
        Ok(delete)
    }

    pub(super) fn end_blob_erasure(&mut self, store: &str, blob_key: &str) -> StoreResult<()> {
        let mut tx = self.tx();
        tx.remove(&self.ks.blob_erasures, mark_key(store, blob_key));
        self.commit(tx)
    }

    pub(super) fn export_refs(
        &self,
        after: Option<&BlobRef>,
        limit: usize,
    ) -> StoreResult<Vec<BlobRef>> {
        let start = match after {
            Some(r) => Bound::Excluded(ref_key(&r.store, &r.account, &r.message_id, &r.blob_key)),
            None => Bound::Unbounded,
        };
        let mut refs = Vec::new();
        for entry in self
            .ks
            .blob_refs
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (key, value) = entry.into_inner()?;
            let (parts, blob_key) = split(&key, 3).ok_or_else(malformed)?;
            let value: RefValue = decode("a blob ref", &value)?;
            refs.push(BlobRef {
                store: parts[0].to_owned(),
                blob_key: blob_key.to_owned(),
                account: parts[1].to_owned(),
                message_id: parts[2].to_owned(),
                chat_id: value.chat_id,
                message_at: value.message_at,
            });
        }
        Ok(refs)
    }

    pub(super) fn complete_indexes(&self) -> StoreResult<Vec<String>> {
        let mut stores = Vec::new();
        for entry in self.ks.index_complete.iter() {
            let key = entry.key()?;
            stores.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(stores)
    }

    pub(super) fn unfinished_blob_erasures(&self, store: &str) -> StoreResult<Vec<String>> {
        let prefix = Key::new().text(store).prefix();
        let mut blobs = Vec::new();
        for entry in self.ks.blob_erasures.prefix(&prefix) {
            let key = entry.key()?;
            let blob = super::keys::id_after(&key, prefix.len()).ok_or_else(malformed)?;
            blobs.push(blob.to_owned());
        }
        Ok(blobs)
    }
}
