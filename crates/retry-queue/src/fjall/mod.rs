//! The LSM backend: one fjall database (a directory), one OS thread that
//! owns it, commands over a bounded channel.
//!
//! # Why an LSM engine
//!
//! SQLite spends most of a durable enqueue rewriting B-tree pages: a random
//! message id puts each job on a page of its own in the table and in every
//! index (BENCHMARKS.md, fourth session). An LSM engine appends every write
//! to one journal and sorts indexes in memory, merging them into sorted
//! runs in the background, so an enqueue costs a journal append per key and
//! one fsync per group, whatever the keys are.
//!
//! # Keyspaces (all keys byte-ordered; times are 8 bytes big-endian with
//! the sign bit flipped, strings that other parts follow are length
//! prefixed, and the job or delivery id is the unprefixed tail)
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `jobs` | job id | the job (JSON: the record, backoff interval, lease token and expiry, woken flag, chat id, which live set holds it) |
//! | `ready` | deadline, next attempt, id | empty: live jobs that were due when written, in the order `lease` hands them out |
//! | `timers` | due time, id | empty: live jobs due later (a backoff, a park timeout, a lease expiry) |
//! | `by_state` | state tag, updated_at, id | empty: list by state, `retry_all`, the purge of old `done` jobs |
//! | `by_account` | account, updated_at, id | empty: list by account, an erasure's jobs |
//! | `by_message` | message id, id | empty: jobs *not* keyed `{account}:{message id}` (the others are found by id) |
//! | `live_deadline` | deadline, id | empty: jobs at risk |
//! | `pending_age` | created_at, id | empty: the oldest pending job |
//! | `counters` | `j`, account, state / `d`, target | i64: jobs per account and state; pending deliveries per target |
//! | `meta` | `format`, `routes` | the format version; the outbox routes (JSON) |
//! | `deliveries` | delivery id | the delivery (JSON) |
//! | `deliveries_due` | target, next attempt, id | empty: pending deliveries, due order |
//! | `deliveries_updated` | updated_at, id | empty: listing |
//! | `deliveries_by_job` | job id, id | empty: a job's deliveries |
//! | `blob_refs` | store, account, message id, blob key | chat id and message time (JSON) |
//! | `blob_refs_by_blob` | store, blob key, account, message id | empty: who names a blob |
//! | `blob_erasures` | store, blob key | i64: when the mark was set or renewed |
//! | `index_complete` | store | empty |
//!
//! Every index entry and counter is derived from the record it indexes, in
//! one place (`Store::put_job`, `Store::put_delivery`), from the record
//! before and after a change; the outbox trigger (a delivery per matching
//! route when a job becomes done or dead) is there too.
//!
//! # Atomicity and durability
//!
//! Each operation writes one batch, committed atomically across keyspaces
//! (a job, its index entries, its counters and its deliveries together);
//! enqueue requests waiting next to each other share one batch. The
//! thread runs the commands waiting in its channel in order, each
//! committing its batch into the journal's buffer (fjall's
//! `manual_journal_persist`), then writes and fsyncs the journal once
//! (`PersistMode::SyncData`) and only then answers every command of the
//! group: a 200 to a webhook is never sent for a job that a crash could
//! lose, and a burst of webhooks, leases and acks shares one fsync (group
//! commit, for acks as for enqueues). fjall runs one background worker for
//! flushes and compactions (two spun on two cores; BENCHMARKS.md).
//!
//! # Time and recovery
//!
//! A live job is in exactly one of `ready` and `timers`. `lease` first moves
//! the timers that have come due into `ready` (at most 10 000 a call), so
//! it never reads a job that is not due, and its cost does not grow with
//! the number of jobs waiting for a backoff: it reads the head of `ready`.
//! It starts at a floor kept in memory (`ReadyFloor`): every key below it
//! was taken, except the few written there since (a retry come due, an
//! earlier deadline), which are kept in a set and read first; so a lease
//! never reads back through the deletions of the jobs leased before it.
//! The floor is unknown at open: the first lease reads from the start.
//! A leased job's timer is its lease expiry, so after a `kill -9` the jobs
//! of dead workers come due when their leases run out, like any other
//! timer; nothing is scanned at open.
//!
//! # Retention
//!
//! `done` jobs are kept for the admin API and the dedup of redelivered
//! webhooks for `done_retention` (default 30 days) after they finished,
//! then deleted by lease calls (at most 1000 a call) with their finished
//! deliveries, so the database does not grow forever. Dead and erased
//! jobs are kept: they are an operator's to retry, or the record that a
//! redelivered message stays erased.

mod erasure;
mod jobs;
mod keys;
mod outbox;
mod store;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use archiver_core::{Clock, JobSpec};
use tokio::sync::{mpsc, oneshot};

use self::jobs::Held;
use self::store::{Store, StoreResult};
use crate::backend::{CHANNEL_CAPACITY, MAX_GROUP};
use crate::{Enqueued, QueueError, RetryPolicy};

/// How a command's reply is sent once its group is durable (or not).
type Answer = Box<dyn FnOnce(Result<(), &str>) + Send>;
/// The reply to one enqueue request.
type EnqueueReply = oneshot::Sender<Result<Vec<Enqueued>, QueueError>>;

/// What the thread runs.
enum Command {
    /// Kept apart from `Call` so that enqueues waiting together share one
    /// batch.
    Enqueue(Vec<JobSpec>, EnqueueReply),
    /// Anything else; the closure returns how to send its reply.
    Call(Box<dyn FnOnce(&mut Store) -> Answer + Send>),
}

/// Where the queue's fjall database is and how long it keeps `done` jobs.
#[derive(Debug, Clone)]
pub struct FjallOptions {
    /// The database directory (created with its parents).
    pub path: PathBuf,
    /// `done` jobs are deleted this long after they finished.
    pub done_retention: Duration,
}

impl FjallOptions {
    /// The default retention of `done` jobs: 30 days.
    pub const DEFAULT_DONE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

    /// A database at `path` with the default retention.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            done_retention: Self::DEFAULT_DONE_RETENTION,
        }
    }
}

/// The fjall [`JobQueue`]: embedded, one process, one directory.
///
/// Dropping it stops its thread after the commands already sent, and waits
/// for that, so the directory can be reopened at once.
pub struct FjallQueue {
    /// For `Debug` and error messages.
    path: PathBuf,
    /// `None` only while dropping: closing the channel stops the thread.
    commands: Option<mpsc::Sender<Command>>,
    /// Joined on drop.
    worker: Option<JoinHandle<()>>,
    /// Why the queue stopped, once an fsync failed.
    fault: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for FjallQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallQueue")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FjallQueue {
    /// Opens (or creates) the queue database and starts its thread. Needs
    /// no async runtime.
    pub fn open(
        options: &FjallOptions,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        policy.validate().map_err(QueueError::InvalidPolicy)?;
        let path = &options.path;
        std::fs::create_dir_all(path).map_err(|e| {
            QueueError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        let store =
            Store::open(path, clock, policy, options.done_retention).map_err(|e| match e {
                QueueError::Unavailable(msg) => {
                    QueueError::Unavailable(format!("{}: {msg}", path.display()))
                }
                other => other,
            })?;
        let fault = Arc::new(OnceLock::new());
        let (commands, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let thread_fault = Arc::clone(&fault);
        let worker = std::thread::Builder::new()
            .name("fjall-queue".to_owned())
            .spawn(move || run(store, receiver, &thread_fault))
            .map_err(|e| QueueError::Unavailable(format!("cannot start the queue thread: {e}")))?;
        Ok(Self {
            path: path.clone(),
            commands: Some(commands),
            worker: Some(worker),
            fault,
        })
    }

    /// Commits `jobs` (not empty) on the thread: one batch, fsynced with
    /// whatever else the thread runs in the same group.
    async fn enqueue_jobs(&self, jobs: Vec<JobSpec>) -> Result<Vec<Enqueued>, QueueError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.commands.as_ref().ok_or_else(|| self.stopped())?;
        sender
            .send(Command::Enqueue(jobs, reply))
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// The error of a call the thread will never answer.
    fn stopped(&self) -> QueueError {
        match self.fault.get() {
            Some(fault) => QueueError::Unavailable(fault.clone()),
            None => QueueError::Unavailable("the queue's database thread has stopped".to_owned()),
        }
    }

    /// Runs `f` on the thread and waits for its answer, sent once its
    /// group's fsync is done. If the caller stops waiting, `f` still runs
    /// (a lease taken that way simply expires).
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> StoreResult<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Call(Box::new(move |store: &mut Store| -> Answer {
            let result = f(store);
            Box::new(move |synced: Result<(), &str>| {
                let _ = reply.send(durable(synced).and(result));
            })
        }));
        let sender = self.commands.as_ref().ok_or_else(|| self.stopped())?;
        sender.send(command).await.map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }
}

impl Drop for FjallQueue {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The thread's loop: the commands waiting in the channel run in order
/// (enqueues next to each other in one batch), then one fsync makes them
/// all durable, then all are answered.
fn run(mut store: Store, mut commands: mpsc::Receiver<Command>, fault: &OnceLock<String>) {
    while let Some(first) = commands.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match commands.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let mut answers: Vec<Answer> = Vec::with_capacity(group.len());
        let mut enqueues = Vec::new();
        for command in group {
            match command {
                Command::Enqueue(jobs, reply) => enqueues.push((jobs, reply)),
                Command::Call(f) => {
                    answers.extend(enqueue_group(&mut store, std::mem::take(&mut enqueues)));
                    answers.push(f(&mut store));
                }
            }
        }
        answers.extend(enqueue_group(&mut store, enqueues));
        let synced = store.sync().map_err(|e| {
            let message = format!("the queue's journal could not be fsynced: {e}");
            tracing::error!(error = %message, "queue stopped");
            fault.get_or_init(|| message).as_str()
        });
        for answer in answers {
            answer(synced);
        }
        if synced.is_err() {
            // Nothing after a failed fsync can be promised durable.
            return;
        }
    }
}

/// Commits enqueue requests in one batch; the answer tells each its
/// outcomes (or the error, to all of them).
fn enqueue_group(store: &mut Store, requests: Vec<(Vec<JobSpec>, EnqueueReply)>) -> Option<Answer> {
    if requests.is_empty() {
        return None;
    }
    let (jobs, replies): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
    let outcomes = store.enqueue(jobs);
    Some(Box::new(move |synced: Result<(), &str>| match outcomes {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(durable(synced).map(|()| outcome));
            }
        }
        Err(e) => {
            // Nothing of the group was committed; every caller hears why.
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }))
}

/// A group's fsync outcome as the error its callers get.
fn durable(synced: Result<(), &str>) -> Result<(), QueueError> {
    synced.map_err(|fault| QueueError::Unavailable(fault.to_owned()))
}

crate::backend::thread_queue_impls!(FjallQueue);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use archiver_core::ManualClock;

    use super::*;
    use crate::JobQueue;
    use crate::conformance::{T0, job, job_of};

    /// A stored job this build cannot read fails the enqueue that meets it
    /// as corrupt (permanent), not as a passing unavailability.
    #[tokio::test]
    async fn an_unreadable_stored_job_fails_its_enqueue_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let options = FjallOptions::at(dir.path().join("queue"));
        let clock = Arc::new(ManualClock::new(T0));
        drop(FjallQueue::open(&options, RetryPolicy::default(), clock.clone()).unwrap());
        {
            let db = ::fjall::Database::builder(&options.path).open().unwrap();
            let jobs = db
                .keyspace("jobs", ::fjall::KeyspaceCreateOptions::default)
                .unwrap();
            jobs.insert(job("x").id, "not json").unwrap();
            db.persist(::fjall::PersistMode::SyncAll).unwrap();
        }
        let queue = FjallQueue::open(&options, RetryPolicy::default(), clock).unwrap();
        let error = queue.enqueue(vec![job("x")]).await.unwrap_err();
        assert!(matches!(error, QueueError::Corrupt(_)), "{error:?}");
    }

    /// A job written below the lease floor (an earlier deadline than
    /// everything leased so far) is the next one leased, and the floor
    /// still skips what was taken: earliest deadline first holds.
    #[tokio::test]
    async fn a_job_below_the_lease_floor_is_leased_first() {
        let dir = tempfile::tempdir().unwrap();
        let options = FjallOptions::at(dir.path().join("queue"));
        let clock = Arc::new(ManualClock::new(T0));
        let queue = FjallQueue::open(&options, RetryPolicy::default(), clock).unwrap();
        let hour = 3_600_000;
        let later: Vec<_> = (1..=20)
            .map(|i| job_of("acme", &format!("late-{i:02}"), T0 + i * hour))
            .collect();
        queue.enqueue(later).await.unwrap();
        let lease = std::time::Duration::from_secs(60);
        let first = queue.lease(10, lease).await.unwrap().leases;
        assert_eq!(first.last().unwrap().job.id, "acme:late-10");

        queue
            .enqueue(vec![job_of("acme", "urgent", T0 + hour / 2)])
            .await
            .unwrap();
        let next: Vec<String> = queue
            .lease(3, lease)
            .await
            .unwrap()
            .leases
            .into_iter()
            .map(|l| l.job.id)
            .collect();
        assert_eq!(next, ["acme:urgent", "acme:late-11", "acme:late-12"]);
    }
}
