//! The queue's side of erasure (PRODUCT.md section 10): the blob reference
//! index, the jobs an erasure ends, and the blobs it is deleting.
//!
//! A blob is content-addressed, so a file forwarded to many chats is one
//! blob named by many manifests; an erasure may delete a blob only when no
//! remaining message of that store names it. The index that answers this
//! lives here, beside the jobs, where one transaction can both read it and
//! change it:
//!
//! - `blob_refs`: one row per (store, account, message, blob). The worker
//!   records a message's row ([`Erasures::record_ref`], fenced by its
//!   lease) *before* it writes the blob, so a blob is never in the store
//!   without a row that names it (a row without a blob, from an attempt
//!   that failed after recording, only keeps a blob longer: the safe side).
//! - `blob_erasures`: the blobs an erasure has decided to delete and not
//!   yet deleted. An erasure first ends the matching jobs
//!   ([`Erasures::plan_erasure`], so that none of them runs again), deletes
//!   the messages' manifests, then ([`Erasures::commit_erasure`]) removes
//!   their rows and marks each blob no other row names, in one
//!   transaction; a
//!   worker that then wants to record that blob is refused
//!   ([`QueueError::BlobBeingErased`], retried later), so the delete cannot
//!   remove a blob a new manifest is about to name. Before each delete the
//!   eraser renews the mark ([`Erasures::confirm_blob_erasure`]); a mark
//!   older than [`STALE_ERASURE`] is an erasure that died, whose marks a
//!   worker may take over (the blob was not deleted, or will be uploaded
//!   again); the next erasure of the store deletes every mark left first.
//!
//! The two orders of an erasure racing an archive of another message with
//! the same blob: the worker's row first, and the plan sees it and keeps
//! the blob; the plan first, and the worker is refused until the blob is
//! gone, then uploads it again.
//!
//! Jobs of matching messages that are not done (pending, waiting, dead)
//! become `erased` (terminal). A leased one has the erasure refused
//! ([`ErasureRefused::InFlight`], nothing changed), so that no attempt
//! writes a manifest after the erasure deleted the message's manifests.
//!
//! # Schema (SQLite version 6, PostgreSQL migration 5)
//!
//! ```sql
//! -- jobs: state may also be 'erased'; new column chat_id TEXT (NULL for
//! -- jobs queued before version 6: a chat erasure finds those by their
//! -- archived messages' rows only).
//! CREATE TABLE blob_refs (
//!     store      TEXT NOT NULL,     -- the archive's identity (its kind, endpoint and bucket, or folder)
//!     blob_key   TEXT NOT NULL,
//!     account    TEXT NOT NULL,
//!     message_id TEXT NOT NULL,
//!     chat_id    TEXT,
//!     message_at INTEGER NOT NULL,  -- dates the message's manifest keys
//!     PRIMARY KEY (store, account, message_id, blob_key)
//! );
//! CREATE INDEX blob_refs_blob ON blob_refs (store, blob_key);
//! CREATE TABLE blob_erasures (store TEXT, blob_key TEXT, since INTEGER, PRIMARY KEY (store, blob_key));
//! -- Stores whose blob_refs cover every manifest: each store once
//! -- `erase --rebuild-index` ran, or found empty of manifests by the daemon.
//! CREATE TABLE blob_index_complete (store TEXT PRIMARY KEY);
//! ```

use std::time::Duration;

use archiver_core::UnixMillis;

use crate::{Lease, QueueError};

/// A mark older than this belongs to an erasure that died: its blob may
/// be recorded again, and the next erasure of the store finishes it. An
/// eraser renews its mark right before each delete, which is bounded by
/// the store's request timeout, far below this.
pub const STALE_ERASURE: Duration = Duration::from_secs(600);

/// A message's use of a blob in one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// The archive's identity (`s3_uploader::Archive::id`).
    pub store: String,
    /// The blob's key.
    pub blob_key: String,
    /// The message's account.
    pub account: String,
    /// The message id.
    pub message_id: String,
    /// The message's chat, when the provider says.
    pub chat_id: Option<String>,
    /// The message's time (its manifests are dated by it).
    pub message_at: UnixMillis,
}

/// Which messages an erasure takes: one account's, by chat and/or message
/// ids, optionally only those before a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureFilter {
    /// The account.
    pub account: String,
    /// Only this chat's messages.
    pub chat_id: Option<String>,
    /// Only these messages (empty: every message of the chat).
    pub message_ids: Vec<String>,
    /// Only messages sent before this time.
    pub before: Option<UnixMillis>,
}

impl ErasureFilter {
    /// Whether the filter names something (a chat or messages): an erasure
    /// of a whole account by accident is refused.
    pub fn is_bounded(&self) -> bool {
        self.chat_id.is_some() || !self.message_ids.is_empty()
    }
}

/// An archived message an erasure takes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ErasedMessage {
    /// The message id.
    pub message_id: String,
    /// Its time, which dates its manifest keys.
    pub message_at: UnixMillis,
}

/// What [`Erasures::plan_erasure`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasurePlan {
    /// The archived messages whose manifests go.
    pub messages: Vec<ErasedMessage>,
    /// Their blobs that no other message names (deleted by the commit).
    pub blobs_unshared: u64,
    /// Their blobs that other messages still name (kept).
    pub blobs_kept_shared: u64,
    /// Jobs of matching messages that were not done: now `erased` (or, in
    /// a dry run, that would be).
    pub jobs_erased: u64,
}

/// Why an erasure was refused before anything changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErasureRefused {
    /// A job of a matching message is being archived right now.
    #[error(
        "job {0} of a matching message is being archived right now; retry in a minute, when its attempt has ended"
    )]
    InFlight(String),
    /// The store's blob index does not cover its older manifests yet.
    #[error(
        "the blob index of this store does not cover manifests archived before it existed: run `media-archiver erase --rebuild-index` once, then retry"
    )]
    IndexIncomplete,
}

/// What [`Erasures::commit_erasure`] did with the blobs of the erased
/// messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommittedErasure {
    /// The blobs no remaining message names: marked, to delete.
    pub blobs_to_delete: Vec<String>,
    /// The blobs other messages still name: kept.
    pub blobs_kept_shared: u64,
}

/// The erasure side of a queue backend (see the module docs).
#[async_trait::async_trait]
pub trait Erasures: Send + Sync + std::fmt::Debug {
    /// Records, while `lease` holds its job, that the job's message names
    /// `blob` in its store: before the blob is written. `LeaseLost` if the
    /// lease no longer holds the job (an erasure ended it);
    /// [`QueueError::BlobBeingErased`] while an erasure is deleting that
    /// blob (a transient failure: the attempt is retried later).
    async fn record_ref(&self, lease: &Lease, blob: &BlobRef) -> Result<(), QueueError>;

    /// Records refs found by scanning a store's manifests
    /// (`erase --rebuild-index`); existing rows are kept.
    async fn restore_refs(&self, refs: &[BlobRef]) -> Result<(), QueueError>;

    /// Whether `store`'s index covers every manifest in it (rebuilt, or
    /// found empty before its first archive).
    async fn index_complete(&self, store: &str) -> Result<bool, QueueError>;

    /// `store`'s index now covers every manifest in it: erasures in it may
    /// proceed.
    async fn mark_index_complete(&self, store: &str) -> Result<(), QueueError>;

    /// The first step of an erasure of `filter` in `store`: refused (and
    /// nothing changed) while a matching job is leased or the index is
    /// incomplete; else, unless `dry_run`, the matching jobs that are not
    /// done become `erased` and can never run again. Returns the archived
    /// messages the index names (their manifests are the caller's to
    /// delete, then [`Erasures::commit_erasure`]) and what committing them
    /// would do to their blobs, as of now.
    async fn plan_erasure(
        &self,
        store: &str,
        filter: &ErasureFilter,
        dry_run: bool,
    ) -> Result<Result<ErasurePlan, ErasureRefused>, QueueError>;

    /// Once the messages' manifests are deleted: removes their rows and
    /// marks each of their blobs that no other message names, in one
    /// transaction.
    async fn commit_erasure(
        &self,
        store: &str,
        account: &str,
        messages: &[ErasedMessage],
    ) -> Result<CommittedErasure, QueueError>;

    /// Right before deleting a marked blob: renews its mark and says
    /// whether to delete it (`false` if a worker took the mark over: the
    /// blob is named again).
    async fn confirm_blob_erasure(&self, store: &str, blob_key: &str) -> Result<bool, QueueError>;

    /// After the blob was deleted (or found gone): removes its mark.
    async fn end_blob_erasure(&self, store: &str, blob_key: &str) -> Result<(), QueueError>;

    /// Every blob still marked in `store`: an erasure that failed or died
    /// before deleting it. The next erasure deletes them first.
    async fn unfinished_blob_erasures(&self, store: &str) -> Result<Vec<String>, QueueError>;

    /// Up to `limit` refs after `after`, in the backend's own order:
    /// `queue migrate` pages through the whole index with it.
    async fn export_refs(
        &self,
        after: Option<&BlobRef>,
        limit: usize,
    ) -> Result<Vec<BlobRef>, QueueError>;

    /// Every store whose index is complete.
    async fn complete_indexes(&self) -> Result<Vec<String>, QueueError>;
}
