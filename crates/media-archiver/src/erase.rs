//! Erasure (PRODUCT.md section 10), for `POST /api/v1/erasures` and
//! `media-archiver erase`: the queue's blob index decides, the store
//! deletes.
//!
//! One erasure, in this order, so that a failure part-way is finished by
//! running the same erasure again:
//!
//! 1. Refused at once, nothing deleted, under Object Lock (as configured:
//!    a bucket whose versioning or default lock the config does not name
//!    keeps older versions that DeleteObject does not remove).
//! 2. Blobs an earlier erasure marked and did not delete are deleted first.
//! 3. The plan: refused while a matching job is leased; else the matching
//!    jobs that are not done end `erased`, so none of them runs again.
//! 4. The planned messages' manifests are deleted (the message's first
//!    manifest and those beside it for other bytes). Their index rows
//!    still name the blobs, so a failure here leaves the erasure sent
//!    again the same messages to find.
//! 5. The commit: those messages' rows go, and the blobs no other message
//!    names are marked; each is deleted after the queue confirmed no
//!    message named it meanwhile, and unmarked.
//!
//! A dry run changes nothing and counts what 3 to 5 would do. One audit log
//! event per erasure names who asked, the filter and the counts, never
//! media content.

use std::sync::Arc;

use futures_util::TryStreamExt as _;
use retry_queue::{BlobRef, ErasureFilter, Erasures, JobQueue, QueueError};
use s3_uploader::{Archive, Archives, Manifest, StoreError};
use webhook_receiver::{ErasureFailure, ErasureReport};

/// Erases through the queue's blob index and each account's archive.
#[derive(Debug)]
pub(crate) struct ArchiveEraser {
    pub(crate) queue: Arc<dyn JobQueue>,
    pub(crate) archives: Archives,
}

/// Message ids listed in an erasure's audit event; beyond, only counted.
const AUDITED_IDS: usize = 100;

fn unavailable(e: impl std::fmt::Display) -> ErasureFailure {
    ErasureFailure::Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl webhook_receiver::Eraser for ArchiveEraser {
    async fn erase(
        &self,
        filter: &ErasureFilter,
        dry_run: bool,
        requested_by: &str,
    ) -> Result<ErasureReport, ErasureFailure> {
        let result = self.run(filter, dry_run).await;
        let (outcome, report) = match &result {
            Ok(report) => ("done", report.clone()),
            Err(ErasureFailure::Refused(_)) => ("refused", ErasureReport::default()),
            Err(ErasureFailure::Unavailable(_)) => ("failed", ErasureReport::default()),
        };
        // The audit record: who, what filter, what was done; never content.
        // (The ids are listed up to a bound; their number always.)
        let listed = &filter.message_ids[..filter.message_ids.len().min(AUDITED_IDS)];
        tracing::info!(
            audit = "erasure",
            outcome,
            requested_by,
            account = filter.account,
            chat_id = filter.chat_id.as_deref(),
            message_ids = ?listed,
            message_id_count = filter.message_ids.len(),
            before = filter.before,
            dry_run,
            manifests = report.manifests,
            blobs_deleted = report.blobs_deleted,
            blobs_kept_shared = report.blobs_kept_shared,
            jobs_erased = report.jobs_erased,
            error = result.as_ref().err().map(ToString::to_string),
            "erasure"
        );
        metrics::counter!("media_archiver_erasures_total", "outcome" => outcome).increment(1);
        result
    }
}

impl ArchiveEraser {
    fn index(&self) -> Result<&dyn Erasures, ErasureFailure> {
        self.queue
            .erasures()
            .ok_or_else(|| unavailable("this queue keeps no blob index"))
    }

    async fn run(
        &self,
        filter: &ErasureFilter,
        dry_run: bool,
    ) -> Result<ErasureReport, ErasureFailure> {
        let archive = self.archives.of(&filter.account);
        if let Some(lock) = &archive.object_lock {
            return Err(ErasureFailure::Refused(format!(
                "the account's store is under {lock}: its objects cannot be deleted before their retention ends; nothing was deleted"
            )));
        }
        let index = self.index()?;
        let store = archive.store_id.as_str();
        self.complete_if_empty(index, store).await?;
        if !dry_run {
            for blob in index
                .unfinished_blob_erasures(store)
                .await
                .map_err(unavailable)?
            {
                self.delete_blob(index, archive, &blob).await?;
            }
        }
        // From here no matching job runs again (unless a dry run).
        let plan = index
            .plan_erasure(store, filter, dry_run)
            .await
            .map_err(unavailable)?
            .map_err(|refused| ErasureFailure::Refused(refused.to_string()))?;
        let mut report = ErasureReport {
            dry_run,
            blobs_kept_shared: plan.blobs_kept_shared,
            jobs_erased: plan.jobs_erased,
            ..ErasureReport::default()
        };
        // While their rows still name the blobs: a failure here leaves the
        // same messages for the erasure sent again.
        for message in &plan.messages {
            let keys = manifest_keys(
                archive,
                &filter.account,
                message.message_at,
                &message.message_id,
            )
            .await
            .map_err(unavailable)?;
            report.manifests += keys.len() as u64;
            if !dry_run {
                for key in keys {
                    archive.store.delete(&key).await.map_err(unavailable)?;
                }
            }
        }
        if dry_run {
            report.blobs_deleted = plan.blobs_unshared;
            return Ok(report);
        }
        let committed = index
            .commit_erasure(store, &filter.account, &plan.messages)
            .await
            .map_err(unavailable)?;
        report.blobs_kept_shared = committed.blobs_kept_shared;
        for blob in &committed.blobs_to_delete {
            if self.delete_blob(index, archive, blob).await? {
                report.blobs_deleted += 1;
            }
        }
        Ok(report)
    }

    /// Marks `store`'s index complete when no archive on it holds a
    /// manifest yet (a new store: every manifest it will hold is recorded
    /// by the worker). An existing archive needs `erase --rebuild-index`.
    async fn complete_if_empty(
        &self,
        index: &dyn Erasures,
        store: &str,
    ) -> Result<(), ErasureFailure> {
        if index.index_complete(store).await.map_err(unavailable)? {
            return Ok(());
        }
        for archive in self
            .archives
            .all()
            .into_iter()
            .filter(|a| a.store_id == store)
        {
            let prefix = format!("{}messages/", archive.layout.prefix());
            let mut pages = archive.store.list(&prefix, 1);
            if pages.try_next().await.map_err(unavailable)?.is_some() {
                return Ok(());
            }
        }
        index.mark_index_complete(store).await.map_err(unavailable)
    }

    /// At startup: every store that holds no manifest yet has a complete
    /// index (see [`Self::complete_if_empty`]).
    pub(crate) async fn complete_empty_indexes(&self) -> Result<(), ErasureFailure> {
        let index = self.index()?;
        for archive in self.archives.stores() {
            self.complete_if_empty(index, &archive.store_id).await?;
        }
        Ok(())
    }

    /// Deletes a marked blob unless a message names it again; unmarks it.
    async fn delete_blob(
        &self,
        index: &dyn Erasures,
        archive: &Archive,
        blob: &str,
    ) -> Result<bool, ErasureFailure> {
        let store = archive.store_id.as_str();
        let delete = index
            .confirm_blob_erasure(store, blob)
            .await
            .map_err(unavailable)?;
        if delete {
            archive.store.delete(blob).await.map_err(unavailable)?;
        }
        index
            .end_blob_erasure(store, blob)
            .await
            .map_err(unavailable)?;
        Ok(delete)
    }

    /// `erase --rebuild-index`: records every manifest of every archive in
    /// the queue's blob index (existing rows kept), then marks each store's
    /// index complete. Returns the manifests read per store.
    pub(crate) async fn rebuild_index(&self) -> Result<Vec<(String, u64)>, RebuildError> {
        let index = self.queue.erasures().ok_or_else(|| {
            RebuildError::Queue(QueueError::Config("this queue keeps no blob index".into()))
        })?;
        let mut counts = Vec::new();
        for archive in self.archives.all() {
            let prefix = format!("{}messages/", archive.layout.prefix());
            let mut pages = archive.store.list(&prefix, s3_uploader::MAX_LIST_PAGE);
            let mut read = 0u64;
            while let Some(page) = pages.try_next().await? {
                let mut refs = Vec::with_capacity(page.len());
                for object in page.iter().filter(|o| o.key.ends_with(".json")) {
                    let Some(bytes) = archive.store.get_small(&object.key).await? else {
                        continue; // erased meanwhile
                    };
                    let manifest: Manifest = serde_json::from_slice(&bytes)
                        .map_err(|e| RebuildError::Manifest(format!("{}: {e}", object.key)))?;
                    let message_at =
                        chrono::DateTime::parse_from_rfc3339(&manifest.message_timestamp)
                            .map_err(|e| {
                                RebuildError::Manifest(format!(
                                    "{}: message_timestamp: {e}",
                                    object.key
                                ))
                            })?
                            .timestamp_millis();
                    refs.push(BlobRef {
                        store: archive.store_id.clone(),
                        blob_key: manifest.blob_key,
                        account: manifest.account,
                        message_id: manifest.message_id,
                        chat_id: manifest.chat_id,
                        message_at,
                    });
                }
                read += refs.len() as u64;
                index.restore_refs(&refs).await?;
            }
            counts.push((archive.description.clone(), read));
        }
        for archive in self.archives.stores() {
            index.mark_index_complete(&archive.store_id).await?;
        }
        Ok(counts)
    }
}

/// Why `erase --rebuild-index` stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RebuildError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unreadable manifest {0}")]
    Manifest(String),
}

/// The keys of a message's manifests that exist: its first one, and those
/// beside it for other bytes.
async fn manifest_keys(
    archive: &Archive,
    account: &str,
    message_at: i64,
    message_id: &str,
) -> Result<Vec<String>, StoreError> {
    let layout = &archive.layout;
    let first = layout.manifest_key(account, message_at, message_id);
    let mut keys = Vec::new();
    if archive.store.size_of(&first).await?.is_some() {
        keys.push(first);
    }
    let others = layout.other_manifests_prefix(account, message_at, message_id);
    let mut pages = archive.store.list(&others, s3_uploader::MAX_LIST_PAGE);
    while let Some(page) = pages.try_next().await? {
        keys.extend(page.into_iter().map(|o| o.key));
    }
    Ok(keys)
}
