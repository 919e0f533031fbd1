//! The shared conformance suite, run against [`SqliteQueue`] on a temporary
//! file. Each case gets a fresh directory; reopening inside a case reopens
//! the same file.

use std::sync::Arc;

use retry_queue::conformance::QueueFactory;
use retry_queue::{JobQueue, SqliteQueue};

fn sqlite_backend() -> impl QueueFactory {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    move |clock, policy| {
        // A nested path: open() creates the parent directory.
        let path = dir.path().join("state").join("queue.db");
        async move {
            let queue = SqliteQueue::open(&path, policy, clock).expect("open sqlite queue");
            Arc::new(queue) as Arc<dyn JobQueue>
        }
    }
}

retry_queue::conformance_suite!(sqlite_backend);
