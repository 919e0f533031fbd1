//! Events to the user's app: `media.archived` and `media.dead`, signed per
//! Standard Webhooks 1.0 and sent from the queue's outbox (PRODUCT.md
//! section 11).
//!
//! The queue commits a delivery per matching `[[notify]]` target in the
//! transaction of the job's `done`/`dead` transition
//! ([`retry_queue::Outbox`]), so this crate never decides *whether* an app
//! hears of a job, only *when*: a [`Notifier`] runs one loop per target that
//! claims due deliveries, builds each body from the job and its manifest
//! (through [`EventData`], which the binary implements over the archive),
//! signs it ([`sign`]) and posts it, at most [`SENDS_PER_TARGET`] at a time.
//! A 2xx ends the delivery; anything else is reported to the outbox, which
//! retries it with the queue's backoff until the target's `max_age`. The
//! loops share nothing with the workers, so a slow or dead target never
//! delays archiving.
//!
//! Main types: [`NotifyConfig`] (one `[[notify]]` entry) checked into a
//! [`Target`]; [`Notifier`]; [`EventData`]; [`NotifyError`], the one error
//! enum, classified for the retry decision.

mod config;
mod error;
mod sender;
pub mod sign;

pub use config::{NotifyConfig, Target, validate_all};
pub use error::NotifyError;
pub use sender::{EventData, Notifier, SENDS_PER_TARGET};
