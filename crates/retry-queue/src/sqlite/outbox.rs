//! The outbox on the database thread (`crate::outbox` has the schema and
//! the rules): routes, claims, outcomes, listing and admin resends.

use std::collections::BTreeMap;
use std::time::Duration;

use archiver_core::ErrorClass;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::thread::{Store, StoreResult};
use crate::backend::millis;
use crate::outbox::{
    Claimed, DELIVERY_COLUMNS, DELIVERY_EXPIRED, Delivery, DeliveryFilter, DeliveryRow,
    DeliveryState, MAX_CLAIM_BATCH, Retried, Route, TARGET_REMOVED, distinct_routes, route_account,
};
use crate::retry::{self, Stored};
use crate::{Disposition, QueueError};

fn read_delivery(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: row.get(0)?,
        target: row.get(1)?,
        job_id: row.get(2)?,
        event: row.get(3)?,
        state: row.get(4)?,
        attempts: row.get(5)?,
        next_attempt_at: row.get(6)?,
        deadline: row.get(7)?,
        last_error: row.get(8)?,
        job_error: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

fn deliveries(rows: Vec<DeliveryRow>) -> StoreResult<Vec<Delivery>> {
    Ok(rows
        .into_iter()
        .map(DeliveryRow::into_delivery)
        .collect::<Result<_, QueueError>>()?)
}

impl Store {
    pub(super) fn set_routes(&mut self, routes: &[Route]) -> StoreResult<u64> {
        let routes = &distinct_routes(routes);
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM notify_routes", [])?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO notify_routes (target, event, account, max_age_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO UPDATE SET max_age_ms = excluded.max_age_ms",
            )?;
            for route in routes {
                insert.execute(params![
                    route.target,
                    route.event.as_str(),
                    route_account(route),
                    millis(route.max_age)
                ])?;
            }
        }
        let removed = tx.execute(
            "UPDATE deliveries SET state = 'dead', last_error = ?1, updated_at = ?2
             WHERE state = 'pending' AND target NOT IN (SELECT target FROM notify_routes)",
            params![TARGET_REMOVED, now],
        )?;
        tx.commit()?;
        Ok(u64::try_from(removed).unwrap_or_default())
    }

    pub(super) fn claim_deliveries(
        &mut self,
        target: &str,
        max: usize,
        hold: Duration,
    ) -> StoreResult<Claimed> {
        let now = self.now();
        let until = now.saturating_add(millis(hold));
        let limit = i64::try_from(max.min(MAX_CLAIM_BATCH)).unwrap_or(1);
        let batch = i64::try_from(MAX_CLAIM_BATCH).unwrap_or(1);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let expired = tx
            .prepare_cached(&format!(
                "UPDATE deliveries SET state = 'dead',
                    last_error = ?3 || COALESCE('; last error: ' || last_error, ''), updated_at = ?2
                 WHERE id IN (SELECT id FROM deliveries
                              WHERE state = 'pending' AND target = ?1 AND next_attempt_at <= ?2
                                AND deadline < ?2
                              LIMIT ?4)
                 RETURNING {DELIVERY_COLUMNS}"
            ))?
            .query_map(params![target, now, DELIVERY_EXPIRED, batch], read_delivery)?
            .collect::<Result<Vec<_>, _>>()?;
        let claimed = tx
            .prepare_cached(&format!(
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?3, updated_at = ?2
                 WHERE id IN (SELECT id FROM deliveries
                              WHERE state = 'pending' AND target = ?1 AND next_attempt_at <= ?2
                              ORDER BY next_attempt_at LIMIT ?4)
                 RETURNING {DELIVERY_COLUMNS}"
            ))?
            .query_map(params![target, now, until, limit], read_delivery)?
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        let mut deliveries = deliveries(claimed)?;
        deliveries.sort_by_key(|d| d.created_at);
        Ok(Claimed {
            deliveries,
            expired: self::deliveries(expired)?,
        })
    }

    pub(super) fn delivered(&mut self, claim: &Delivery) -> StoreResult<()> {
        let now = self.now();
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE deliveries SET state = 'delivered', updated_at = ?3
                 WHERE id = ?1 AND state = 'pending' AND attempts = ?2",
            )?
            .execute(params![claim.id, claim.attempts, now])?;
        if changed == 0 {
            return Err(claim.claim_lost().into());
        }
        Ok(())
    }

    pub(super) fn delivery_failed(
        &mut self,
        claim: &Delivery,
        class: ErrorClass,
        error: &str,
    ) -> StoreResult<Disposition> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored = tx
            .prepare_cached(
                "SELECT deadline, backoff_interval_ms FROM deliveries
                 WHERE id = ?1 AND state = 'pending' AND attempts = ?2",
            )?
            .query_row(params![claim.id, claim.attempts], |row| {
                Ok(Stored {
                    deadline: row.get(0)?,
                    backoff_interval_ms: row.get(1)?,
                })
            })
            .optional()?
            .ok_or_else(|| claim.claim_lost())?;
        let decision = retry::decide(&self.policy, class, error, now, stored);
        let (state, next, last_error) = match &decision.disposition {
            Disposition::RetryAt(at) => ("pending", *at, error),
            Disposition::Dead { reason } => ("dead", now, reason.as_str()),
        };
        tx.prepare_cached(
            "UPDATE deliveries SET state = ?2, next_attempt_at = ?3, backoff_interval_ms = ?4,
                last_error = ?5, updated_at = ?6
             WHERE id = ?1",
        )?
        .execute(params![
            claim.id,
            state,
            next,
            decision.backoff_interval_ms,
            last_error,
            now
        ])?;
        tx.commit()?;
        Ok(decision.disposition)
    }

    pub(super) fn list_deliveries(
        &mut self,
        filter: &DeliveryFilter,
    ) -> StoreResult<Vec<Delivery>> {
        let limit = i64::try_from(filter.effective_limit()).unwrap_or(i64::MAX);
        let rows = self
            .conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR target = ?2)
                   AND (?3 IS NULL OR job_id = ?3)
                 ORDER BY updated_at DESC, id LIMIT ?4"
            ))?
            .query_map(
                params![
                    filter.state.map(|s| s.as_str()),
                    filter.target,
                    filter.job_id,
                    limit
                ],
                read_delivery,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        deliveries(rows)
    }

    pub(super) fn retry_delivery(&mut self, id: &str) -> StoreResult<Retried> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx
            .prepare_cached(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2,
                    deadline = ?2 + max_age_ms, backoff_interval_ms = NULL, updated_at = ?2
                 WHERE id = ?1 AND state = 'dead'",
            )?
            .execute(params![id, now])?;
        let retried = if changed > 0 {
            Retried::Requeued
        } else {
            let state: Option<String> = tx
                .prepare_cached("SELECT state FROM deliveries WHERE id = ?1")?
                .query_row(params![id], |row| row.get(0))
                .optional()?;
            match state.as_deref().map(DeliveryState::parse) {
                None => Retried::Unknown,
                Some(Some(state)) => Retried::NotDead(state),
                Some(None) => {
                    return Err(QueueError::Corrupt(format!(
                        "delivery {id}: unknown state {state:?}"
                    ))
                    .into());
                }
            }
        };
        tx.commit()?;
        Ok(retried)
    }

    pub(super) fn pending_deliveries(&mut self) -> StoreResult<BTreeMap<String, u64>> {
        let counts = self
            .conn
            .prepare_cached(
                "SELECT target, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY target",
            )?
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?
            .map(|row| row.map(|(target, n)| (target, u64::try_from(n).unwrap_or_default())))
            .collect::<Result<_, _>>()?;
        Ok(counts)
    }
}
