//! The vocabulary every media-archiver stage shares, and nothing else.
//!
//! A webhook becomes a [`JobSpec`]; the queue stores it and hands it out; the
//! worker fetches, verifies and stores the file; every failure on the way is
//! reduced to an [`ErrorClass`] so that the queue can decide "retry later" or
//! "dead-letter" without reading error messages. Those few types live here so
//! that the stages can meet without depending on one another.
//!
//! This crate does no I/O, except [`SecretRef::resolve`] reading an environment
//! variable or a secret file while the config is validated. Main types:
//! - [`JobSpec`], [`JobState`], [`ProviderKind`], [`Direction`]: what a job is.
//! - [`ErrorClass`] and the [`Classify`] trait: the retry classification each
//!   crate's error enum implements.
//! - [`Sha256Digest`] and [`decode`]: provider hash fields in every encoding
//!   they arrive in (hex, base64, base64url, index-keyed objects, Node Buffers).
//! - [`Clock`], [`SystemClock`], [`ManualClock`]: time, controllable in tests.
//! - [`Secret`]: a credential that never prints.
//! - [`StagedFile`] and [`ByteSink`]: how a download reaches the store, staged
//!   first or streamed through.
//! - [`bounds`]: the limits every id and timestamp taken from a webhook must
//!   respect, and the deadline rule, so that every adapter applies the same.

pub mod bounds;
mod clock;
pub mod config_value;
pub mod decode;
mod digest;
mod error_class;
mod job;
mod secret;
mod sink;
mod staged;

pub use bounds::OutOfBounds;
pub use clock::{Clock, ManualClock, SystemClock, UnixMillis};
pub use config_value::SecretRef;
pub use digest::Sha256Digest;
pub use error_class::{Classify, ErrorClass, parse_retry_after};
pub use job::{AccountName, Direction, InvalidAccountName, JobSpec, JobState, ProviderKind};
pub use secret::Secret;
pub use sink::ByteSink;
pub use staged::{StagedBody, StagedFile};
