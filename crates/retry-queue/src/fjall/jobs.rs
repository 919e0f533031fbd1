//! A job's life on the fjall thread: enqueue, lease (with the timers that
//! come due moved into the ready set first), the calls made under a lease,
//! the admin reads and requeues, and the purge of old `done` jobs.

use std::collections::HashSet;
use std::ops::Bound;
use std::time::Duration;

use archiver_core::{ErrorClass, JobSpec, JobState, UnixMillis};

use super::keys::{Key, id_after, split, time_at};
use super::store::{JOB_COUNTERS, Job, Store, StoreResult, decode, state_tag};
use crate::backend::{
    EXPIRED_IN_QUEUE, MAX_LEASE_BATCH, imported_state, log_lapsed_lease, log_revived, millis,
    with_last_error,
};
use crate::retry::{self, Stored};
use crate::{
    Disposition, Enqueued, JobFilter, JobRecord, Lease, Leased, MigratedJob, QueueError, QueueStats,
};

/// Most timers moved into the ready set by one lease call; the rest move
/// on the next call.
const MAX_PROMOTE: usize = 10_000;
/// Most old `done` jobs deleted by one lease call.
const MAX_PURGE: usize = 1_000;
/// Most jobs requeued in one atomic batch by `retry_all`.
const RETRY_ALL_CHUNK: usize = 10_000;

/// What a lease call needs to prove it still holds the job.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) job_id: String,
    pub(super) token: u64,
}

impl Held {
    pub(super) fn of(lease: &Lease) -> Self {
        Self {
            job_id: lease.job.id.clone(),
            token: lease.token,
        }
    }

    pub(super) fn lost(&self) -> QueueError {
        QueueError::LeaseLost {
            job_id: self.job_id.clone(),
        }
    }
}

impl Store {
    /// Commits the jobs of every request of a group in one batch (group
    /// commit); one list of outcomes per request. A job repeated within the
    /// group is a duplicate of its first occurrence.
    pub(super) fn enqueue(
        &mut self,
        requests: Vec<Vec<JobSpec>>,
    ) -> StoreResult<Vec<Vec<Enqueued>>> {
        let now = self.now();
        let mut tx = self.tx();
        let mut seen = HashSet::new();
        let mut outcomes = Vec::with_capacity(requests.len());
        for specs in requests {
            let mut outcome = Vec::with_capacity(specs.len());
            for spec in specs {
                if !seen.insert(spec.id.clone()) {
                    outcome.push(Enqueued::Duplicate);
                    continue;
                }
                match self.job(&spec.id)? {
                    None => {
                        self.put_job(&mut tx, None, Job::new(spec, now), now)?;
                        outcome.push(Enqueued::New);
                    }
                    Some(old) => {
                        if old.state == JobState::Dead {
                            // A dedup entry never blocks the retry of a failed job.
                            let mut revived = old.clone();
                            revived.requeue(now);
                            revived.attempts = 0;
                            self.put_job(&mut tx, Some(&old), revived, now)?;
                            log_revived(&old.id, &old.account);
                        }
                        outcome.push(Enqueued::Duplicate);
                    }
                }
            }
            outcomes.push(outcome);
        }
        self.commit(tx)?;
        Ok(outcomes)
    }

    pub(super) fn lease(&mut self, max: usize, lease_for: Duration) -> StoreResult<Leased> {
        let now = self.now();
        self.purge_done(now)?;
        self.promote_due_timers(now)?;
        let expires_at = now.saturating_add(millis(lease_for));
        let limit = max.min(MAX_LEASE_BATCH);
        let mut tx = self.tx();
        let mut leased = Leased::default();
        // The live keys below the floor, then the keyspace from it: the
        // deletions of the jobs leased before are never read back.
        let (below, start) = self.ready_floor.start();
        let mut last = None;
        let from_floor = self
            .ks
            .ready
            .range(start.as_slice()..)
            .map(|entry| entry.key().map(|key| key.to_vec()));
        for key in below.map(Ok).chain(from_floor) {
            let key = key?;
            let (Some(deadline), Some(id)) = (time_at(&key, 0), id_after(&key, 16)) else {
                return Err(QueueError::Corrupt("a ready key is malformed".to_owned()));
            };
            if deadline >= now && leased.leases.len() >= limit {
                break;
            }
            if leased.expired.len() >= MAX_LEASE_BATCH {
                // Expired jobs come first in deadline order: handing out
                // what follows them would skip some; the next call goes on.
                break;
            }
            let Some(old) = self.job(id)? else {
                return Err(QueueError::Corrupt(format!("ready job {id} is missing")));
            };
            let mut job = old.clone();
            job.lease_expires_at = None;
            job.updated_at = now;
            if deadline < now {
                // The provider has forgotten the file: dead, and reported.
                job.state = JobState::Dead;
                job.last_error = Some(with_last_error(EXPIRED_IN_QUEUE, old.last_error.as_deref()));
                leased.expired.push(job.record());
            } else {
                if old.state == JobState::Leased {
                    log_lapsed_lease(&old.record());
                }
                job.state = JobState::Leased;
                job.attempts = job.attempts.saturating_add(1);
                job.woken = false;
                job.lease_token += 1;
                job.lease_expires_at = Some(expires_at);
                leased.leases.push(Lease {
                    job: job.record(),
                    token: job.lease_token,
                    expires_at,
                });
            }
            self.put_job(&mut tx, Some(&old), job, now)?;
            if key >= start {
                last = Some(key);
            }
        }
        if let Some(last) = last {
            self.ready_floor.taken_through(&last);
        }
        self.commit(tx)?;
        Ok(leased)
    }

    /// Moves the live jobs whose time has come (a backoff over, a park
    /// timed out, a lease lapsed) from `timers` into `ready`.
    fn promote_due_timers(&mut self, now: UnixMillis) -> StoreResult<()> {
        let mut tx = self.tx();
        let end = Key::new().time(now.saturating_add(1)).prefix();
        for entry in self.ks.timers.range(..end).take(MAX_PROMOTE) {
            let key = entry.key()?;
            let id = id_after(&key, 8)
                .ok_or_else(|| QueueError::Corrupt("a timer key is malformed".to_owned()))?;
            let Some(job) = self.job(id)? else {
                return Err(QueueError::Corrupt(format!("timed job {id} is missing")));
            };
            self.put_job(&mut tx, Some(&job), job.clone(), now)?;
        }
        self.commit(tx)
    }

    /// Deletes `done` jobs last changed more than the retention ago, with
    /// their finished deliveries; a job with a delivery still pending waits.
    fn purge_done(&mut self, now: UnixMillis) -> StoreResult<()> {
        let horizon = now.saturating_sub(millis(self.done_retention));
        let tag = state_tag(JobState::Done);
        let start = Key::new().tag(tag).prefix();
        let end = Key::new().tag(tag).time(horizon).prefix();
        let mut tx = self.tx();
        let mut purged = 0;
        // Bounded apart from the deletions, so that old jobs whose events
        // are still pending neither stall the purge nor make it unbounded.
        for entry in self.ks.by_state.range(start..end).take(4 * MAX_PURGE) {
            if purged >= MAX_PURGE {
                break;
            }
            let key = entry.key()?;
            let Some(id) = id_after(&key, 9) else {
                continue;
            };
            let Some(job) = self.job(id)? else { continue };
            let deliveries = self.deliveries_of(id)?;
            if deliveries.iter().any(|d| d.is_pending()) {
                continue;
            }
            for delivery in &deliveries {
                self.delete_delivery(&mut tx, delivery);
            }
            self.delete_job(&mut tx, &job);
            purged += 1;
        }
        self.commit(tx)
    }

    /// The job `held` leases, or `LeaseLost`.
    fn held(&self, held: &Held) -> StoreResult<Job> {
        match self.job(&held.job_id)? {
            Some(job) if job.state == JobState::Leased && job.lease_token == held.token => Ok(job),
            _ => Err(held.lost()),
        }
    }

    /// Changes the job `held` leases with `change`, at `now`.
    fn update_held(
        &mut self,
        held: &Held,
        change: impl FnOnce(&mut Job, UnixMillis),
    ) -> StoreResult<Job> {
        let now = self.now();
        let old = self.held(held)?;
        let mut job = old.clone();
        job.updated_at = now;
        change(&mut job, now);
        let mut tx = self.tx();
        self.put_job(&mut tx, Some(&old), job.clone(), now)?;
        self.commit(tx)?;
        Ok(job)
    }

    pub(super) fn renew(&mut self, held: &Held, lease_for: Duration) -> StoreResult<UnixMillis> {
        let job = self.update_held(held, |job, now| {
            job.lease_expires_at = Some(now.saturating_add(millis(lease_for)));
        })?;
        Ok(job.lease_expires_at.unwrap_or_default())
    }

    pub(super) fn complete(&mut self, held: &Held) -> StoreResult<()> {
        self.update_held(held, |job, _| {
            job.state = JobState::Done;
            job.lease_expires_at = None;
        })
        .map(drop)
    }

    pub(super) fn fail(
        &mut self,
        held: &Held,
        class: ErrorClass,
        error: &str,
    ) -> StoreResult<Disposition> {
        let now = self.now();
        let stored = self.held(held)?;
        let decision = retry::decide(
            &self.policy,
            class,
            error,
            now,
            Stored {
                deadline: stored.deadline,
                backoff_interval_ms: stored.backoff_interval_ms,
            },
        );
        let disposition = decision.disposition.clone();
        self.update_held(held, |job, _| {
            job.lease_expires_at = None;
            job.backoff_interval_ms = decision.backoff_interval_ms;
            match decision.disposition {
                Disposition::RetryAt(at) => {
                    job.state = JobState::Pending;
                    job.next_attempt_at = at;
                    job.last_error = Some(error.to_owned());
                }
                Disposition::Dead { reason } => {
                    job.state = JobState::Dead;
                    job.last_error = Some(reason);
                }
            }
        })?;
        Ok(disposition)
    }

    pub(super) fn park(&mut self, held: &Held, until: UnixMillis) -> StoreResult<()> {
        self.update_held(held, |job, now| {
            // A wake that came while leased makes the job ready at once.
            (job.state, job.next_attempt_at) = if job.woken {
                (JobState::Pending, now)
            } else {
                (JobState::Waiting, until)
            };
            job.woken = false;
            job.lease_expires_at = None;
        })
        .map(drop)
    }

    pub(super) fn release(&mut self, held: &Held) -> StoreResult<()> {
        self.update_held(held, |job, now| {
            job.state = JobState::Pending;
            job.next_attempt_at = now;
            job.attempts = job.attempts.saturating_sub(1);
            job.lease_expires_at = None;
        })
        .map(drop)
    }

    pub(super) fn wake(&mut self, job_id: &str, note: Option<&str>) -> StoreResult<bool> {
        let now = self.now();
        let Some(old) = self.job(job_id)? else {
            return Ok(false);
        };
        let mut job = old.clone();
        match old.state {
            JobState::Waiting => {
                job.state = JobState::Pending;
                job.next_attempt_at = now;
            }
            // Its worker has not parked it yet: its park makes it ready.
            JobState::Leased => job.woken = true,
            _ => return Ok(false),
        }
        if let Some(note) = note {
            job.last_error = Some(note.to_owned());
        }
        job.updated_at = now;
        let mut tx = self.tx();
        self.put_job(&mut tx, Some(&old), job, now)?;
        self.commit(tx)?;
        Ok(true)
    }

    pub(super) fn get(&self, job_id: &str) -> StoreResult<Option<JobRecord>> {
        Ok(self.job(job_id)?.map(|job| job.record()))
    }

    pub(super) fn list(&self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>> {
        let limit = filter.effective_limit();
        let matches = |job: &Job| {
            filter.state.is_none_or(|s| s == job.state)
                && filter.account.as_ref().is_none_or(|a| *a == job.account)
                && filter
                    .message_id
                    .as_ref()
                    .is_none_or(|m| *m == job.message_id)
        };
        let mut jobs = Vec::new();
        if let Some(message_id) = &filter.message_id {
            // The few jobs of one message: those indexed by it, and in each
            // account, the one whose id is `{account}:{message id}`.
            let prefix = Key::new().text(message_id).prefix();
            let mut ids: Vec<String> = Vec::new();
            for entry in self.ks.by_message.prefix(&prefix) {
                let key = entry.key()?;
                ids.extend(id_after(&key, prefix.len()).map(str::to_owned));
            }
            ids.extend(
                self.accounts()
                    .into_iter()
                    .map(|a| format!("{a}:{message_id}")),
            );
            for id in ids {
                jobs.extend(self.job(&id)?.filter(|job| matches(job)));
            }
            jobs.sort_by_key(|job| std::cmp::Reverse(job.updated_at));
            jobs.truncate(limit);
        } else if let Some(account) = &filter.account {
            let prefix = Key::new().text(account).prefix();
            for entry in self.ks.by_account.prefix(&prefix).rev() {
                let key = entry.key()?;
                if let Some(job) = self.indexed_job(&key, prefix.len() + 8)?
                    && matches(&job)
                {
                    jobs.push(job);
                    if jobs.len() >= limit {
                        break;
                    }
                }
            }
        } else {
            let states: Vec<JobState> = match filter.state {
                Some(state) => vec![state],
                None => JobState::ALL.to_vec(),
            };
            // Newest of each state, merged: no index of its own needed.
            let mut newest: Vec<(UnixMillis, String)> = Vec::new();
            for state in states {
                let prefix = [state_tag(state)];
                for entry in self.ks.by_state.prefix(prefix).rev().take(limit) {
                    let key = entry.key()?;
                    if let (Some(at), Some(id)) = (time_at(&key, 1), id_after(&key, 9)) {
                        newest.push((at, id.to_owned()));
                    }
                }
            }
            newest.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
            for (_, id) in newest.into_iter().take(limit) {
                jobs.extend(self.job(&id)?);
            }
        }
        Ok(jobs.iter().map(Job::record).collect())
    }

    /// The job an index key names after `skip` bytes.
    fn indexed_job(&self, key: &[u8], skip: usize) -> StoreResult<Option<Job>> {
        match id_after(key, skip) {
            Some(id) => self.job(id),
            None => Err(QueueError::Corrupt("an index key is malformed".to_owned())),
        }
    }

    /// Every account with jobs (from the counters).
    fn accounts(&self) -> Vec<String> {
        let mut accounts: Vec<String> = self
            .counters_with(JOB_COUNTERS)
            .into_iter()
            .filter_map(|(rest, _)| split_counter(rest).map(|(account, _)| account))
            .collect();
        accounts.sort();
        accounts.dedup();
        accounts
    }

    pub(super) fn retry_now(&mut self, job_id: &str) -> StoreResult<bool> {
        let now = self.now();
        let Some(old) = self.job(job_id)? else {
            return Ok(false);
        };
        if !requeueable(old.state) {
            return Ok(false);
        }
        let mut job = old.clone();
        job.requeue(now);
        let mut tx = self.tx();
        self.put_job(&mut tx, Some(&old), job, now)?;
        self.commit(tx)?;
        Ok(true)
    }

    pub(super) fn retry_all(&mut self, state: JobState) -> StoreResult<u64> {
        if !requeueable(state) {
            return Ok(0);
        }
        let now = self.now();
        let tag = state_tag(state);
        let end = Bound::Excluded(vec![tag + 1]);
        // Chunks resume after the last key done: a requeued pending job
        // gets a new key (`updated_at` = now) ahead of the cursor, met
        // once more at most, and then unchanged.
        let mut cursor = Bound::Included(vec![tag]);
        let mut requeued = 0;
        loop {
            let mut tx = self.tx();
            let mut last = None;
            for entry in self
                .ks
                .by_state
                .range::<Vec<u8>, _>((cursor.clone(), end.clone()))
                .take(RETRY_ALL_CHUNK)
            {
                let key = entry.key()?;
                if let Some(old) = self.indexed_job(&key, 9)? {
                    let mut job = old.clone();
                    job.requeue(now);
                    self.put_job(&mut tx, Some(&old), job, now)?;
                    requeued += 1;
                }
                last = Some(key.to_vec());
            }
            self.commit(tx)?;
            match last {
                Some(key) => cursor = Bound::Excluded(key),
                None => return Ok(requeued),
            }
        }
    }

    pub(super) fn stats(&self, at_risk_within: Duration) -> StoreResult<QueueStats> {
        let now = self.now();
        let mut stats = QueueStats::empty();
        for (rest, n) in self.counters_with(JOB_COUNTERS) {
            if n > 0
                && let Some((account, state)) = split_counter(rest)
            {
                stats.add(account, state, n);
            }
        }
        if let Some(first) = self.ks.pending_age.first_key_value() {
            stats.oldest_pending = time_at(&first.key()?, 0);
        }
        let horizon = now.saturating_add(millis(at_risk_within));
        let end = Key::new().time(horizon.saturating_add(1)).prefix();
        let mut at_risk = 0;
        for entry in self.ks.live_deadline.range(..end) {
            entry.key()?;
            at_risk += 1;
        }
        stats.at_risk = at_risk;
        Ok(stats)
    }

    pub(super) fn export_jobs(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<MigratedJob>> {
        let start = match after {
            Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut jobs = Vec::new();
        for entry in self
            .ks
            .jobs
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (key, value) = entry.into_inner()?;
            let job: Job = decode(&format!("job {}", String::from_utf8_lossy(&key)), &value)?;
            jobs.push(MigratedJob {
                job: job.record(),
                chat_id: job.chat_id,
                backoff_interval_ms: job.backoff_interval_ms,
            });
        }
        Ok(jobs)
    }

    pub(super) fn import_jobs(&mut self, jobs: &[MigratedJob]) -> StoreResult<u64> {
        let now = self.now();
        let mut tx = self.tx();
        let mut seen = HashSet::with_capacity(jobs.len());
        let mut new = 0;
        for MigratedJob {
            job,
            chat_id,
            backoff_interval_ms,
        } in jobs.iter().cloned()
        {
            if !seen.insert(job.id.clone()) || self.job(&job.id)?.is_some() {
                continue;
            }
            let imported = Job {
                id: job.id,
                account: job.account,
                provider: job.provider,
                state: imported_state(job.state),
                attempts: job.attempts,
                deadline: job.deadline,
                next_attempt_at: job.next_attempt_at,
                backoff_interval_ms,
                lease_token: 0,
                lease_expires_at: None,
                last_error: job.last_error,
                created_at: job.created_at,
                updated_at: job.updated_at,
                message_id: job.message_id,
                media_id: job.media_id,
                message_at: job.message_at,
                chat_id,
                payload: job.payload,
                woken: false,
                ready: false,
            };
            self.put_job(&mut tx, None, imported, now)?;
            new += 1;
        }
        self.commit(tx)?;
        Ok(new)
    }

    pub(super) fn ping(&self) -> StoreResult<()> {
        self.ks.meta.get("format")?;
        Ok(())
    }
}

/// The states an admin requeue takes.
fn requeueable(state: JobState) -> bool {
    matches!(
        state,
        JobState::Dead | JobState::Pending | JobState::Waiting
    )
}

/// A job counter's key after its tag: the account and the state name.
fn split_counter(rest: &[u8]) -> Option<(String, String)> {
    let (parts, state) = split(rest, 1)?;
    Some((parts[0].to_owned(), state.to_owned()))
}
