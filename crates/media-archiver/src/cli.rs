//! Operator commands that talk to a running daemon's admin API
//! (PRODUCT.md section 7): `jobs list|show|retry|stats`.

pub(crate) mod jobs;
