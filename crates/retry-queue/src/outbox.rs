//! The outbox of events to the user's app (PRODUCT.md section 11).
//!
//! A delivery is committed by the database itself, in the transaction that
//! moves a job to `done` or `dead`: a trigger on the jobs table inserts one
//! row per matching [`Route`] (target, event, account). So an event is never
//! lost (the job's transition and its deliveries commit together, or
//! neither does) and never sent early (no transition, no row), whichever
//! code path made the transition: [`JobQueue::complete`](crate::JobQueue::complete),
//! a dead-lettering [`JobQueue::fail`](crate::JobQueue::fail), or a
//! [`JobQueue::lease`](crate::JobQueue::lease) that found the job expired.
//!
//! The routes are the `[[notify]]` config as rows ([`Outbox::set_routes`],
//! replaced at every start). A sender claims due deliveries of one target
//! ([`Outbox::claim_deliveries`]), which hides them for a while (a sender
//! that crashes mid-send leaves them to be claimed again: at least once),
//! and reports each outcome; a failure is decided by the jobs' own retry
//! rule (`retry::decide`) with `created_at + max_age` as the
//! deadline. A job dead-lettered again after a retry re-arms its existing
//! `media.dead` delivery: same id (a consumer that already saw it can drop
//! the repeat), the new transition's time and reason, and one more attempt
//! counted, so that a send of the old event still in flight cannot mark
//! the new one delivered.
//!
//! # Schema (SQLite version 5, PostgreSQL migration 4)
//!
//! ```sql
//! CREATE TABLE notify_routes (
//!     target     TEXT NOT NULL,     -- [[notify]] name
//!     event      TEXT NOT NULL,     -- media.archived | media.dead
//!     account    TEXT NOT NULL,     -- an account name, or '*' for every account
//!     max_age_ms INTEGER NOT NULL,  -- a delivery's deadline is created_at + this
//!     PRIMARY KEY (target, event, account)
//! );
//! CREATE TABLE deliveries (
//!     id                  TEXT PRIMARY KEY,  -- "{target}:{job id}:{event}", the webhook-id
//!     target              TEXT NOT NULL,
//!     job_id              TEXT NOT NULL,
//!     event               TEXT NOT NULL,
//!     state               TEXT NOT NULL,     -- pending | delivered | dead
//!     attempts            INTEGER NOT NULL DEFAULT 0,  -- claims taken; the claim's fence
//!     next_attempt_at     INTEGER NOT NULL,  -- due time; a claim pushes it past the send
//!     backoff_interval_ms INTEGER,
//!     deadline            INTEGER NOT NULL,  -- created_at + max_age_ms, or an admin retry + max_age_ms
//!     max_age_ms          INTEGER NOT NULL,  -- the route's, as of the transition
//!     last_error          TEXT,              -- latest failed send, or the dead reason
//!     job_error           TEXT,              -- the job's last_error at its transition
//!     created_at          INTEGER NOT NULL,
//!     updated_at          INTEGER NOT NULL
//! );
//! CREATE INDEX deliveries_due     ON deliveries (target, next_attempt_at) WHERE state = 'pending';
//! CREATE INDEX deliveries_updated ON deliveries (updated_at);
//! CREATE INDEX deliveries_job     ON deliveries (job_id);
//! -- and the trigger, AFTER UPDATE OF state ON jobs, for a change into
//! -- done or dead: INSERT INTO deliveries SELECT ... FROM notify_routes
//! -- (times from the job's updated_at, the queue's clock).
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use archiver_core::{ErrorClass, UnixMillis};

use crate::{Disposition, QueueError};

/// What happened to a job that an app may be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotifyEvent {
    /// `media.archived`: the job is `done`, its manifest written.
    Archived,
    /// `media.dead`: the job is `dead`.
    Dead,
}

impl NotifyEvent {
    /// Both events.
    pub const ALL: [NotifyEvent; 2] = [NotifyEvent::Archived, NotifyEvent::Dead];

    /// The event's type name, as in the payload and the webhook-id.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Archived => "media.archived",
            NotifyEvent::Dead => "media.dead",
        }
    }

    /// The event named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl std::fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which job transitions make a delivery to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The target's name (`[[notify]] name`).
    pub target: String,
    /// The event.
    pub event: NotifyEvent,
    /// The account whose jobs it covers; `None`: every account.
    pub account: Option<String>,
    /// How long a delivery is retried before it is dead.
    pub max_age: Duration,
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting to be sent, or being sent (claimed), or between retries.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up: `max_age` passed, a permanent failure (nothing left to
    /// send), or its target was removed from the config.
    Dead,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 3] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Dead,
    ];

    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One event for one target, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// `{target}:{job id}:{event}`: the `webhook-id`, stable across retries.
    pub id: String,
    /// The target's name.
    pub target: String,
    /// The job the event is about.
    pub job_id: String,
    /// The event.
    pub event: NotifyEvent,
    /// Where the delivery is.
    pub state: DeliveryState,
    /// Sends started (claims taken); a claim's fence.
    pub attempts: u32,
    /// When it becomes due (again).
    pub next_attempt_at: UnixMillis,
    /// No retry is scheduled after this (`created_at + max_age`).
    pub deadline: UnixMillis,
    /// The latest failed send, or why it is dead.
    pub last_error: Option<String>,
    /// The job's `last_error` when it made the transition (for
    /// `media.dead`, the dead-letter reason).
    pub job_error: Option<String>,
    /// When the job's transition committed it.
    pub created_at: UnixMillis,
    /// The latest change.
    pub updated_at: UnixMillis,
}

/// Which deliveries [`Outbox::list_deliveries`] returns.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only deliveries in this state.
    pub state: Option<DeliveryState>,
    /// Only deliveries to this target.
    pub target: Option<String>,
    /// Only deliveries about this job.
    pub job_id: Option<String>,
    /// At most this many; 0 and values above the cap as for jobs
    /// ([`crate::JobFilter::effective_limit`]).
    pub limit: usize,
}

impl DeliveryFilter {
    /// The limit to apply.
    pub fn effective_limit(&self) -> usize {
        crate::JobFilter {
            limit: self.limit,
            ..Default::default()
        }
        .effective_limit()
    }
}

/// What one [`Outbox::claim_deliveries`] call did.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The deliveries to send now, oldest first.
    pub deliveries: Vec<Delivery>,
    /// Due deliveries found past their deadline and made dead by this call
    /// (reason [`DELIVERY_EXPIRED`]), for the caller to log and count.
    pub expired: Vec<Delivery>,
}

/// What [`Outbox::retry_delivery`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// The dead delivery is pending again, due now.
    Requeued,
    /// It is not dead: pending (it is sent when due) or delivered.
    NotDead(DeliveryState),
    /// No delivery has that id.
    Unknown,
}

/// The reason stored for a delivery claimed after its deadline (a sender
/// that kept crashing, or a daemon down for longer than `max_age`);
/// `; last error: ...` follows when a send had failed.
pub const DELIVERY_EXPIRED: &str = "expired: max_age passed before it could be delivered";

/// The outbox side of a queue backend (see the module docs).
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + std::fmt::Debug {
    /// Replaces every route (the `[[notify]]` config at start). Pending
    /// deliveries to a target no route names any more are made dead (no
    /// sender would ever claim them); returns how many.
    async fn set_routes(&self, routes: &[Route]) -> Result<u64, QueueError>;

    /// Takes up to `max` due pending deliveries of `target`, oldest due
    /// first, and hides them until `now + hold` (their next attempt if the
    /// sender never reports). Each claimed delivery's `attempts` counts this
    /// claim and fences its report. A due delivery past its deadline becomes
    /// dead ([`DELIVERY_EXPIRED`]) instead, reported in [`Claimed::expired`]
    /// by the call that made it so (at most [`MAX_CLAIM_BATCH`] a call).
    async fn claim_deliveries(
        &self,
        target: &str,
        max: usize,
        hold: Duration,
    ) -> Result<Claimed, QueueError>;

    /// The claimed delivery was answered 2xx: `delivered`. `LeaseLost` if
    /// it was claimed again since (its hold ran out), or is no longer
    /// pending.
    async fn delivered(&self, claim: &Delivery) -> Result<(), QueueError>;

    /// The claimed delivery's send failed: pending again after the backoff
    /// of [`crate::JobQueue::fail`], or dead once that falls after its
    /// deadline (or at once, for a permanent failure). `LeaseLost` as for
    /// [`Outbox::delivered`].
    async fn delivery_failed(
        &self,
        claim: &Delivery,
        class: ErrorClass,
        error: &str,
    ) -> Result<Disposition, QueueError>;

    /// Deliveries matching the filter, most recently updated first.
    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, QueueError>;

    /// Admin resend: a dead delivery is pending, due now, with a fresh
    /// `max_age` window and its backoff reset. A pending one is left alone
    /// (it may be being sent: resending it now would send it twice).
    async fn retry_delivery(&self, id: &str) -> Result<Retried, QueueError>;

    /// Pending deliveries per target (targets with none are absent).
    async fn pending_deliveries(&self) -> Result<BTreeMap<String, u64>, QueueError>;
}

/// Most deliveries claimed, or expired, by one claim call.
pub const MAX_CLAIM_BATCH: usize = 1000;

/// Columns read into a [`Delivery`], in this order (both backends).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const DELIVERY_COLUMNS: &str = "id, target, job_id, event, state, attempts, \
     next_attempt_at, deadline, last_error, job_error, created_at, updated_at";

/// A row of [`DELIVERY_COLUMNS`] as the drivers read it, before its
/// names are checked.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "fjall"))]
pub(crate) struct DeliveryRow {
    pub(crate) id: String,
    pub(crate) target: String,
    pub(crate) job_id: String,
    pub(crate) event: String,
    pub(crate) state: String,
    pub(crate) attempts: i64,
    pub(crate) next_attempt_at: i64,
    pub(crate) deadline: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) job_error: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "fjall"))]
impl DeliveryRow {
    /// The delivery, or `Corrupt` naming a stored event or state this
    /// build does not know.
    pub(crate) fn into_delivery(self) -> Result<Delivery, QueueError> {
        let corrupt = |what: &str, value: &str| {
            QueueError::Corrupt(format!("delivery {}: unknown {what} {value:?}", self.id))
        };
        Ok(Delivery {
            event: NotifyEvent::parse(&self.event).ok_or_else(|| corrupt("event", &self.event))?,
            state: DeliveryState::parse(&self.state)
                .ok_or_else(|| corrupt("state", &self.state))?,
            attempts: u32::try_from(self.attempts).unwrap_or_default(),
            id: self.id,
            target: self.target,
            job_id: self.job_id,
            next_attempt_at: self.next_attempt_at,
            deadline: self.deadline,
            last_error: self.last_error,
            job_error: self.job_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The reason stored for a pending delivery whose target was removed
/// from the config.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "fjall"))]
pub(crate) const TARGET_REMOVED: &str = "its [[notify]] target is no longer configured";

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "fjall"))]
impl Delivery {
    /// The error of a report whose claim no longer holds the delivery.
    pub(crate) fn claim_lost(&self) -> QueueError {
        QueueError::LeaseLost {
            job_id: self.id.clone(),
        }
    }
}

/// The routes as stored: a target's route of an event for every account
/// makes its routes of that event for single accounts redundant, and they
/// are dropped (as are exact repeats), so that no job ever matches two
/// routes of one target and event: one transition, one delivery.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "fjall"))]
pub(crate) fn distinct_routes(routes: &[Route]) -> Vec<Route> {
    let mut kept: Vec<Route> = Vec::with_capacity(routes.len());
    for route in routes {
        let covered = routes.iter().any(|other| {
            other.target == route.target && other.event == route.event && other.account.is_none()
        }) && route.account.is_some();
        let repeated = kept.iter().any(|k| {
            k.target == route.target && k.event == route.event && k.account == route.account
        });
        if !covered && !repeated {
            kept.push(route.clone());
        }
    }
    kept
}

/// The stored account of a route (`'*'`: every account; account names
/// never contain it).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn route_account(route: &Route) -> &str {
    route.account.as_deref().unwrap_or("*")
}
