//! The shared conformance suite, run against [`FjallQueue`] in a temporary
//! directory. Each case gets a fresh directory; reopening inside a case
//! reopens the same database.

use std::sync::Arc;

use retry_queue::conformance::QueueFactory;
use retry_queue::{FjallOptions, FjallQueue, JobQueue};

fn fjall_backend() -> impl QueueFactory {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    move |clock, policy| {
        // A nested path: open() creates the parent directories.
        let options = FjallOptions::at(dir.path().join("state").join("queue"));
        async move {
            let queue = FjallQueue::open(&options, policy, clock).expect("open fjall queue");
            Arc::new(queue) as Arc<dyn JobQueue>
        }
    }
}

retry_queue::conformance_suite!(fjall_backend);
