//! Turns a [`DownloadRequest`] into a hashed file in the local spool, safely.
//!
//! This crate owns one step of the worker: given a URL (with its method,
//! headers and body) and the account's [`HostPolicy`], stream the response
//! into a new spool file while computing its sha256, and hand back an
//! [`archiver_core::StagedFile`] whose size is checked against
//! `Content-Length` and the configured cap. It enforces the SSRF guard on the
//! first URL and on every redirect hop (host allowlist, then the addresses
//! actually connected to, via a guarding DNS resolver), timeouts between
//! bytes, and never applies compression. Every failure is one
//! [`FetchError`] variant that classifies itself for the queue.
//!
//! When the caller knows the file's sha256 in advance (the provider vouched
//! for it), [`Fetcher::download_through`] streams the body into the
//! caller's [`archiver_core::ByteSink`] instead, under the same guards and
//! limits, so that the store can receive it as it arrives (stream-through).
//!
//! It must not know about providers (how a reference becomes a URL), the
//! queue (leases: it only bumps a progress counter), or storage (what happens
//! to the spool file afterwards: the holder of the `StagedFile` owns and
//! removes it). URLs shown in errors and logs go through [`redact_url`].
//!
//! No leftovers: a spool file is removed on every error and when a download
//! is dropped half-way; each process writes in its own locked subdirectory
//! of `spool_dir`, and [`Fetcher::new`] sweeps the subdirectories of dead
//! processes (never a live replica's; see `spool.rs` for why a lock).
//!
//! Main types: [`Fetcher`], [`FetchConfig`], [`DownloadRequest`],
//! [`HostPolicy`], [`FetchError`].

mod base64_json;
mod config;
mod error;
mod fetcher;
mod guard;
mod policy;
mod redact;
mod request;
mod spool;

pub use config::FetchConfig;
pub use error::FetchError;
pub use fetcher::{Fetcher, ThroughError};
pub use policy::HostPolicy;
pub use redact::redact_url;
pub use request::{Answer, DownloadRequest};
