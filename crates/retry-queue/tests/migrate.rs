//! `queue migrate` between real backends: SQLite -> fjall -> PostgreSQL
//! keeps every job in its state (a leased one arrives pending), every
//! blob reference and every complete-index mark; a second run adds
//! nothing; a run over a half-copied target finishes the copy.
//!
//! The PostgreSQL leg needs the test server (`MEDIA_ARCHIVER_REQUIRE_POSTGRES=1`
//! makes it mandatory, as in CI).

use std::sync::Arc;
use std::time::Duration;

use archiver_core::{ErrorClass, ManualClock};
use retry_queue::conformance::pg::PgTestDatabase;
use retry_queue::conformance::{T0, job, job_of, test_policy};
use retry_queue::{
    BlobRef, DeliveryFilter, ErasureFilter, FjallOptions, FjallQueue, JobQueue, JobState,
    MigratedJob, NotifyEvent, PgQueue, Route, SqliteQueue, migrate,
};

const LEASE: Duration = Duration::from_secs(300);
/// More than one page of the copy.
const BULK: usize = 2_500;

/// Every job of a queue, in id order, with leased ones as an import makes
/// them (pending).
async fn everything(queue: &dyn JobQueue) -> Vec<MigratedJob> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map(|j: &MigratedJob| j.job.id.clone());
        let page = queue.export_jobs(after.as_deref(), 700).await.unwrap();
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    all.sort_by(|a, b| a.job.id.cmp(&b.job.id));
    all
}

fn as_imported(mut jobs: Vec<MigratedJob>) -> Vec<MigratedJob> {
    for job in &mut jobs {
        if job.job.state == JobState::Leased {
            job.job.state = JobState::Pending;
        }
    }
    jobs
}

async fn refs(queue: &dyn JobQueue) -> Vec<BlobRef> {
    let erasures = queue.erasures().unwrap();
    let mut all: Vec<BlobRef> = Vec::new();
    loop {
        let page = erasures.export_refs(all.last(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    all.sort_by(|a, b| {
        (&a.store, &a.message_id, &a.blob_key).cmp(&(&b.store, &b.message_id, &b.blob_key))
    });
    all
}

fn blob(job_key: &str, blob_key: &str) -> BlobRef {
    let spec = job(job_key);
    BlobRef {
        store: "fs:/archive".to_owned(),
        blob_key: blob_key.to_owned(),
        account: spec.account,
        message_id: spec.message_id,
        chat_id: spec.chat_id,
        message_at: spec.message_at,
    }
}

/// A source queue with a job in every state, a backoff stored, blob refs
/// and a complete index.
async fn fill(queue: &dyn JobQueue) {
    let erasures = queue.erasures().unwrap();
    erasures.mark_index_complete("fs:/archive").await.unwrap();
    // One at a time, so that each is the only ready job when leased.
    for key in ["leased", "waiting", "done", "dead", "backoff"] {
        queue.enqueue(vec![job(key)]).await.unwrap();
        let lease = queue.lease(1, LEASE).await.unwrap().leases.remove(0);
        assert_eq!(lease.job.id, job(key).id);
        match key {
            "leased" => erasures
                .record_ref(&lease, &blob(key, "blobs/aa"))
                .await
                .unwrap(),
            "waiting" => queue.park(&lease, T0 + 3_600_000).await.unwrap(),
            "done" => {
                erasures
                    .record_ref(&lease, &blob(key, "blobs/bb"))
                    .await
                    .unwrap();
                queue.complete(&lease).await.unwrap();
            }
            "dead" => {
                queue
                    .fail(&lease, ErrorClass::Permanent, "HTTP 404")
                    .await
                    .unwrap();
            }
            _ => {
                queue
                    .fail(&lease, ErrorClass::Transient, "HTTP 503")
                    .await
                    .unwrap();
            }
        }
    }
    let mut erased = job_of("other", "gone", T0 + 86_400_000);
    erased.chat_id = Some("chat-to-erase".to_owned());
    let mut specs = vec![job("pending"), erased];
    specs.extend((0..BULK).map(|i| job(&format!("bulk-{i:05}"))));
    queue.enqueue(specs).await.unwrap();
    erasures
        .restore_refs(&[blob("done", "blobs/cc")])
        .await
        .unwrap();
    let filter = ErasureFilter {
        account: "other".to_owned(),
        chat_id: Some("chat-to-erase".to_owned()),
        ..ErasureFilter::default()
    };
    erasures
        .plan_erasure("fs:/archive", &filter, false)
        .await
        .unwrap()
        .unwrap();
}

fn fjall(dir: &std::path::Path, clock: &ManualClock) -> Arc<dyn JobQueue> {
    Arc::new(
        FjallQueue::open(
            &FjallOptions::at(dir),
            test_policy(),
            Arc::new(clock.clone()),
        )
        .expect("fjall"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_fjall_to_postgres_keeps_every_job_ref_and_mark() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let sqlite: Arc<dyn JobQueue> = Arc::new(
        SqliteQueue::open(
            &dir.path().join("q.db"),
            test_policy(),
            Arc::new(clock.clone()),
        )
        .unwrap(),
    );
    fill(sqlite.as_ref()).await;
    let source = everything(sqlite.as_ref()).await;
    let states: Vec<JobState> = source.iter().map(|j| j.job.state).collect();
    for state in JobState::ALL {
        assert!(states.contains(&state), "the source holds a {state} job");
    }
    assert!(
        source.iter().any(|j| j.backoff_interval_ms.is_some()),
        "a stored backoff is part of what is copied"
    );

    // The target has a route: an import must not tell the app about the
    // jobs' past transitions.
    let fjall = fjall(&dir.path().join("fjall"), &clock);
    let route = Route {
        target: "app".to_owned(),
        event: NotifyEvent::Archived,
        account: None,
        max_age: Duration::from_secs(3600),
    };
    fjall.outbox().unwrap().set_routes(&[route]).await.unwrap();
    let mut pages = Vec::new();
    let copied = migrate(sqlite.as_ref(), fjall.as_ref(), &mut |n| pages.push(n))
        .await
        .unwrap();
    assert_eq!(copied.jobs, source.len() as u64);
    assert_eq!(copied.jobs_new, source.len() as u64);
    assert_eq!(copied.refs, 3);
    assert_eq!(copied.complete_indexes, 1);
    assert!(pages.len() >= 3, "the copy pages: {pages:?}");
    assert_eq!(
        everything(fjall.as_ref()).await,
        as_imported(source.clone())
    );
    assert_eq!(refs(fjall.as_ref()).await, refs(sqlite.as_ref()).await);
    assert!(
        fjall
            .erasures()
            .unwrap()
            .index_complete("fs:/archive")
            .await
            .unwrap()
    );
    let told = fjall
        .outbox()
        .unwrap()
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert!(told.is_empty(), "no event for an imported job: {told:?}");
    let stats = fjall.stats(Duration::ZERO).await.unwrap();
    assert_eq!(stats.by_state["pending"], (BULK + 3) as u64, "{stats:?}");
    assert_eq!(stats.by_state["leased"], 0);

    // Again: nothing new.
    let again = migrate(sqlite.as_ref(), fjall.as_ref(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!((again.jobs, again.jobs_new), (source.len() as u64, 0));

    // The job that was leased in the source is ready in the target.
    let mut leased = Vec::new();
    loop {
        let got = fjall.lease(1000, LEASE).await.unwrap().leases;
        if got.is_empty() {
            break;
        }
        leased.extend(got.into_iter().map(|l| l.job.id));
    }
    assert!(leased.contains(&job("leased").id), "its worker is gone");

    // fjall -> PostgreSQL, from a fresh copy of the SQLite source.
    let Some(database) = PgTestDatabase::create() else {
        return;
    };
    let fjall = fjall_copy(&dir.path().join("fjall-2"), &clock, sqlite.as_ref()).await;
    let pg: Arc<dyn JobQueue> = Arc::new(
        PgQueue::connect_with(database.options(), test_policy(), Arc::new(clock.clone()))
            .await
            .unwrap(),
    );
    let copied = migrate(fjall.as_ref(), pg.as_ref(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(copied.jobs_new, source.len() as u64);
    assert_eq!(everything(pg.as_ref()).await, as_imported(source));
    assert_eq!(refs(pg.as_ref()).await, refs(sqlite.as_ref()).await);
    assert!(
        pg.erasures()
            .unwrap()
            .index_complete("fs:/archive")
            .await
            .unwrap()
    );
}

async fn fjall_copy(
    dir: &std::path::Path,
    clock: &ManualClock,
    from: &dyn JobQueue,
) -> Arc<dyn JobQueue> {
    let queue = fjall(dir, clock);
    migrate(from, queue.as_ref(), &mut |_| {}).await.unwrap();
    queue
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let source = fjall(&dir.path().join("source"), &clock);
    fill(source.as_ref()).await;
    let total = everything(source.as_ref()).await.len() as u64;

    // A run that died after its first page.
    let sqlite: Arc<dyn JobQueue> = Arc::new(
        SqliteQueue::open(
            &dir.path().join("t.db"),
            test_policy(),
            Arc::new(clock.clone()),
        )
        .unwrap(),
    );
    let first = source.export_jobs(None, 1000).await.unwrap();
    assert_eq!(sqlite.import_jobs(first).await.unwrap(), 1000);

    let rest = migrate(source.as_ref(), sqlite.as_ref(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!((rest.jobs, rest.jobs_new), (total, total - 1000));
    assert_eq!(
        everything(sqlite.as_ref()).await,
        as_imported(everything(source.as_ref()).await)
    );
    let stats = sqlite.stats(Duration::ZERO).await.unwrap();
    assert_eq!(
        stats.by_state.values().sum::<u64>(),
        total,
        "the counters count each job once: {stats:?}"
    );
}

/// An erasure that has not finished deleting its blobs (it died between
/// its commit and the deletes) stops a copy before anything is copied:
/// its marks are the only record of those blobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_erasure_stops_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let source = fjall(&dir.path().join("source"), &clock);
    fill(source.as_ref()).await;
    let erasures = source.erasures().unwrap();
    let done = job("done");
    let committed = erasures
        .commit_erasure(
            "fs:/archive",
            &done.account,
            &[retry_queue::ErasedMessage {
                message_id: done.message_id.clone(),
                message_at: done.message_at,
            }],
        )
        .await
        .unwrap();
    assert_eq!(committed.blobs_to_delete.len(), 2);

    let target = fjall(&dir.path().join("target"), &clock);
    let refused = migrate(source.as_ref(), target.as_ref(), &mut |_| {})
        .await
        .expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("has not finished deleting 2 blob(s)"),
        "{refused}"
    );
    assert!(
        everything(target.as_ref()).await.is_empty(),
        "nothing copied"
    );

    for blob in committed.blobs_to_delete {
        erasures
            .end_blob_erasure("fs:/archive", &blob)
            .await
            .unwrap();
    }
    migrate(source.as_ref(), target.as_ref(), &mut |_| {})
        .await
        .unwrap();
}
