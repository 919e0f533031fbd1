//! The shared conformance suite, run against [`PgQueue`] on the PostgreSQL
//! test server (`MEDIA_ARCHIVER_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Each case gets a schema of
//! its own, dropped afterwards, so cases run in parallel; reopening inside a
//! case reconnects to the same schema. Without a reachable server every case
//! returns at once with a notice, unless `MEDIA_ARCHIVER_REQUIRE_POSTGRES=1`.

use std::sync::Arc;

use retry_queue::conformance::QueueFactory;
use retry_queue::conformance::pg::PgTestDatabase;
use retry_queue::{JobQueue, PgQueue};

fn postgres_backend() -> Option<impl QueueFactory> {
    let database = Arc::new(PgTestDatabase::create()?);
    Some(move |clock, policy| {
        let options = database.options();
        async move {
            let queue = PgQueue::connect_with(options, policy, clock)
                .await
                .expect("connect to the PostgreSQL queue");
            Arc::new(queue) as Arc<dyn JobQueue>
        }
    })
}

retry_queue::conformance_suite!(optional postgres_backend);

/// Two queue handles on one schema are two replicas: racing over the same
/// jobs with `FOR UPDATE SKIP LOCKED`, each job goes to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_lease_disjoint_jobs() {
    use std::collections::HashSet;
    use std::time::Duration;

    use archiver_core::ManualClock;
    use retry_queue::RetryPolicy;
    use retry_queue::conformance::{T0, job};

    let Some(database) = PgTestDatabase::create() else {
        return;
    };
    let clock = ManualClock::new(T0); // the jobs' deadlines are relative to T0
    let open = || {
        PgQueue::connect_with(
            database.options(),
            RetryPolicy::default(),
            Arc::new(clock.clone()),
        )
    };
    let (a, b) = (
        Arc::new(open().await.unwrap()),
        Arc::new(open().await.unwrap()),
    );
    let jobs = (0..600).map(|i| job(&format!("r-{i}"))).collect();
    a.enqueue(jobs).await.unwrap();

    let drain = |queue: Arc<PgQueue>| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let leases = queue
                    .lease(7, Duration::from_secs(60))
                    .await
                    .unwrap()
                    .leases;
                if leases.is_empty() {
                    return mine;
                }
                for lease in leases {
                    queue.complete(&lease).await.unwrap();
                    mine.push(lease.job.id);
                }
            }
        })
    };
    let workers: Vec<_> = [a.clone(), a.clone(), b.clone(), b.clone()]
        .into_iter()
        .map(drain)
        .collect();
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for worker in workers {
        let mine = worker.await.unwrap();
        per_worker.push(mine.len());
        all.extend(mine);
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 600, "each job leased and completed once");
    assert_eq!(unique.len(), 600);
    assert!(
        per_worker.iter().filter(|n| **n > 0).count() >= 2,
        "the work was shared: {per_worker:?}"
    );
}

/// Concurrent enqueues share transactions: a burst of single-job webhooks
/// costs far fewer commits than webhooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_commits() {
    use archiver_core::SystemClock;
    use retry_queue::conformance::job;
    use retry_queue::{Enqueued, RetryPolicy};

    let Some(database) = PgTestDatabase::create() else {
        return;
    };
    let queue = Arc::new(
        PgQueue::connect_with(
            database.options(),
            RetryPolicy::default(),
            Arc::new(SystemClock),
        )
        .await
        .unwrap(),
    );
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.enqueue(vec![job(&format!("burst-{i}"))]).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), [Enqueued::New]);
    }
    let commits = queue.enqueue_commits();
    assert!(
        (1..200).contains(&commits),
        "400 concurrent enqueues took {commits} commits"
    );
}
