//! The HTTP front door (PRODUCT.md section 3).
//!
//! It owns the routes, the body limit, and the rule that a webhook is
//! answered 200 only after its jobs are durably committed: the handler calls
//! [`JobQueue::enqueue`](retry_queue::JobQueue::enqueue), which returns only
//! after the commit (fsync), and anything else (queue down, disk full) is a
//! 503 so the provider redelivers. Bad input is a 4xx with a JSON message
//! naming the problem, never a 5xx. Every status code is chosen in one place,
//! [`error::ApiError`].
//!
//! It must not know how a provider's payload looks (adapters parse), how a
//! job is worked (the pipeline), or where files are stored. Main types:
//! [`Receiver`], [`ServerConfig`] (`[server]`, validated into a
//! [`ReceiverConfig`]), and what the binary supplies: the
//! [`Readiness`] probe and the [`MediaIndex`] behind `GET /api/v1/media`
//! (it reads manifests; the receiver only finds the jobs).

mod admin;
mod clients;
mod config;
mod error;
mod routes;
mod server;

use std::collections::HashMap;
use std::sync::Arc;

pub use admin::job_json;
pub use config::{ReceiverConfig, ServerConfig};
pub use server::{Receiver, RenderMetrics, bind};

/// Answers whether the daemon can do its work right now (queue and store
/// reachable); backs `/readyz`.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync + std::fmt::Debug + 'static {
    /// `Err` with a reason a human can act on.
    async fn check(&self) -> Result<(), String>;
}

/// Where a finished job's file is in the archive, for `GET /api/v1/media`.
/// The binary implements it over the store (it reads the job's manifest);
/// the receiver only finds the message's jobs in the queue.
#[async_trait::async_trait]
pub trait MediaIndex: Send + Sync + std::fmt::Debug + 'static {
    /// The archived file of a `done` job, from its manifest; `Ok(None)` when
    /// the archive has no manifest for it. `Err` is for the log (the client
    /// gets 503): the archive could not be read.
    async fn archived(&self, job: &retry_queue::JobRecord)
    -> Result<Option<ArchivedMedia>, String>;
}

/// Erasure (`POST /api/v1/erasures`, PRODUCT.md section 10). The binary
/// implements it over the queue's blob index and the store; the receiver
/// parses and checks the request and maps the answer.
#[async_trait::async_trait]
pub trait Eraser: Send + Sync + std::fmt::Debug + 'static {
    /// Erases what `filter` matches (or, with `dry_run`, counts it);
    /// `requested_by` names the caller in the audit log.
    async fn erase(
        &self,
        filter: &retry_queue::ErasureFilter,
        dry_run: bool,
        requested_by: &str,
    ) -> Result<ErasureReport, ErasureFailure>;
}

/// The most message ids one erasure takes (more: several erasures).
pub const MAX_ERASED_MESSAGE_IDS: usize = 10_000;

/// The filter of an erasure as the API and the CLI are given it: a chat,
/// message ids or both (never a whole account), at most
/// [`MAX_ERASED_MESSAGE_IDS`] ids, `before` in RFC 3339. The account is
/// the caller's to check. The error names the problem.
pub fn erasure_filter(
    account: String,
    chat_id: Option<String>,
    message_ids: Vec<String>,
    before: Option<&str>,
) -> Result<retry_queue::ErasureFilter, String> {
    if chat_id.is_none() && message_ids.is_empty() {
        return Err(
            "give chat_id, message_ids, or both: an erasure never takes a whole account".into(),
        );
    }
    if message_ids.len() > MAX_ERASED_MESSAGE_IDS {
        return Err(format!(
            "at most {MAX_ERASED_MESSAGE_IDS} message_ids per erasure"
        ));
    }
    let before = before
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.timestamp_millis())
                .map_err(|e| format!("before {text:?} is not RFC 3339: {e}"))
        })
        .transpose()?;
    Ok(retry_queue::ErasureFilter {
        account,
        chat_id,
        message_ids,
        before,
    })
}

/// What an erasure did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErasureReport {
    /// Manifests deleted.
    pub manifests: u64,
    /// Blobs deleted: no remaining manifest in the store named them.
    pub blobs_deleted: u64,
    /// Blobs of erased messages kept, because other messages name them.
    pub blobs_kept_shared: u64,
    /// Jobs of matching messages that were not done, now `erased`.
    pub jobs_erased: u64,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// Why an erasure did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErasureFailure {
    /// Refused, nothing deleted (Object Lock, a matching message being
    /// archived, an index to rebuild): 409 with the reason.
    #[error("{0}")]
    Refused(String),
    /// The queue or the store failed part-way: 503; retrying the same
    /// erasure finishes it.
    #[error("{0}")]
    Unavailable(String),
}

/// One archived file as `GET /api/v1/media` reports it (PRODUCT.md
/// section 3).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchivedMedia {
    /// Full key of the blob (prefix included).
    pub blob_key: String,
    /// Full key of the manifest.
    pub manifest_key: String,
    /// sha256 of the blob, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The provider's mime type.
    pub mime_type: Option<String>,
    /// Whether the bytes were checked against a hash the provider vouched
    /// for (`false`: the sha256 was only computed while downloading).
    pub verified: bool,
    /// How: `provider-sha256`, `whatsapp-enc+plain` or `computed-only` (the
    /// manifest's `verification`).
    pub verification: String,
    /// A presigned GET URL of the blob (S3 only; absent otherwise). A
    /// bearer credential until it expires: never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Account name to adapter.
pub type Accounts = HashMap<String, Arc<dyn providers::Provider>>;
