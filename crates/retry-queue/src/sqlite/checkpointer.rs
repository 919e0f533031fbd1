//! Checkpoints off the database thread: a connection of its own copies the
//! WAL back into the database file while the database thread goes on.
//!
//! Why: SQLite checkpoints inside the commit that crosses
//! `wal_autocheckpoint` pages, and a checkpoint copies every page written
//! since the last one and fsyncs the database file; with random message
//! ids that is most of the writer's time, and every command behind that
//! commit waits it out. Here the database thread pokes this thread after
//! each commit and the checkpoint runs beside it (PASSIVE: it never blocks
//! the writer). The writer's own automatic checkpoint stays, at a larger
//! size, as the bound on the WAL should this thread fall behind.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::QueueError;

/// Least time between two checkpoints: each ends with an fsync of the
/// database file, which competes with the WAL's fsyncs for the disk.
const MIN_INTERVAL: Duration = Duration::from_millis(2);

pub(super) struct Checkpointer {
    /// `None` only while dropping: closing it stops the thread.
    pokes: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens the checkpointer's connection to the database at `db_path`
    /// (already in WAL mode) and starts its thread.
    pub(super) fn start(db_path: &Path) -> Result<Self, QueueError> {
        let conn = Connection::open(db_path).map_err(|e| {
            QueueError::Unavailable(format!(
                "cannot open {} for checkpoints: {e}",
                db_path.display()
            ))
        })?;
        let (pokes, poked) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpt".to_owned())
            .spawn(move || run(&conn, &poked))
            .map_err(|e| {
                QueueError::Unavailable(format!("cannot start the checkpoint thread: {e}"))
            })?;
        Ok(Self {
            pokes: Some(pokes),
            thread: Some(thread),
        })
    }

    /// Something was committed: checkpoint soon.
    pub(super) fn poke(&self) {
        if let Some(pokes) = &self.pokes {
            let _ = pokes.try_send(()); // a poke already waiting covers this one
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.pokes.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, poked: &mpsc::Receiver<()>) {
    while poked.recv().is_ok() {
        let started = std::time::Instant::now();
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            // The writer's automatic checkpoint still bounds the WAL.
            tracing::debug!(error = %e, "background checkpoint skipped");
        }
        std::thread::sleep(MIN_INTERVAL.saturating_sub(started.elapsed()));
    }
}
