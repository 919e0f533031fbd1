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
//! [`Receiver`], [`ReceiverConfig`], and the [`Readiness`] probe the binary
//! supplies.

mod admin;
mod error;
mod routes;
mod server;

use std::collections::HashMap;
use std::sync::Arc;

pub use server::{Receiver, ReceiverConfig, RenderMetrics, bind};

/// Answers whether the daemon can do its work right now (queue and store
/// reachable); backs `/readyz`.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync + std::fmt::Debug + 'static {
    /// `Err` with a reason a human can act on.
    async fn check(&self) -> Result<(), String>;
}

/// Account name to adapter.
pub type Accounts = HashMap<String, Arc<dyn providers::Provider>>;
