//! The embedded backend: one SQLite file, one OS thread that owns the
//! connection, commands over a bounded channel (schema in the crate docs).
//!
//! Why a thread and not a connection pool: SQLite allows one writer at a
//! time anyway, and nearly every queue operation writes. A single owner
//! thread serialises them without `SQLITE_BUSY` retries, keeps prepared
//! statements cached, and is the natural place for group commit: enqueues
//! that arrived while the previous transaction was being written are
//! committed together, so a burst of webhooks costs one transaction, not
//! one each. Its answers go out through [`wal_sync`], a second thread
//! that fsyncs the WAL once for every commit made since its last fsync, so
//! the next group is inserted while the previous one is being synced; a
//! third, the [`checkpointer`], copies the WAL back into the database.
//!
//! The module is cut by concern: [`schema`] (the file's schema and its
//! migrations), [`thread`] (the command loop and the state it owns),
//! [`enqueue`] (group commit), [`lease`] (a job's life under a lease: lease,
//! renew, complete, fail, park, wake, release), [`admin`] (reads and admin
//! requeues), [`outbox`] (events to the user's app), [`erasure`] (the
//! blob reference index), [`row`] (decoding a row), plus the two helper
//! threads.

mod admin;
mod checkpointer;
mod enqueue;
mod erasure;
mod lease;
mod outbox;
mod row;
mod schema;
#[cfg(test)]
mod tests;
mod thread;
mod wal_sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use archiver_core::{Clock, ErrorClass, JobSpec, JobState, UnixMillis};
use tokio::sync::{mpsc, oneshot};

use self::checkpointer::Checkpointer;
use self::lease::Held;
use self::schema::open_database;
use self::thread::{Command, EnqueueRequest, Store, StoreResult, run};
use self::wal_sync::{Answer, Fault, SyncHook, WalSync};
use crate::backend::CHANNEL_CAPACITY;
use crate::erasure::{
    BlobRef, CommittedErasure, ErasedMessage, ErasureFilter, ErasurePlan, ErasureRefused, Erasures,
};
use crate::outbox::{Claimed, Delivery, DeliveryFilter, Outbox, Retried, Route};
use crate::{
    Disposition, Enqueued, JobFilter, JobQueue, JobRecord, Lease, Leased, MigratedJob, QueueError,
    QueueStats, RetryPolicy,
};

/// The SQLite [`JobQueue`]: embedded, one process, one file (plus its WAL).
///
/// Dropping it stops its thread after the commands already sent, and waits
/// for that, so the file can be reopened at once.
pub struct SqliteQueue {
    /// For `Debug` and error messages.
    path: PathBuf,
    /// `None` only while dropping: closing the channel stops the thread.
    commands: Option<mpsc::Sender<Command>>,
    /// Joined on drop.
    worker: Option<JoinHandle<()>>,
    /// Why the queue stopped, once a WAL fsync failed.
    fault: Fault,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteQueue {
    /// Opens (or creates, with its parent directory and schema) the queue
    /// database at `path` and starts its thread. Needs no async runtime.
    pub fn open(
        path: &Path,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        Self::open_with_sync_hook(path, policy, clock, None)
    }

    /// [`Self::open`], with `hook` run before every fsync of the WAL (tests
    /// hold a sync back, or fail it, with it).
    fn open_with_sync_hook(
        path: &Path,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
        hook: Option<SyncHook>,
    ) -> Result<Self, QueueError> {
        policy.validate().map_err(QueueError::InvalidPolicy)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                QueueError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = open_database(path).map_err(|e| match QueueError::from(e) {
            QueueError::Unavailable(msg) => {
                QueueError::Unavailable(format!("{}: {msg}", path.display()))
            }
            other => other,
        })?;
        let cannot_start = |e: std::io::Error| {
            QueueError::Unavailable(format!("cannot start the queue thread: {e}"))
        };
        let fault = Fault::default();
        let store = Store {
            sync: WalSync::start(path, CHANNEL_CAPACITY, hook, fault.clone())
                .map_err(cannot_start)?,
            checkpointer: Checkpointer::start(path)?,
            conn,
            clock,
            policy,
            enqueue_commits: 0,
        };
        let (commands, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        // Thread names fit Linux's 15 bytes, so `top -H`, `perf` and the
        // queue bench can tell this thread, `sqlite-wal-sync` and
        // `sqlite-checkpt` apart.
        let worker = std::thread::Builder::new()
            .name("sqlite-queue".to_owned())
            .spawn(move || run(store, receiver))
            .map_err(cannot_start)?;
        Ok(Self {
            path: path.to_owned(),
            commands: Some(commands),
            worker: Some(worker),
            fault,
        })
    }

    fn sender(&self) -> Result<&mpsc::Sender<Command>, QueueError> {
        self.commands.as_ref().ok_or_else(|| self.stopped())
    }

    /// The error of a call the database thread will never answer.
    fn stopped(&self) -> QueueError {
        match self.fault.get() {
            Some(fault) => QueueError::Unavailable(fault.clone()),
            None => QueueError::Unavailable("the queue's database thread has stopped".to_owned()),
        }
    }

    /// Runs `f` on the database thread and waits for its answer.
    ///
    /// If the caller stops waiting, `f` still runs (a lease taken that way
    /// simply expires).
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> StoreResult<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Call(Box::new(move |store: &mut Store| -> Answer {
            let result = f(store).map_err(QueueError::from);
            Box::new(move |synced: Result<(), &str>| {
                let _ = reply.send(synced.map_err(not_durable).and(result));
            })
        }));
        self.sender()?
            .send(command)
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }
}

impl Drop for SqliteQueue {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The answer to a command whose commit could not be made durable.
fn not_durable(fault: &str) -> QueueError {
    QueueError::Unavailable(fault.to_owned())
}

#[async_trait::async_trait]
impl JobQueue for SqliteQueue {
    async fn enqueue(&self, jobs: Vec<JobSpec>) -> Result<Vec<Enqueued>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Command::Enqueue(EnqueueRequest::new(jobs, reply)))
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    async fn lease(&self, max: usize, lease_for: Duration) -> Result<Leased, QueueError> {
        if max == 0 {
            return Ok(Leased::default());
        }
        self.call(move |store| store.lease(max, lease_for)).await
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<UnixMillis, QueueError> {
        let held = Held::of(lease);
        self.call(move |store| store.renew(&held, lease_for)).await
    }

    async fn complete(&self, lease: &Lease) -> Result<(), QueueError> {
        let held = Held::of(lease);
        self.call(move |store| store.complete(&held)).await
    }

    async fn fail(
        &self,
        lease: &Lease,
        class: ErrorClass,
        error: &str,
    ) -> Result<Disposition, QueueError> {
        let held = Held::of(lease);
        let error = error.to_owned();
        self.call(move |store| store.fail(&held, class, &error))
            .await
    }

    async fn park(&self, lease: &Lease, until: UnixMillis) -> Result<(), QueueError> {
        let held = Held::of(lease);
        self.call(move |store| store.park(&held, until)).await
    }

    async fn wake(&self, job_id: &str, note: Option<&str>) -> Result<bool, QueueError> {
        let id = job_id.to_owned();
        let note = note.map(str::to_owned);
        self.call(move |store| store.wake(&id, note.as_deref()))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        let held = Held::of(lease);
        self.call(move |store| store.release(&held)).await
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, QueueError> {
        let id = job_id.to_owned();
        self.call(move |store| store.get(&id)).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let filter = filter.clone();
        self.call(move |store| store.list(&filter)).await
    }

    async fn retry_now(&self, job_id: &str) -> Result<bool, QueueError> {
        let id = job_id.to_owned();
        self.call(move |store| store.retry_now(&id)).await
    }

    async fn retry_all(&self, state: JobState) -> Result<u64, QueueError> {
        self.call(move |store| store.retry_all(state)).await
    }

    async fn stats(&self, at_risk_within: Duration) -> Result<QueueStats, QueueError> {
        self.call(move |store| store.stats(at_risk_within)).await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.call(|store| store.ping()).await
    }

    async fn export_jobs(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MigratedJob>, QueueError> {
        let after = after.map(str::to_owned);
        self.call(move |store| store.export_jobs(after.as_deref(), limit))
            .await
    }

    async fn import_jobs(&self, jobs: Vec<MigratedJob>) -> Result<u64, QueueError> {
        self.call(move |store| store.import_jobs(&jobs)).await
    }

    fn outbox(&self) -> Option<&dyn Outbox> {
        Some(self)
    }

    fn erasures(&self) -> Option<&dyn Erasures> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl Erasures for SqliteQueue {
    async fn record_ref(&self, lease: &Lease, blob: &BlobRef) -> Result<(), QueueError> {
        let (held, blob) = (Held::of(lease), blob.clone());
        self.call(move |store| store.record_ref(&held, &blob)).await
    }

    async fn restore_refs(&self, refs: &[BlobRef]) -> Result<(), QueueError> {
        let refs = refs.to_vec();
        self.call(move |store| store.restore_refs(&refs)).await
    }

    async fn index_complete(&self, store_id: &str) -> Result<bool, QueueError> {
        let store_id = store_id.to_owned();
        self.call(move |store| store.index_complete(&store_id))
            .await
    }

    async fn commit_erasure(
        &self,
        store_id: &str,
        account: &str,
        messages: &[ErasedMessage],
    ) -> Result<CommittedErasure, QueueError> {
        let (store_id, account, messages) =
            (store_id.to_owned(), account.to_owned(), messages.to_vec());
        self.call(move |store| store.commit_erasure(&store_id, &account, &messages))
            .await
    }

    async fn mark_index_complete(&self, store_id: &str) -> Result<(), QueueError> {
        let store_id = store_id.to_owned();
        self.call(move |store| store.mark_index_complete(&store_id))
            .await
    }

    async fn plan_erasure(
        &self,
        store_id: &str,
        filter: &ErasureFilter,
        dry_run: bool,
    ) -> Result<Result<ErasurePlan, ErasureRefused>, QueueError> {
        let (store_id, filter) = (store_id.to_owned(), filter.clone());
        self.call(move |store| store.plan_erasure(&store_id, &filter, dry_run))
            .await
    }

    async fn confirm_blob_erasure(
        &self,
        store_id: &str,
        blob_key: &str,
    ) -> Result<bool, QueueError> {
        let (store_id, blob_key) = (store_id.to_owned(), blob_key.to_owned());
        self.call(move |store| store.confirm_blob_erasure(&store_id, &blob_key))
            .await
    }

    async fn end_blob_erasure(&self, store_id: &str, blob_key: &str) -> Result<(), QueueError> {
        let (store_id, blob_key) = (store_id.to_owned(), blob_key.to_owned());
        self.call(move |store| store.end_blob_erasure(&store_id, &blob_key))
            .await
    }

    async fn unfinished_blob_erasures(&self, store_id: &str) -> Result<Vec<String>, QueueError> {
        let store_id = store_id.to_owned();
        self.call(move |store| store.unfinished_blob_erasures(&store_id))
            .await
    }

    async fn export_refs(
        &self,
        after: Option<&BlobRef>,
        limit: usize,
    ) -> Result<Vec<BlobRef>, QueueError> {
        let after = after.cloned();
        self.call(move |store| store.export_refs(after.as_ref(), limit))
            .await
    }

    async fn complete_indexes(&self) -> Result<Vec<String>, QueueError> {
        self.call(Store::complete_indexes).await
    }
}

#[async_trait::async_trait]
impl Outbox for SqliteQueue {
    async fn set_routes(&self, routes: &[Route]) -> Result<u64, QueueError> {
        let routes = routes.to_vec();
        self.call(move |store| store.set_routes(&routes)).await
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
        let target = target.to_owned();
        self.call(move |store| store.claim_deliveries(&target, max, hold))
            .await
    }

    async fn delivered(&self, claim: &Delivery) -> Result<(), QueueError> {
        let claim = claim.clone();
        self.call(move |store| store.delivered(&claim)).await
    }

    async fn delivery_failed(
        &self,
        claim: &Delivery,
        class: ErrorClass,
        error: &str,
    ) -> Result<Disposition, QueueError> {
        let (claim, error) = (claim.clone(), error.to_owned());
        self.call(move |store| store.delivery_failed(&claim, class, &error))
            .await
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, QueueError> {
        let filter = filter.clone();
        self.call(move |store| store.list_deliveries(&filter)).await
    }

    async fn retry_delivery(&self, id: &str) -> Result<Retried, QueueError> {
        let id = id.to_owned();
        self.call(move |store| store.retry_delivery(&id)).await
    }

    async fn pending_deliveries(&self) -> Result<BTreeMap<String, u64>, QueueError> {
        self.call(Store::pending_deliveries).await
    }
}
