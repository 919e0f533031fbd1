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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use archiver_core::{Clock, JobSpec};
use tokio::sync::{mpsc, oneshot};

use self::checkpointer::Checkpointer;
use self::lease::Held;
use self::schema::open_database;
use self::thread::{Command, EnqueueRequest, Store, StoreResult, run};
use self::wal_sync::{Answer, Fault, SyncHook, WalSync};
use crate::backend::CHANNEL_CAPACITY;
use crate::{Enqueued, QueueError, RetryPolicy};

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

    /// Commits `jobs` (not empty) in the next group commit.
    async fn enqueue_jobs(&self, jobs: Vec<JobSpec>) -> Result<Vec<Enqueued>, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Command::Enqueue(EnqueueRequest::new(jobs, reply)))
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
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

crate::backend::thread_queue_impls!(SqliteQueue);
