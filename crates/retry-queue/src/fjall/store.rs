//! The state the queue thread owns, the records it stores, and the one
//! place that writes them: [`Store::put_job`] and [`Store::put_delivery`]
//! derive every index entry and counter from the record, so that an
//! operation only says what a record becomes, never which entries move.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ::fjall::config::CompressionPolicy;
use ::fjall::{
    CompressionType, Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode,
};
use archiver_core::{Clock, JobSpec, JobState, ProviderKind, UnixMillis};
use serde::{Deserialize, Serialize};

use super::keys::Key;
use crate::backend::millis;
use crate::outbox::{Delivery, DeliveryRow, DeliveryState, NotifyEvent, Route};
use crate::{JobRecord, QueueError, RetryPolicy};

/// The format of the keys and records below, kept in `meta`.
const FORMAT_VERSION: u32 = 1;

/// Block cache shared by every keyspace.
const CACHE_BYTES: u64 = 32 << 20;
/// Journal kept before lagging memtables are forced to flush (fjall's
/// smallest allowed). fjall checks it only when it starts a new journal
/// file (every 64 MB written), so the journal, and what the memtables hold
/// beside it, can reach about twice this for a moment: with the memtable
/// sizes below, that is what bounds the memory held in memtables, whatever
/// the number of jobs.
const JOURNAL_BYTES: u64 = 64 << 20;
/// A keyspace's memtable is flushed when it reaches this; `jobs` has its
/// own, [`JOBS_MEMTABLE_BYTES`].
const MEMTABLE_BYTES: u64 = 8 << 20;
/// The memtable of `jobs`. Each flush writes a burst that the journal's
/// next fsync queues behind, and fjall's worker fsyncs the journal under
/// its lock as a flush starts, so a flush can stall the writer thread
/// (and a group of webhooks) for tens of milliseconds. With 8 MiB and no
/// compression, `jobs` flushed about every quarter second at 20k
/// webhooks/s and set the p99; compressing the records halved the bytes
/// written per webhook, and 32 MiB cut the stalls by about a third more
/// (BENCHMARKS.md, ninth session). These options are fixed when a
/// keyspace is created; a database created earlier keeps its own.
const JOBS_MEMTABLE_BYTES: u64 = 32 << 20;

/// Every keyspace of the database (the crate docs of `fjall` module name
/// what each holds).
#[derive(Clone)]
pub(super) struct Spaces {
    pub(super) jobs: Keyspace,
    pub(super) ready: Keyspace,
    pub(super) timers: Keyspace,
    pub(super) by_state: Keyspace,
    pub(super) by_account: Keyspace,
    pub(super) by_message: Keyspace,
    pub(super) live_deadline: Keyspace,
    pub(super) pending_age: Keyspace,
    pub(super) counters: Keyspace,
    pub(super) meta: Keyspace,
    pub(super) deliveries: Keyspace,
    pub(super) deliveries_due: Keyspace,
    pub(super) deliveries_updated: Keyspace,
    pub(super) deliveries_by_job: Keyspace,
    pub(super) blob_refs: Keyspace,
    pub(super) blob_refs_by_blob: Keyspace,
    pub(super) blob_erasures: Keyspace,
    pub(super) index_complete: Keyspace,
}

impl Spaces {
    fn open(db: &Database) -> ::fjall::Result<Self> {
        let options = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let open = |name: &str| db.keyspace(name, options);
        // Records (JSON, about 1.5 KiB a job) are compressed at every
        // level; fjall's default leaves the first two uncompressed.
        let records = || {
            options().data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
        };
        Ok(Self {
            jobs: db.keyspace("jobs", || records().max_memtable_size(JOBS_MEMTABLE_BYTES))?,
            ready: open("ready")?,
            timers: open("timers")?,
            by_state: open("by_state")?,
            by_account: open("by_account")?,
            by_message: open("by_message")?,
            live_deadline: open("live_deadline")?,
            pending_age: open("pending_age")?,
            counters: open("counters")?,
            meta: open("meta")?,
            deliveries: db.keyspace("deliveries", records)?,
            deliveries_due: open("deliveries_due")?,
            deliveries_updated: open("deliveries_updated")?,
            deliveries_by_job: open("deliveries_by_job")?,
            blob_refs: open("blob_refs")?,
            blob_refs_by_blob: open("blob_refs_by_blob")?,
            blob_erasures: open("blob_erasures")?,
            index_complete: open("index_complete")?,
        })
    }
}

/// A job as stored in `jobs` (JSON): the record plus the fields only the
/// queue reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Job {
    pub(super) id: String,
    pub(super) account: String,
    pub(super) provider: ProviderKind,
    pub(super) state: JobState,
    pub(super) attempts: u32,
    pub(super) deadline: UnixMillis,
    pub(super) next_attempt_at: UnixMillis,
    pub(super) backoff_interval_ms: Option<i64>,
    pub(super) lease_token: u64,
    pub(super) lease_expires_at: Option<UnixMillis>,
    pub(super) last_error: Option<String>,
    pub(super) created_at: UnixMillis,
    pub(super) updated_at: UnixMillis,
    pub(super) message_id: String,
    pub(super) media_id: Option<String>,
    pub(super) message_at: UnixMillis,
    pub(super) chat_id: Option<String>,
    pub(super) payload: serde_json::Value,
    /// A wake came while leased.
    pub(super) woken: bool,
    /// Which set indexes this live job: `ready` (due when written) or
    /// `timers` (due later). Set by [`Store::put_job`].
    pub(super) ready: bool,
}

impl Job {
    /// A new pending job, ready now.
    pub(super) fn new(spec: JobSpec, now: UnixMillis) -> Self {
        Self {
            id: spec.id,
            account: spec.account,
            provider: spec.provider,
            state: JobState::Pending,
            attempts: 0,
            deadline: spec.deadline,
            next_attempt_at: now,
            backoff_interval_ms: None,
            lease_token: 0,
            lease_expires_at: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            message_id: spec.message_id,
            media_id: spec.media_id,
            message_at: spec.message_at,
            chat_id: spec.chat_id,
            payload: spec.payload,
            woken: false,
            ready: false,
        }
    }

    /// The job as the trait returns it.
    pub(super) fn record(&self) -> JobRecord {
        JobRecord {
            id: self.id.clone(),
            account: self.account.clone(),
            provider: self.provider,
            state: self.state,
            attempts: self.attempts,
            deadline: self.deadline,
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            message_id: self.message_id.clone(),
            media_id: self.media_id.clone(),
            message_at: self.message_at,
            payload: self.payload.clone(),
        }
    }

    /// When a live job is next due: a pending job's next attempt, a
    /// waiting job's timeout, a leased job's lease expiry. `None` when the
    /// job is finished.
    pub(super) fn due_at(&self) -> Option<UnixMillis> {
        match self.state {
            JobState::Pending | JobState::Waiting => Some(self.next_attempt_at),
            JobState::Leased => Some(self.lease_expires_at.unwrap_or(self.next_attempt_at)),
            JobState::Done | JobState::Dead | JobState::Erased => None,
        }
    }

    /// Back to pending, ready now, with its backoff reset (an admin retry,
    /// an enqueue of a dead job).
    pub(super) fn requeue(&mut self, now: UnixMillis) {
        self.state = JobState::Pending;
        self.next_attempt_at = now;
        self.backoff_interval_ms = None;
        self.lease_expires_at = None;
        self.updated_at = now;
    }
}

/// A delivery as stored in `deliveries` (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredDelivery {
    pub(super) id: String,
    pub(super) target: String,
    pub(super) job_id: String,
    pub(super) event: String,
    pub(super) state: String,
    pub(super) attempts: u32,
    pub(super) next_attempt_at: UnixMillis,
    pub(super) backoff_interval_ms: Option<i64>,
    pub(super) deadline: UnixMillis,
    pub(super) max_age_ms: i64,
    pub(super) last_error: Option<String>,
    pub(super) job_error: Option<String>,
    pub(super) created_at: UnixMillis,
    pub(super) updated_at: UnixMillis,
}

impl StoredDelivery {
    pub(super) fn is_pending(&self) -> bool {
        self.state == DeliveryState::Pending.as_str()
    }

    /// The delivery as the trait returns it.
    pub(super) fn delivery(&self) -> Result<Delivery, QueueError> {
        // The SQL backends' row shape, so the names are checked in one place.
        DeliveryRow {
            id: self.id.clone(),
            target: self.target.clone(),
            job_id: self.job_id.clone(),
            event: self.event.clone(),
            state: self.state.clone(),
            attempts: i64::from(self.attempts),
            next_attempt_at: self.next_attempt_at,
            deadline: self.deadline,
            last_error: self.last_error.clone(),
            job_error: self.job_error.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
        .into_delivery()
    }
}

/// A route as kept in `meta` (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredRoute {
    pub(super) target: String,
    pub(super) event: String,
    pub(super) account: Option<String>,
    pub(super) max_age_ms: i64,
}

impl StoredRoute {
    pub(super) fn of(route: &Route) -> Self {
        Self {
            target: route.target.clone(),
            event: route.event.as_str().to_owned(),
            account: route.account.clone(),
            max_age_ms: millis(route.max_age),
        }
    }
}

/// The writes of one operation: committed together, atomically, by
/// [`Store::commit`].
pub(super) struct Tx {
    batch: OwnedWriteBatch,
    /// Counter changes, applied to [`Store::counters`] at commit.
    deltas: HashMap<Vec<u8>, i64>,
    /// `ready` keys this batch deletes and writes, for [`ReadyFloor`].
    ready_removed: Vec<Vec<u8>>,
    ready_written: Vec<Vec<u8>>,
}

impl Tx {
    pub(super) fn insert(
        &mut self,
        space: &Keyspace,
        key: Vec<u8>,
        value: impl Into<::fjall::UserValue>,
    ) {
        self.batch.insert(space, key, value);
    }

    pub(super) fn remove(&mut self, space: &Keyspace, key: Vec<u8>) {
        self.batch.remove(space, key);
    }

    /// Moves an index entry from `old` to `new` (either may be absent).
    fn index(&mut self, space: &Keyspace, old: Option<Vec<u8>>, new: Option<Vec<u8>>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.batch.remove(space, old);
        }
        if let Some(new) = new {
            self.batch.insert(space, new, b"".as_slice());
        }
    }

    pub(super) fn count(&mut self, key: Vec<u8>, by: i64) {
        *self.deltas.entry(key).or_default() += by;
    }
}

/// Errors inside the thread; the fjall ones mean the queue is unusable.
pub(super) type StoreResult<T> = Result<T, QueueError>;

impl From<::fjall::Error> for QueueError {
    fn from(e: ::fjall::Error) -> Self {
        QueueError::Unavailable(format!("fjall: {e}"))
    }
}

/// Decodes a stored JSON record.
pub(super) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("queue records serialize")
}

/// The queue's database and what the thread keeps in memory beside it.
pub(super) struct Store {
    pub(super) db: Database,
    pub(super) ks: Spaces,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) policy: RetryPolicy,
    /// Done jobs older than this are deleted by lease calls.
    pub(super) done_retention: Duration,
    /// Every counter (`counters` keyspace), loaded at open.
    counters: HashMap<Vec<u8>, i64>,
    /// The routes of [`crate::Outbox::set_routes`], also kept in `meta`.
    pub(super) routes: Vec<StoredRoute>,
    /// Something was committed since the last fsync.
    pub(super) dirty: bool,
    /// Where a lease starts reading `ready`.
    pub(super) ready_floor: ReadyFloor,
}

/// Where a lease starts reading `ready`: the keys below a floor that are
/// still live, then the keyspace from the floor on. A lease takes keys in
/// order, so every key below the last one it took is gone, and an LSM
/// keeps their deletions until a compaction drops them: reading from the
/// start would read back through every job leased since. Kept in memory
/// (unknown at open: read from the start).
#[derive(Debug, Default)]
pub(super) struct ReadyFloor {
    /// Every live `ready` key below this is in `below` (`None`: not known).
    floor: Option<Vec<u8>>,
    /// Live keys written below the floor since (a retry come due, a job
    /// with an earlier deadline), at most [`ReadyFloor::MAX_BELOW`].
    below: BTreeSet<Vec<u8>>,
}

impl ReadyFloor {
    /// More keys below the floor than this, and the floor drops to the
    /// smallest of them instead.
    const MAX_BELOW: usize = 4096;

    /// The live keys below the floor, in order (copied only as a lease
    /// reads them: most leases stop after a few), and the key to read
    /// `ready` from after them.
    pub(super) fn start(&self) -> (impl Iterator<Item = Vec<u8>> + '_, Vec<u8>) {
        (
            self.below.iter().cloned(),
            self.floor.clone().unwrap_or_default(),
        )
    }

    /// A lease took every key up to `key` from the keyspace (and the ones
    /// below the floor before it).
    pub(super) fn taken_through(&mut self, key: &[u8]) {
        let mut floor = key.to_vec();
        floor.push(0); // the smallest key after it
        self.floor = Some(floor);
    }

    /// A committed batch deleted and wrote these `ready` keys.
    fn applied(&mut self, removed: &[Vec<u8>], written: &[Vec<u8>]) {
        for key in removed {
            self.below.remove(key);
        }
        let Some(floor) = &self.floor else { return };
        for key in written {
            if key < floor {
                self.below.insert(key.clone());
            }
        }
        if self.below.len() > Self::MAX_BELOW {
            self.floor = self.below.first().cloned();
            self.below.clear();
        }
    }
}

impl Store {
    pub(super) fn open(
        path: &Path,
        clock: Arc<dyn Clock>,
        policy: RetryPolicy,
        done_retention: Duration,
    ) -> StoreResult<Self> {
        let db = Database::builder(path)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES)
            // Batches stay in the journal's buffer until `sync` writes and
            // fsyncs them: one write and one fsync a group.
            .manual_journal_persist(true)
            // One background worker for flushes and compactions. With two,
            // fjall 3.1's first worker hands every compaction request back
            // to the pool, and on two cores the pair spun on that (the
            // queue bench measured two thirds of the workers' CPU there).
            .worker_threads(1)
            .open()
            .map_err(|e| match e {
                ::fjall::Error::Locked => QueueError::Unavailable(
                    "locked by another process (a daemon running on this queue? \
                     a fjall queue is opened by one process at a time)"
                        .to_owned(),
                ),
                other => other.into(),
            })?;
        let ks = Spaces::open(&db)?;
        match ks.meta.get("format")? {
            None => {
                ks.meta.insert("format", FORMAT_VERSION.to_be_bytes())?;
                db.persist(PersistMode::SyncAll)?;
            }
            Some(v) if *v == FORMAT_VERSION.to_be_bytes() => {}
            Some(v) => {
                return Err(QueueError::Corrupt(format!(
                    "{}: queue format {v:?} is not {FORMAT_VERSION} (a newer version wrote it?)",
                    path.display()
                )));
            }
        }
        let mut counters = HashMap::new();
        for entry in ks.counters.iter() {
            let (key, value) = entry.into_inner()?;
            let n = i64::from_be_bytes(
                value
                    .as_ref()
                    .try_into()
                    .map_err(|_| QueueError::Corrupt("a counter is not 8 bytes".to_owned()))?,
            );
            counters.insert(key.to_vec(), n);
        }
        let routes = match ks.meta.get("routes")? {
            Some(bytes) => decode("routes", &bytes)?,
            None => Vec::new(),
        };
        Ok(Self {
            db,
            ks,
            clock,
            policy,
            done_retention,
            counters,
            routes,
            dirty: false,
            ready_floor: ReadyFloor::default(),
        })
    }

    pub(super) fn now(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    pub(super) fn tx(&self) -> Tx {
        Tx {
            batch: self.db.batch(),
            deltas: HashMap::new(),
            ready_removed: Vec::new(),
            ready_written: Vec::new(),
        }
    }

    /// Commits `tx` atomically (to the journal, not yet fsynced: the
    /// thread fsyncs once for every command of a group before answering).
    pub(super) fn commit(&mut self, mut tx: Tx) -> StoreResult<()> {
        for (key, delta) in &tx.deltas {
            if *delta != 0 {
                let n = self.counters.get(key).copied().unwrap_or_default() + delta;
                tx.batch
                    .insert(&self.ks.counters, key.clone(), n.to_be_bytes().as_slice());
            }
        }
        if tx.batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = tx.batch.commit() {
            self.ready_floor = ReadyFloor::default();
            return Err(e.into());
        }
        self.ready_floor
            .applied(&tx.ready_removed, &tx.ready_written);
        for (key, delta) in tx.deltas {
            *self.counters.entry(key).or_default() += delta;
        }
        self.dirty = true;
        Ok(())
    }

    /// Makes every commit so far durable.
    pub(super) fn sync(&mut self) -> StoreResult<()> {
        if self.dirty {
            self.db.persist(PersistMode::SyncData)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Counters whose key starts with `prefix`, as (rest of key, value).
    pub(super) fn counters_with(&self, prefix: &[u8]) -> Vec<(&[u8], i64)> {
        self.counters
            .iter()
            .filter_map(|(key, n)| key.strip_prefix(prefix).map(|rest| (rest, *n)))
            .collect()
    }

    pub(super) fn job(&self, id: &str) -> StoreResult<Option<Job>> {
        self.ks
            .jobs
            .get(id)?
            .map(|bytes| decode(&format!("job {id}"), &bytes))
            .transpose()
    }

    pub(super) fn delivery(&self, id: &str) -> StoreResult<Option<StoredDelivery>> {
        self.ks
            .deliveries
            .get(id)?
            .map(|bytes| decode(&format!("delivery {id}"), &bytes))
            .transpose()
    }

    /// Writes `new` in place of `old` (`None`: a new job), with every
    /// index entry and counter that follows from the change, and, for a
    /// stored job's move into done or dead, the deliveries of the matching
    /// routes.
    pub(super) fn put_job(
        &self,
        tx: &mut Tx,
        old: Option<&Job>,
        mut new: Job,
        now: UnixMillis,
    ) -> StoreResult<()> {
        new.ready = new.due_at().is_some_and(|due| due <= now);
        let (before, after) = (old.map(JobKeys::of), JobKeys::of(&new));
        let before_slot = before.as_ref().and_then(|k| k.slot.clone());
        match (before_slot, after.slot.clone()) {
            (Some((was_ready, old_key)), Some((is_ready, new_key))) if was_ready == is_ready => {
                tx.index(self.slot(is_ready), Some(old_key), Some(new_key));
            }
            (old_slot, new_slot) => {
                if let Some((was_ready, key)) = old_slot {
                    tx.index(self.slot(was_ready), Some(key), None);
                }
                if let Some((is_ready, key)) = new_slot {
                    tx.index(self.slot(is_ready), None, Some(key));
                }
            }
        }
        if let Some((true, key)) = before.as_ref().and_then(|k| k.slot.as_ref()) {
            tx.ready_removed.push(key.clone());
        }
        if let Some((true, key)) = &after.slot {
            tx.ready_written.push(key.clone());
        }
        let mut before = before.unwrap_or_default();
        tx.index(&self.ks.by_state, before.by_state.take(), after.by_state);
        tx.index(
            &self.ks.by_account,
            before.by_account.take(),
            after.by_account,
        );
        tx.index(
            &self.ks.by_message,
            before.by_message.take(),
            after.by_message,
        );
        tx.index(
            &self.ks.live_deadline,
            before.live_deadline.take(),
            after.live_deadline,
        );
        tx.index(
            &self.ks.pending_age,
            before.pending_age.take(),
            after.pending_age,
        );
        match old {
            // A stored job's transition: the outbox trigger fires.
            Some(old) if old.state != new.state => {
                tx.count(job_counter(&old.account, old.state), -1);
                tx.count(job_counter(&new.account, new.state), 1);
                if let Some(event) = notify_event(new.state) {
                    self.notify(tx, &new, event)?;
                }
            }
            Some(_) => {}
            // A new job (enqueued, or imported as it was elsewhere).
            None => tx.count(job_counter(&new.account, new.state), 1),
        }
        tx.insert(&self.ks.jobs, new.id.as_bytes().to_vec(), encode(&new));
        Ok(())
    }

    fn slot(&self, ready: bool) -> &Keyspace {
        if ready {
            &self.ks.ready
        } else {
            &self.ks.timers
        }
    }

    /// Removes a finished job and every entry of it.
    pub(super) fn delete_job(&self, tx: &mut Tx, job: &Job) {
        let keys = JobKeys::of(job);
        if let Some((ready, key)) = keys.slot {
            tx.remove(self.slot(ready), key);
        }
        for (space, key) in [
            (&self.ks.by_state, keys.by_state),
            (&self.ks.by_account, keys.by_account),
            (&self.ks.by_message, keys.by_message),
            (&self.ks.live_deadline, keys.live_deadline),
            (&self.ks.pending_age, keys.pending_age),
        ] {
            if let Some(key) = key {
                tx.remove(space, key);
            }
        }
        tx.count(job_counter(&job.account, job.state), -1);
        tx.remove(&self.ks.jobs, job.id.as_bytes().to_vec());
    }

    /// The outbox trigger: one delivery per route of `event` that covers
    /// the job's account; a delivery that exists (a job dead again after a
    /// retry) is re-armed under the same id, one attempt more, so that a
    /// send of the old event still in flight is fenced off.
    fn notify(&self, tx: &mut Tx, job: &Job, event: NotifyEvent) -> StoreResult<()> {
        let at = job.updated_at;
        // The stored routes never match a job twice for one target
        // (`distinct_routes`).
        for route in &self.routes {
            if route.event != event.as_str()
                || route.account.as_ref().is_some_and(|a| *a != job.account)
            {
                continue;
            }
            let id = format!("{}:{}:{}", route.target, job.id, route.event);
            let old = self.delivery(&id)?;
            let new = StoredDelivery {
                id: id.clone(),
                target: route.target.clone(),
                job_id: job.id.clone(),
                event: route.event.clone(),
                state: DeliveryState::Pending.as_str().to_owned(),
                attempts: old.as_ref().map_or(0, |d| d.attempts + 1),
                next_attempt_at: at,
                backoff_interval_ms: None,
                deadline: at.saturating_add(route.max_age_ms),
                max_age_ms: route.max_age_ms,
                last_error: None,
                job_error: job.last_error.clone(),
                created_at: at,
                updated_at: at,
            };
            self.put_delivery(tx, old.as_ref(), &new);
        }
        Ok(())
    }

    /// Writes a delivery with its index entries and pending counter.
    pub(super) fn put_delivery(
        &self,
        tx: &mut Tx,
        old: Option<&StoredDelivery>,
        new: &StoredDelivery,
    ) {
        let before = old.map(DeliveryKeys::of);
        let after = DeliveryKeys::of(new);
        let (due, updated, by_job) = match before {
            Some(b) => (b.due, Some(b.updated), Some(b.by_job)),
            None => (None, None, None),
        };
        tx.index(&self.ks.deliveries_due, due, after.due);
        tx.index(&self.ks.deliveries_updated, updated, Some(after.updated));
        tx.index(&self.ks.deliveries_by_job, by_job, Some(after.by_job));
        let was_pending = old.is_some_and(StoredDelivery::is_pending);
        if was_pending != new.is_pending() {
            tx.count(
                pending_counter(&new.target),
                if new.is_pending() { 1 } else { -1 },
            );
        }
        tx.insert(&self.ks.deliveries, new.id.as_bytes().to_vec(), encode(new));
    }

    /// Writes the routes into `tx`; [`Store::routes`] is the caller's to
    /// set once `tx` is committed.
    pub(super) fn save_routes(&self, tx: &mut Tx, routes: &[StoredRoute]) {
        tx.insert(&self.ks.meta, b"routes".to_vec(), encode(&routes));
    }
}

/// The event a move into `state` tells apps about.
fn notify_event(state: JobState) -> Option<NotifyEvent> {
    match state {
        JobState::Done => Some(NotifyEvent::Archived),
        JobState::Dead => Some(NotifyEvent::Dead),
        _ => None,
    }
}

/// The counter of an account's jobs in a state.
pub(super) fn job_counter(account: &str, state: JobState) -> Vec<u8> {
    Key::new().tag(b'j').text(account).tail(state.as_str())
}

/// The prefix of every job counter.
pub(super) const JOB_COUNTERS: &[u8] = b"j";

/// The counter of a target's pending deliveries.
pub(super) fn pending_counter(target: &str) -> Vec<u8> {
    Key::new().tag(b'd').tail(target)
}

/// The prefix of every pending-delivery counter.
pub(super) const PENDING_COUNTERS: &[u8] = b"d";

/// The one-byte tag of a state in `by_state` keys.
pub(super) fn state_tag(state: JobState) -> u8 {
    JobState::ALL
        .iter()
        .position(|s| *s == state)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

/// Every index key of a job (the keyspace docs give their layout).
#[derive(Default)]
struct JobKeys {
    /// `ready` (true) or `timers`, and the key there; live jobs only.
    slot: Option<(bool, Vec<u8>)>,
    by_state: Option<Vec<u8>>,
    by_account: Option<Vec<u8>>,
    by_message: Option<Vec<u8>>,
    live_deadline: Option<Vec<u8>>,
    pending_age: Option<Vec<u8>>,
}

impl JobKeys {
    fn of(job: &Job) -> Self {
        let live = job.due_at();
        let slot = live.map(|due| {
            if job.ready {
                (true, ready_key(job.deadline, job.next_attempt_at, &job.id))
            } else {
                (false, Key::new().time(due).tail(&job.id))
            }
        });
        Self {
            slot,
            by_state: Some(
                Key::new()
                    .tag(state_tag(job.state))
                    .time(job.updated_at)
                    .tail(&job.id),
            ),
            by_account: Some(
                Key::new()
                    .text(&job.account)
                    .time(job.updated_at)
                    .tail(&job.id),
            ),
            by_message: (!keyed_by_message(job))
                .then(|| Key::new().text(&job.message_id).tail(&job.id)),
            live_deadline: live.map(|_| Key::new().time(job.deadline).tail(&job.id)),
            pending_age: (job.state == JobState::Pending)
                .then(|| Key::new().time(job.created_at).tail(&job.id)),
        }
    }
}

/// Whether the job's id is `{account}:{message_id}` (such jobs are found by
/// id, not through `by_message`).
fn keyed_by_message(job: &Job) -> bool {
    job.id
        .strip_prefix(job.account.as_str())
        .and_then(|rest| rest.strip_prefix(':'))
        == Some(job.message_id.as_str())
}

/// A key of `ready`: earliest deadline first, then oldest due.
pub(super) fn ready_key(deadline: UnixMillis, next_attempt_at: UnixMillis, id: &str) -> Vec<u8> {
    Key::new().time(deadline).time(next_attempt_at).tail(id)
}

/// Every index key of a delivery.
pub(super) struct DeliveryKeys {
    /// `deliveries_due`: pending ones only.
    pub(super) due: Option<Vec<u8>>,
    pub(super) updated: Vec<u8>,
    pub(super) by_job: Vec<u8>,
}

impl DeliveryKeys {
    pub(super) fn of(d: &StoredDelivery) -> Self {
        Self {
            due: d.is_pending().then(|| {
                Key::new()
                    .text(&d.target)
                    .time(d.next_attempt_at)
                    .tail(&d.id)
            }),
            updated: Key::new().time(d.updated_at).tail(&d.id),
            by_job: Key::new().text(&d.job_id).tail(&d.id),
        }
    }
}
