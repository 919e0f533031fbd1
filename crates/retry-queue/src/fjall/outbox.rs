//! The outbox on the fjall thread (`crate::outbox` has the rules; the
//! deliveries themselves are written by [`Store::put_job`]'s trigger).

use std::collections::BTreeMap;
use std::time::Duration;

use archiver_core::ErrorClass;

use super::keys::{Key, id_after, time_at};
use super::store::{
    DeliveryKeys, PENDING_COUNTERS, Store, StoreResult, StoredDelivery, StoredRoute, Tx,
    pending_counter,
};
use crate::backend::{millis, with_last_error};
use crate::outbox::{
    Claimed, DELIVERY_EXPIRED, Delivery, DeliveryFilter, DeliveryState, MAX_CLAIM_BATCH, Retried,
    Route, TARGET_REMOVED, distinct_routes,
};
use crate::retry::{self, Stored};
use crate::{Disposition, QueueError};

impl Store {
    pub(super) fn set_routes(&mut self, routes: &[Route]) -> StoreResult<u64> {
        let now = self.now();
        let mut tx = self.tx();
        let routes: Vec<StoredRoute> = distinct_routes(routes)
            .iter()
            .map(StoredRoute::of)
            .collect();
        let mut removed = 0;
        for (target, _) in self.pending_deliveries()? {
            if routes.iter().any(|r| r.target == target) {
                continue;
            }
            let prefix = Key::new().text(&target).prefix();
            for entry in self.ks.deliveries_due.prefix(&prefix) {
                let key = entry.key()?;
                let old = self.indexed_delivery(&key, prefix.len() + 8)?;
                let mut dead = old.clone();
                dead.state = DeliveryState::Dead.as_str().to_owned();
                dead.last_error = Some(TARGET_REMOVED.to_owned());
                dead.updated_at = now;
                self.put_delivery(&mut tx, Some(&old), &dead);
                removed += 1;
            }
        }
        self.save_routes(&mut tx, &routes);
        self.commit(tx)?;
        self.routes = routes;
        Ok(removed)
    }

    pub(super) fn claim_deliveries(
        &mut self,
        target: &str,
        max: usize,
        hold: Duration,
    ) -> StoreResult<Claimed> {
        let now = self.now();
        let until = now.saturating_add(millis(hold));
        let limit = max.min(MAX_CLAIM_BATCH);
        let prefix = Key::new().text(target).prefix();
        let end = Key::new().text(target).time(now.saturating_add(1)).prefix();
        let mut tx = self.tx();
        let mut claimed = Claimed::default();
        for entry in self.ks.deliveries_due.range(prefix.clone()..end) {
            if claimed.deliveries.len() >= limit && claimed.expired.len() >= MAX_CLAIM_BATCH {
                break;
            }
            let key = entry.key()?;
            let old = self.indexed_delivery(&key, prefix.len() + 8)?;
            let mut new = old.clone();
            new.updated_at = now;
            if old.deadline < now {
                if claimed.expired.len() >= MAX_CLAIM_BATCH {
                    continue;
                }
                new.state = DeliveryState::Dead.as_str().to_owned();
                new.last_error = Some(with_last_error(DELIVERY_EXPIRED, old.last_error.as_deref()));
                claimed.expired.push(new.delivery()?);
            } else {
                if claimed.deliveries.len() >= limit {
                    continue;
                }
                new.attempts += 1;
                new.next_attempt_at = until;
                claimed.deliveries.push(new.delivery()?);
            }
            self.put_delivery(&mut tx, Some(&old), &new);
        }
        self.commit(tx)?;
        claimed.deliveries.sort_by_key(|d| d.created_at);
        Ok(claimed)
    }

    /// The delivery `claim` holds: pending, and not claimed again since.
    fn claimed(&self, claim: &Delivery) -> StoreResult<StoredDelivery> {
        match self.delivery(&claim.id)? {
            Some(d) if d.is_pending() && d.attempts == claim.attempts => Ok(d),
            _ => Err(claim.claim_lost()),
        }
    }

    pub(super) fn delivered(&mut self, claim: &Delivery) -> StoreResult<()> {
        let now = self.now();
        let old = self.claimed(claim)?;
        let mut new = old.clone();
        new.state = DeliveryState::Delivered.as_str().to_owned();
        new.updated_at = now;
        let mut tx = self.tx();
        self.put_delivery(&mut tx, Some(&old), &new);
        self.commit(tx)
    }

    pub(super) fn delivery_failed(
        &mut self,
        claim: &Delivery,
        class: ErrorClass,
        error: &str,
    ) -> StoreResult<Disposition> {
        let now = self.now();
        let old = self.claimed(claim)?;
        let stored = Stored {
            deadline: old.deadline,
            backoff_interval_ms: old.backoff_interval_ms,
        };
        let decision = retry::decide(&self.policy, class, error, now, stored);
        let mut new = old.clone();
        new.backoff_interval_ms = decision.backoff_interval_ms;
        new.updated_at = now;
        match &decision.disposition {
            Disposition::RetryAt(at) => {
                new.next_attempt_at = *at;
                new.last_error = Some(error.to_owned());
            }
            Disposition::Dead { reason } => {
                new.state = DeliveryState::Dead.as_str().to_owned();
                new.next_attempt_at = now;
                new.last_error = Some(reason.clone());
            }
        }
        let mut tx = self.tx();
        self.put_delivery(&mut tx, Some(&old), &new);
        self.commit(tx)?;
        Ok(decision.disposition)
    }

    pub(super) fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let limit = filter.effective_limit();
        let matches = |d: &Delivery| {
            filter.state.is_none_or(|s| s == d.state)
                && filter.target.as_ref().is_none_or(|t| *t == d.target)
                && filter.job_id.as_ref().is_none_or(|j| *j == d.job_id)
        };
        let mut found = Vec::new();
        if let Some(job_id) = &filter.job_id {
            for delivery in self.deliveries_of(job_id)? {
                let delivery = delivery.delivery()?;
                if matches(&delivery) {
                    found.push(delivery);
                }
            }
            found.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
            found.truncate(limit);
            return Ok(found);
        }
        // Newest first; within one `updated_at` (a claim stamps many at
        // once) by id, as the SQL backends order them: the page is filled,
        // then completed with the rest of its last instant, then sorted.
        for entry in self.ks.deliveries_updated.iter().rev() {
            let key = entry.key()?;
            if found.len() >= limit {
                let last = found.last().map(|d: &Delivery| d.updated_at);
                if time_at(&key, 0) != last {
                    break;
                }
            }
            let delivery = self.indexed_delivery(&key, 8)?.delivery()?;
            if matches(&delivery) {
                found.push(delivery);
            }
        }
        found.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
        found.truncate(limit);
        Ok(found)
    }

    pub(super) fn retry_delivery(&mut self, id: &str) -> StoreResult<Retried> {
        let now = self.now();
        let Some(old) = self.delivery(id)? else {
            return Ok(Retried::Unknown);
        };
        let state = DeliveryState::parse(&old.state).ok_or_else(|| {
            QueueError::Corrupt(format!("delivery {id}: unknown state {:?}", old.state))
        })?;
        if state != DeliveryState::Dead {
            return Ok(Retried::NotDead(state));
        }
        let mut new = old.clone();
        new.state = DeliveryState::Pending.as_str().to_owned();
        new.next_attempt_at = now;
        new.deadline = now.saturating_add(old.max_age_ms);
        new.backoff_interval_ms = None;
        new.updated_at = now;
        let mut tx = self.tx();
        self.put_delivery(&mut tx, Some(&old), &new);
        self.commit(tx)?;
        Ok(Retried::Requeued)
    }

    pub(super) fn pending_deliveries(&self) -> StoreResult<BTreeMap<String, u64>> {
        Ok(self
            .counters_with(PENDING_COUNTERS)
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .filter_map(|(target, n)| {
                let target = std::str::from_utf8(target).ok()?.to_owned();
                Some((target, n.unsigned_abs()))
            })
            .collect())
    }

    /// Every delivery about a job.
    pub(super) fn deliveries_of(&self, job_id: &str) -> StoreResult<Vec<StoredDelivery>> {
        let prefix = Key::new().text(job_id).prefix();
        let mut found = Vec::new();
        for entry in self.ks.deliveries_by_job.prefix(&prefix) {
            let key = entry.key()?;
            found.push(self.indexed_delivery(&key, prefix.len())?);
        }
        Ok(found)
    }

    /// Removes a delivery and its index entries.
    pub(super) fn delete_delivery(&self, tx: &mut Tx, delivery: &StoredDelivery) {
        let keys = DeliveryKeys::of(delivery);
        if let Some(due) = keys.due {
            tx.remove(&self.ks.deliveries_due, due);
            tx.count(pending_counter(&delivery.target), -1);
        }
        tx.remove(&self.ks.deliveries_updated, keys.updated);
        tx.remove(&self.ks.deliveries_by_job, keys.by_job);
        tx.remove(&self.ks.deliveries, delivery.id.as_bytes().to_vec());
    }

    /// The delivery an index key names after `skip` bytes.
    fn indexed_delivery(&self, key: &[u8], skip: usize) -> StoreResult<StoredDelivery> {
        let id = id_after(key, skip)
            .ok_or_else(|| QueueError::Corrupt("a delivery index key is malformed".to_owned()))?;
        self.delivery(id)?
            .ok_or_else(|| QueueError::Corrupt(format!("indexed delivery {id} is missing")))
    }
}
