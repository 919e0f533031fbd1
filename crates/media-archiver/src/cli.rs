//! Operator commands (PRODUCT.md section 7): `jobs list|show|retry|stats`
//! and `media find` talk to a running daemon's admin API; `verify` (a scrub
//! of the archive) and `backfill` (references into the queue) work on the
//! store and the queue named in the config.

pub(crate) mod backfill;
pub(crate) mod jobs;
pub(crate) mod media;
pub(crate) mod verify;
