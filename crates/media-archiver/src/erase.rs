//! Erasure (PRODUCT.md section 10), for `POST /api/v1/erasures` and
//! `media-archiver erase`: the queue's blob index decides, the store
//! deletes.
//!
//! One erasure, in this order, so that a failure part-way is finished by
//! running the same erasure again:
//!
//! 1. Refused at once, nothing deleted, under Object Lock.
//! 2. Blobs an erasure that died had marked are finished first.
//! 3. A dry-run plan names the messages; their manifests are deleted (the
//!    message's first manifest and those beside it for other bytes). Their
//!    index rows still name the blobs, so a failure here leaves the next
//!    run the same messages to find.
//! 4. The plan is committed: the rows go, the messages' unfinished jobs
//!    are `erased`, the blobs no other message names are marked.
//! 5. Each marked blob is deleted, after the queue confirmed that no
//!    message named it meanwhile, and unmarked.
//!
//! A dry run stops after counting what 3 to 5 would do. One audit log
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
        tracing::info!(
            audit = "erasure",
            outcome,
            requested_by,
            account = filter.account,
            chat_id = filter.chat_id.as_deref(),
            message_ids = ?filter.message_ids,
            before = filter.before,
            dry_run,
            manifests = report.manifests,
            blobs_deleted = report.blobs_deleted,
            blobs_kept_shared = report.blobs_kept_shared,
            jobs_erased = report.jobs_erased,
            error = result.as_ref().err().map(ToString::to_string),
            "erasure"
        );
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
        if !dry_run {
            for blob in index
                .unfinished_blob_erasures(store)
                .await
                .map_err(unavailable)?
            {
                self.delete_blob(index, archive, &blob).await?;
            }
        }
        let plan = |dry| async move {
            index
                .plan_erasure(store, filter, dry)
                .await
                .map_err(unavailable)?
                .map_err(|refused| ErasureFailure::Refused(refused.to_string()))
        };
        let preview = plan(true).await?;
        let mut report = ErasureReport {
            dry_run,
            blobs_kept_shared: preview.blobs_kept_shared,
            jobs_erased: preview.jobs_erased,
            ..ErasureReport::default()
        };
        for message in &preview.messages {
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
            report.blobs_deleted = preview.blobs_to_delete.len() as u64;
            return Ok(report);
        }
        let committed = plan(false).await?;
        // A message archived between the two plans: its manifests too.
        for message in committed
            .messages
            .iter()
            .filter(|m| !preview.messages.contains(m))
        {
            for key in manifest_keys(
                archive,
                &filter.account,
                message.message_at,
                &message.message_id,
            )
            .await
            .map_err(unavailable)?
            {
                archive.store.delete(&key).await.map_err(unavailable)?;
                report.manifests += 1;
            }
        }
        report.blobs_kept_shared = committed.blobs_kept_shared;
        report.jobs_erased = committed.jobs_erased;
        for blob in &committed.blobs_to_delete {
            if self.delete_blob(index, archive, blob).await? {
                report.blobs_deleted += 1;
            }
        }
        Ok(report)
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
