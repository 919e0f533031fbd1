//! `queue migrate`: every job, and the blob reference index, copied from
//! one backend to another (SQLite to fjall, fjall to PostgreSQL when one
//! machine is no longer enough, or back).
//!
//! The copy pages through the source in its own id order
//! ([`JobQueue::export_jobs`]) and imports each page into the target
//! ([`JobQueue::import_jobs`]), which keeps a job whose id it already
//! holds: a run can be repeated, or resumed after it was interrupted, and
//! ends with every job of the source in the target, once. The blob index
//! follows the same way, and a store's "index complete" mark is copied
//! last, so that a target never believes an index complete that was
//! copied only in part. An erasure that has not finished deleting its
//! blobs stops the copy before it starts (its marks, the only record of
//! those blobs, are not copied). Pending events to the user's app are not copied:
//! the source's daemon should deliver them before it is stopped (the
//! summary counts any left).

use crate::{JobQueue, QueueError};

/// Jobs or refs per page.
const PAGE: usize = 1000;

/// What [`migrate`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Jobs read from the source.
    pub jobs: u64,
    /// Of them, jobs the target did not hold yet.
    pub jobs_new: u64,
    /// Blob references read from the source (the target keeps the ones it
    /// had).
    pub refs: u64,
    /// Stores whose blob index was marked complete in the target.
    pub complete_indexes: u64,
    /// Deliveries still pending in the source, not copied.
    pub pending_deliveries_left: u64,
}

/// Copies every job and the blob index from `from` into `to`; `progress`
/// hears the number of jobs read so far after each page.
pub async fn migrate(
    from: &dyn JobQueue,
    to: &dyn JobQueue,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Migrated, QueueError> {
    if let Some(source) = from.erasures() {
        // A mark names a blob whose refs are already gone: only the mark
        // remembers to delete it, and marks are not copied.
        for store in source.complete_indexes().await? {
            let unfinished = source.unfinished_blob_erasures(&store).await?;
            if !unfinished.is_empty() {
                return Err(QueueError::Config(format!(
                    "an erasure in store {store} has not finished deleting {} blob(s); \
                     run `media-archiver erase` on the source once more (it deletes them \
                     first), then migrate",
                    unfinished.len()
                )));
            }
        }
    }
    let mut done = Migrated::default();
    let mut after: Option<String> = None;
    loop {
        let page = from.export_jobs(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.job.id.clone());
        done.jobs += page.len() as u64;
        done.jobs_new += to.import_jobs(page).await?;
        progress(done.jobs);
    }
    if let (Some(source), Some(target)) = (from.erasures(), to.erasures()) {
        let mut after = None;
        loop {
            let page = source.export_refs(after.as_ref(), PAGE).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            done.refs += page.len() as u64;
            target.restore_refs(&page).await?;
            after = Some(last);
        }
        for store in source.complete_indexes().await? {
            target.mark_index_complete(&store).await?;
            done.complete_indexes += 1;
        }
    }
    if let Some(outbox) = from.outbox() {
        done.pending_deliveries_left = outbox.pending_deliveries().await?.values().sum();
    }
    Ok(done)
}
