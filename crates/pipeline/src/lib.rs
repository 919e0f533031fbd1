//! The worker: the only place that knows the order of the stages.
//!
//! ```text
//! queue.lease -> provider.resolve -> fetch.download (stream, sha256, spool)
//!   -> verify against the provider's hash -> store.put_blob -> store.put_manifest
//!   -> queue.complete        (any failure: classify -> queue.fail)
//! ```
//!
//! [`Worker::run`] leases up to `concurrency` jobs at a time, runs each in its
//! own task under a semaphore permit, renews each lease while its job is
//! alive, and on shutdown stops leasing, lets in-flight jobs finish within
//! `shutdown_grace`, then cancels the rest and gives their leases back. A job
//! is never cancelled between writing its blob and writing its manifest
//! except by that grace deadline, and even then the next attempt rewrites
//! both idempotently (the blob key is its hash).
//!
//! Every job transition is reported in one place ([`telemetry`]), which logs
//! it with the job id, account, provider, attempt, outcome, bytes and elapsed
//! time.

mod config;
mod job;
pub mod telemetry;
mod worker;

pub use config::WorkerConfig;
pub use job::{JobError, Processed};
pub use worker::Worker;
