//! Operator commands (PRODUCT.md section 7): `jobs list|show|retry|stats`
//! and `media find` talk to a running daemon's admin API; `check-config`
//! summarises a config, and `verify` (a scrub of the archive) and
//! `backfill` (references into the queue) work on the store and the queue
//! named in it.

pub(crate) mod backfill;
pub(crate) mod check_config;
pub(crate) mod jobs;
pub(crate) mod media;
pub(crate) mod verify;
