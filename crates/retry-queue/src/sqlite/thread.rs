//! The database thread: the commands it takes, the loop that runs them in
//! order (folding waiting enqueues into one group commit), the state it
//! owns, and the error type used inside it.

use std::sync::Arc;

use archiver_core::{Clock, JobSpec, UnixMillis};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::checkpointer::Checkpointer;
use super::wal_sync::{Answer, WalSync};
use crate::backend::MAX_GROUP;
use crate::{Enqueued, QueueError, RetryPolicy};

pub(super) type Reply<T> = oneshot::Sender<Result<T, QueueError>>;

pub(super) struct EnqueueRequest {
    pub(super) jobs: Vec<JobSpec>,
    /// Each job's payload as stored, serialised by the caller so that the
    /// one database thread does not spend its time on it.
    pub(super) payloads: Vec<String>,
    pub(super) reply: Reply<Vec<Enqueued>>,
}

impl EnqueueRequest {
    pub(super) fn new(jobs: Vec<JobSpec>, reply: Reply<Vec<Enqueued>>) -> Self {
        let payloads = jobs.iter().map(|job| job.payload.to_string()).collect();
        Self {
            jobs,
            payloads,
            reply,
        }
    }
}

pub(super) enum Command {
    /// Kept apart from `Call` so that waiting enqueues can share a commit.
    Enqueue(EnqueueRequest),
    /// Anything else; the closure returns how to send its reply.
    Call(Box<dyn FnOnce(&mut Store) -> Answer + Send>),
}

/// The thread's loop: one command at a time, in arrival order, except that
/// an enqueue takes every enqueue queued right behind it into its
/// transaction. Each command's answer goes to the WAL sync stage, which
/// sends it once the command's commit is durable.
pub(super) fn run(mut store: Store, mut commands: mpsc::Receiver<Command>) {
    let mut next = None;
    loop {
        if store.sync.fault().is_some() {
            // An fsync failed: stop; every waiting and later call hears why.
            return;
        }
        let command = match next.take() {
            Some(command) => command,
            None => match commands.blocking_recv() {
                Some(command) => command,
                None => return, // every sender dropped: the queue was dropped
            },
        };
        let changes_before = store.conn.total_changes();
        let answer = match command {
            Command::Call(f) => f(&mut store),
            Command::Enqueue(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match commands.try_recv() {
                        Ok(Command::Enqueue(request)) => group.push(request),
                        Ok(other) => {
                            // Keep the order: it runs right after this group.
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                store.enqueue_group(group)
            }
        };
        let wrote = store.conn.total_changes() != changes_before;
        store.sync.settle(wrote, answer);
        if wrote {
            store.checkpointer.poke();
        }
    }
}

/// The connection and everything the operations need; lives on the thread.
pub(super) struct Store {
    /// Declared before `conn`, so it is dropped first: its last fsync
    /// happens before the connection closes.
    pub(super) sync: WalSync,
    /// Also dropped before `conn`.
    pub(super) checkpointer: Checkpointer,
    pub(super) conn: Connection,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) policy: RetryPolicy,
    /// Enqueue transactions committed so far (group commit is observable in
    /// traces and tests).
    pub(super) enqueue_commits: u64,
}

impl Store {
    pub(super) fn now(&self) -> UnixMillis {
        self.clock.now_ms()
    }
}

// Errors inside the thread: database errors and queue errors, so that `?`
// works on both; turned into a `QueueError` before leaving the thread.

pub(super) enum StoreError {
    Db(rusqlite::Error),
    Queue(QueueError),
}

pub(super) type StoreResult<T> = Result<T, StoreError>;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<QueueError> for StoreError {
    fn from(e: QueueError) -> Self {
        StoreError::Queue(e)
    }
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Queue(e) => e,
            StoreError::Db(
                e @ (rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)),
            ) => QueueError::Corrupt(e.to_string()),
            StoreError::Db(e) => QueueError::Unavailable(e.to_string()),
        }
    }
}
