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

/// `retry_all` of pending jobs, more of them than one internal chunk:
/// each job is requeued once and the call returns (a requeued pending job
/// stays pending, under a new key ahead of the scan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_of_many_pending_jobs_returns() {
    use retry_queue::conformance::{T0, job};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(archiver_core::ManualClock::new(T0));
    let queue = FjallQueue::open(
        &FjallOptions::at(dir.path().join("queue")),
        retry_queue::RetryPolicy::default(),
        clock.clone(),
    )
    .unwrap();
    const JOBS: usize = 12_345;
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(1000) {
        let specs = chunk.iter().map(|i| job(&format!("j{i:05}"))).collect();
        queue.enqueue(specs).await.unwrap();
    }
    clock.advance(std::time::Duration::from_secs(1));
    let requeued = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        queue.retry_all(retry_queue::JobState::Pending),
    )
    .await
    .expect("retry_all returns")
    .unwrap();
    assert!(
        (JOBS as u64..=2 * JOBS as u64).contains(&requeued),
        "each job requeued, at most once more: {requeued}"
    );
    let stats = queue.stats(std::time::Duration::ZERO).await.unwrap();
    assert_eq!(stats.by_state["pending"], JOBS as u64);
}
