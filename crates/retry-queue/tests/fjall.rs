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

/// The directory is one process's: a second open is refused with a
/// message that says why, and the first queue keeps working.
#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let options = FjallOptions::at(dir.path().join("queue"));
    let clock = Arc::new(archiver_core::SystemClock);
    let first = FjallQueue::open(&options, retry_queue::RetryPolicy::default(), clock.clone())
        .expect("first open");
    let second = FjallQueue::open(&options, retry_queue::RetryPolicy::default(), clock)
        .expect_err("a second open of a locked directory");
    let message = second.to_string();
    assert!(
        message.contains("locked by another process") && message.contains("queue"),
        "{message}"
    );
    first.ping().await.expect("the first queue still answers");
}
