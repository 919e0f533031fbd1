//! The outbox on PostgreSQL (`crate::outbox` has the schema and the rules),
//! statement for statement as on SQLite; claims take rows `FOR UPDATE SKIP
//! LOCKED`, so replicas sending to one target take disjoint deliveries.

use std::collections::BTreeMap;
use std::time::Duration;

use archiver_core::ErrorClass;
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::PgQueue;
use super::row::db;
use crate::backend::millis;
use crate::outbox::{
    Claimed, DELIVERY_COLUMNS, DELIVERY_EXPIRED, Delivery, DeliveryFilter, DeliveryRow,
    DeliveryState, MAX_CLAIM_BATCH, Outbox, Retried, Route, TARGET_REMOVED, distinct_routes,
    route_account,
};
use crate::retry::{self, Stored};
use crate::{Disposition, QueueError};

/// The lock that serialises replicas replacing the routes at start.
const ROUTES_LOCK: i64 = 0x6d61_6e6f_7469_6679; // "manotify"

fn read_delivery(row: &PgRow) -> Result<Delivery, QueueError> {
    let attempts: i32 = row.try_get(5).map_err(db)?;
    DeliveryRow {
        id: row.try_get(0).map_err(db)?,
        target: row.try_get(1).map_err(db)?,
        job_id: row.try_get(2).map_err(db)?,
        event: row.try_get(3).map_err(db)?,
        state: row.try_get(4).map_err(db)?,
        attempts: attempts.into(),
        next_attempt_at: row.try_get(6).map_err(db)?,
        deadline: row.try_get(7).map_err(db)?,
        last_error: row.try_get(8).map_err(db)?,
        job_error: row.try_get(9).map_err(db)?,
        created_at: row.try_get(10).map_err(db)?,
        updated_at: row.try_get(11).map_err(db)?,
    }
    .into_delivery()
}

/// A claim's fence as stored (attempts fit an INTEGER).
fn fence(claim: &Delivery) -> Result<i32, QueueError> {
    i32::try_from(claim.attempts).map_err(|_| claim.claim_lost())
}

#[async_trait::async_trait]
impl Outbox for PgQueue {
    async fn set_routes(&self, routes: &[Route]) -> Result<u64, QueueError> {
        let routes = &distinct_routes(routes);
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ROUTES_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM notify_routes")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for route in routes {
            sqlx::query(
                "INSERT INTO notify_routes (target, event, account, max_age_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (target, event, account) DO UPDATE SET max_age_ms = EXCLUDED.max_age_ms",
            )
            .bind(&route.target)
            .bind(route.event.as_str())
            .bind(route_account(route))
            .bind(millis(route.max_age))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let removed = sqlx::query(
            "UPDATE deliveries SET state = 'dead', last_error = $1, updated_at = $2
             WHERE state = 'pending' AND target NOT IN (SELECT target FROM notify_routes)",
        )
        .bind(TARGET_REMOVED)
        .bind(self.now())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(removed)
    }

    async fn claim_deliveries(
        &self,
        target: &str,
        max: usize,
        hold: Duration,
    ) -> Result<Claimed, QueueError> {
        if max == 0 {
            return Ok(Claimed::default());
        }
        let now = self.now();
        let until = now.saturating_add(millis(hold));
        let limit = i64::try_from(max.min(MAX_CLAIM_BATCH)).unwrap_or(1);
        let batch = i64::try_from(MAX_CLAIM_BATCH).unwrap_or(1);
        let mut tx = self.pool.begin().await.map_err(db)?;
        let expired = sqlx::query(&format!(
            "UPDATE deliveries d SET state = 'dead',
                last_error = $3::TEXT || COALESCE('; last error: ' || d.last_error, ''),
                updated_at = $2
             FROM (SELECT id FROM deliveries
                   WHERE state = 'pending' AND target = $1 AND next_attempt_at <= $2
                     AND deadline < $2
                   LIMIT $4
                   FOR UPDATE SKIP LOCKED) due
             WHERE d.id = due.id
             RETURNING {}",
            qualified("d")
        ))
        .bind(target)
        .bind(now)
        .bind(DELIVERY_EXPIRED)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let rows = sqlx::query(&format!(
            "UPDATE deliveries d SET attempts = d.attempts + 1, next_attempt_at = $3, updated_at = $2
             FROM (SELECT id FROM deliveries
                   WHERE state = 'pending' AND target = $1 AND next_attempt_at <= $2
                   ORDER BY next_attempt_at LIMIT $4
                   FOR UPDATE SKIP LOCKED) due
             WHERE d.id = due.id
             RETURNING {}",
            qualified("d")
        ))
        .bind(target)
        .bind(now)
        .bind(until)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut deliveries = rows
            .iter()
            .map(read_delivery)
            .collect::<Result<Vec<_>, _>>()?;
        deliveries.sort_by_key(|d| d.created_at);
        Ok(Claimed {
            deliveries,
            expired: expired
                .iter()
                .map(read_delivery)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    async fn delivered(&self, claim: &Delivery) -> Result<(), QueueError> {
        let changed = sqlx::query(
            "UPDATE deliveries SET state = 'delivered', updated_at = $3
             WHERE id = $1 AND state = 'pending' AND attempts = $2",
        )
        .bind(&claim.id)
        .bind(fence(claim)?)
        .bind(self.now())
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if changed == 0 {
            return Err(claim.claim_lost());
        }
        Ok(())
    }

    async fn delivery_failed(
        &self,
        claim: &Delivery,
        class: ErrorClass,
        error: &str,
    ) -> Result<Disposition, QueueError> {
        let now = self.now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let found = sqlx::query(
            "SELECT deadline, backoff_interval_ms FROM deliveries
             WHERE id = $1 AND state = 'pending' AND attempts = $2
             FOR UPDATE",
        )
        .bind(&claim.id)
        .bind(fence(claim)?)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| claim.claim_lost())?;
        let stored = Stored {
            deadline: found.try_get(0).map_err(db)?,
            backoff_interval_ms: found.try_get(1).map_err(db)?,
        };
        let decision = retry::decide(&self.policy, class, error, now, stored);
        let (state, next, last_error) = match &decision.disposition {
            Disposition::RetryAt(at) => ("pending", *at, error),
            Disposition::Dead { reason } => ("dead", now, reason.as_str()),
        };
        sqlx::query(
            "UPDATE deliveries SET state = $2, next_attempt_at = $3, backoff_interval_ms = $4,
                last_error = $5, updated_at = $6
             WHERE id = $1",
        )
        .bind(&claim.id)
        .bind(state)
        .bind(next)
        .bind(decision.backoff_interval_ms)
        .bind(last_error)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(decision.disposition)
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, QueueError> {
        let limit = i64::try_from(filter.effective_limit()).unwrap_or(i64::MAX);
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE ($1::TEXT IS NULL OR state = $1) AND ($2::TEXT IS NULL OR target = $2)
               AND ($3::TEXT IS NULL OR job_id = $3)
             ORDER BY updated_at DESC, id LIMIT $4"
        ))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(&filter.target)
        .bind(&filter.job_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(read_delivery).collect()
    }

    async fn retry_delivery(&self, id: &str) -> Result<Retried, QueueError> {
        let changed = sqlx::query(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = $2,
                deadline = $2 + max_age_ms, backoff_interval_ms = NULL, updated_at = $2
             WHERE id = $1 AND state = 'dead'",
        )
        .bind(id)
        .bind(self.now())
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if changed > 0 {
            return Ok(Retried::Requeued);
        }
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        match state {
            None => Ok(Retried::Unknown),
            Some(state) => DeliveryState::parse(&state)
                .map(Retried::NotDead)
                .ok_or_else(|| {
                    QueueError::Corrupt(format!("delivery {id}: unknown state {state:?}"))
                }),
        }
    }

    async fn pending_deliveries(&self) -> Result<BTreeMap<String, u64>, QueueError> {
        let rows = sqlx::query(
            "SELECT target, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY target",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let n: i64 = row.try_get(1).map_err(db)?;
                Ok((
                    row.try_get(0).map_err(db)?,
                    u64::try_from(n).unwrap_or_default(),
                ))
            })
            .collect()
    }
}

/// [`DELIVERY_COLUMNS`], each prefixed with `alias.` (a claim's `UPDATE ...
/// FROM` names two relations with these columns).
fn qualified(alias: &str) -> String {
    DELIVERY_COLUMNS
        .split(", ")
        .map(|column| format!("{alias}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}
