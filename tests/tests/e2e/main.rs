//! The end-to-end tests, one binary: the real daemon against the fake
//! providers of `test-support`, a real Garage (S3) and a real PostgreSQL,
//! through the harness in `tests/src/` (the `e2e` library). One module per
//! provider or concern:
//!
//! - `greenapi`, `cloudapi`, `onprem`, `codechat`, `evolution`, `nxcloud`,
//!   `waha`:
//!   each provider's webhooks, downloads, faults and archive;
//! - `queue_durability`: `kill -9` mid-stream, two replicas on PostgreSQL,
//!   a store outage: nothing acknowledged is lost;
//! - `rules`: per-account rules (what is filtered before enqueue, and
//!   `too-large`);
//! - `operations`: metrics and readiness; `admin_cli` and `operator_cli`:
//!   the operator commands; `openapi`: the admin API answers as
//!   `docs/openapi.json` says; `docs`: the user documentation's links and
//!   schemas.
//!
//! Tests that need Garage or PostgreSQL skip with a notice where they are
//! missing, and fail instead under `MEDIA_ARCHIVER_REQUIRE_S3=1` and
//! `MEDIA_ARCHIVER_REQUIRE_POSTGRES=1`.

mod admin_cli;
mod cloudapi;
mod codechat;
mod docs;
mod erasure;
mod evolution;
mod greenapi;
mod notify;
mod nxcloud;
mod onprem;
mod openapi;
mod operations;
mod operator_cli;
mod queue_durability;
mod rules;
mod waha;
