//! The SQLite backend's durability stage: the database thread commits with
//! `synchronous=NORMAL` (SQLite writes the WAL but does not fsync it at
//! commit) and hands each answer here; this stage fsyncs the WAL and only
//! then sends the answers.
//!
//! Why: with `synchronous=FULL` the database thread waits out every
//! commit's fsync before it starts the next transaction, so the inserts of
//! one group and the fsync of the previous one never overlap, and every
//! lease or ack pays an fsync of its own. Here the database thread goes on
//! with the next command at once, and one fsync answers everything that
//! was committed since the previous one.
//!
//! Why nothing acknowledged can be lost to a power cut:
//! - Between checkpoints the WAL only grows. SQLite fsyncs the WAL header
//!   whenever it starts the log over, and in a checkpoint fsyncs the WAL
//!   before copying it into the database file and the database file after,
//!   in NORMAL as in FULL. What NORMAL leaves unsynced is only the tail of
//!   the WAL: the frames of the latest commits.
//! - An `fdatasync` of the WAL file that starts after a commit returned
//!   covers that commit's frames and every earlier commit's, so after a
//!   power cut SQLite's recovery finds them with valid checksums.
//! - Answers are sent only after such an fsync succeeded, in commit order.
//!   A read answered while an earlier commit is still unsynced waits for
//!   that fsync too, so nobody is shown a change a power cut could undo.
//! - If an fsync fails, what the kernel still holds is unknown (Linux may
//!   drop the dirty pages of a failed fsync), so the waiting answers are
//!   `Unavailable` and the queue stops: every later call fails, until a
//!   restart reads back what the disk really has.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;

/// Sends one command's answer: `Ok` once its commit is durable, or the
/// reason it cannot be made durable.
pub(super) type Answer = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// Called before each fsync of the WAL; tests hold or fail syncs with it.
pub(super) type SyncHook = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// Set once, when an fsync of the WAL failed; the queue is out of service
/// from then on, and its errors quote this.
pub(super) type Fault = Arc<OnceLock<String>>;

/// An answer waiting for the fsync that covers its command.
struct Settling {
    answer: Answer,
    /// The command changed the database (else it only waits for the
    /// commands ahead of it).
    wrote: bool,
}

/// The database thread's end of the stage.
pub(super) struct WalSync {
    /// `None` only while dropping: closing it stops the stage's thread.
    settling: Option<mpsc::SyncSender<Settling>>,
    thread: Option<JoinHandle<()>>,
    /// Answers handed to the stage so far (counted on the database thread).
    handed: u64,
    /// Answers the stage has sent so far.
    answered: Arc<AtomicU64>,
    fault: Fault,
}

impl WalSync {
    /// Starts the stage's thread for the database at `db_path` (its WAL is
    /// `<db_path>-wal`). At most `capacity` answers wait; the database
    /// thread waits when the stage falls that far behind.
    pub(super) fn start(
        db_path: &Path,
        capacity: usize,
        hook: Option<SyncHook>,
        fault: Fault,
    ) -> io::Result<Self> {
        let mut wal_path = db_path.as_os_str().to_owned();
        wal_path.push("-wal");
        let (settling, waiting) = mpsc::sync_channel(capacity);
        let answered = Arc::new(AtomicU64::new(0));
        let stage = Stage {
            wal_path: PathBuf::from(wal_path),
            wal: None,
            hook,
            answered: answered.clone(),
            fault: fault.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sqlite-wal-sync".to_owned())
            .spawn(move || stage.run(&waiting))?;
        Ok(Self {
            settling: Some(settling),
            thread: Some(thread),
            handed: 0,
            answered,
            fault,
        })
    }

    /// Sends `answer` once what the command did is durable. A command that
    /// changed nothing, with nothing ahead of it unsynced, is answered at once.
    pub(super) fn settle(&mut self, wrote: bool, answer: Answer) {
        if let Some(fault) = self.fault.get() {
            answer(Err(fault));
            return;
        }
        if !wrote && self.answered.load(Ordering::Acquire) == self.handed {
            answer(Ok(()));
            return;
        }
        let Some(settling) = &self.settling else {
            return;
        };
        match settling.send(Settling { answer, wrote }) {
            Ok(()) => self.handed += 1,
            // The stage's thread is gone (it only stops when this end
            // closes, or by a panic): nothing can be made durable any more.
            Err(mpsc::SendError(settling)) => {
                let fault = self
                    .fault
                    .get_or_init(|| "the WAL sync thread has stopped".to_owned());
                (settling.answer)(Err(fault));
            }
        }
    }

    /// Set once an fsync of the WAL failed: the queue must stop.
    pub(super) fn fault(&self) -> Option<&String> {
        self.fault.get()
    }
}

impl Drop for WalSync {
    /// Answers everything handed over before returning, so that the
    /// connection closes only after the last fsync.
    fn drop(&mut self) {
        drop(self.settling.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The stage's thread: its WAL handle and what it reports back.
struct Stage {
    wal_path: PathBuf,
    /// Opened at the first fsync (SQLite creates the WAL at its first
    /// write) and kept: SQLite removes or replaces the WAL only when the
    /// last connection closes or leaves WAL mode, neither of which can
    /// happen while the database thread's connection is open.
    wal: Option<File>,
    hook: Option<SyncHook>,
    answered: Arc<AtomicU64>,
    fault: Fault,
}

impl Stage {
    /// Takes every answer waiting, fsyncs once if any of them wrote, sends
    /// them, and again, until the database thread closes its end.
    fn run(mut self, waiting: &mpsc::Receiver<Settling>) {
        while let Ok(first) = waiting.recv() {
            let mut batch = vec![first];
            batch.extend(waiting.try_iter());
            let synced = match self.fault.get() {
                Some(fault) => Err(fault.clone()),
                None if batch.iter().any(|s| s.wrote) => self.sync().map_err(|e| {
                    let fault = format!(
                        "fsync of {} failed: {e}; the queue has stopped, restart to recover",
                        self.wal_path.display()
                    );
                    tracing::error!(error = %fault, answers = batch.len(), "queue commits may not be durable");
                    let _ = self.fault.set(fault.clone());
                    fault
                }),
                None => Ok(()),
            };
            let answers = batch.len() as u64;
            for settling in batch {
                (settling.answer)(synced.as_ref().map(|_| ()).map_err(String::as_str));
            }
            self.answered.fetch_add(answers, Ordering::Release);
        }
    }

    /// `fdatasync` of the WAL file.
    fn sync(&mut self) -> io::Result<()> {
        if let Some(hook) = &self.hook {
            hook()?;
        }
        let wal = match &mut self.wal {
            Some(wal) => wal,
            wal @ None => wal.insert(File::open(&self.wal_path)?),
        };
        wal.sync_data()
    }
}
