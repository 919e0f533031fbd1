//! The SQLite backend's own tests (the shared behaviour is in the
//! conformance suite): schema and migrations, query plans, kept counts,
//! group commit, durability and failure of the helper threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use archiver_core::{ManualClock, ProviderKind};
use rusqlite::{Connection, params_from_iter};

use super::admin::list_sql;
use super::schema::{SCHEMA_V1, SCHEMA_VERSION, WAL_AUTOCHECKPOINT_PAGES, open_database};
use super::*;
use crate::backend::COLUMNS;
use crate::{ErrorClass, JobFilter, JobQueue, JobState, Lease};

fn spec(id: &str) -> JobSpec {
    JobSpec {
        id: id.to_owned(),
        account: "acme".to_owned(),
        provider: ProviderKind::Cloudapi,
        message_id: format!("wamid.{id}"),
        media_id: Some(id.to_owned()),
        chat_id: None,
        message_at: 0,
        deadline: i64::MAX / 2,
        payload: serde_json::json!({"media": id}),
    }
}

trait ToSpec {
    fn job_spec(&self) -> JobSpec;
}

impl ToSpec for Lease {
    fn job_spec(&self) -> JobSpec {
        JobSpec {
            id: self.job.id.clone(),
            account: self.job.account.clone(),
            provider: self.job.provider,
            message_id: self.job.message_id.clone(),
            media_id: self.job.media_id.clone(),
            chat_id: None,
            message_at: self.job.message_at,
            deadline: self.job.deadline,
            payload: self.job.payload.clone(),
        }
    }
}

fn open(dir: &Path) -> SqliteQueue {
    SqliteQueue::open(
        &dir.join("q.db"),
        RetryPolicy::default(),
        Arc::new(ManualClock::new(1_000)),
    )
    .unwrap()
}

fn plan(conn: &Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let n = stmt.parameter_count();
    let rows = stmt
        .query_map(params_from_iter(std::iter::repeat_n(0, n)), |row| {
            row.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows.join("\n")
}

#[test]
fn hot_queries_use_their_indexes_and_never_scan_history() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_database(&dir.path().join("q.db")).unwrap_or_else(|_| panic!("open"));

    let lease = plan(
        &conn,
        &format!(
            "SELECT {COLUMNS} FROM jobs WHERE due_at IS NOT NULL AND due_at <= ?1
             ORDER BY deadline, next_attempt_at LIMIT ?2"
        ),
    );
    assert!(lease.contains("INDEX jobs_ready"), "{lease}");
    assert!(!lease.contains("TEMP B-TREE"), "{lease}");

    let expire = plan(
        &conn,
        "UPDATE jobs SET state = 'dead'
         WHERE due_at IS NOT NULL AND due_at <= ?1 AND deadline < ?1",
    );
    assert!(expire.contains("INDEX jobs_ready"), "{expire}");

    let at_risk = plan(
        &conn,
        "SELECT COUNT(*) FROM jobs WHERE due_at IS NOT NULL AND deadline <= ?1",
    );
    assert!(at_risk.contains("INDEX jobs_ready"), "{at_risk}");

    let oldest = plan(
        &conn,
        "SELECT MIN(created_at) FROM jobs INDEXED BY jobs_pending_age WHERE state = 'pending'",
    );
    assert!(oldest.contains("INDEX jobs_pending_age"), "{oldest}");

    let list = plan(
        &conn,
        &format!("SELECT {COLUMNS} FROM jobs ORDER BY updated_at DESC LIMIT ?1"),
    );
    assert!(list.contains("INDEX jobs_updated"), "{list}");
    assert!(!list.contains("TEMP B-TREE"), "{list}");
    let by_state = plan(
        &conn,
        &format!("SELECT {COLUMNS} FROM jobs WHERE state = ?1 ORDER BY updated_at DESC LIMIT ?2"),
    );
    assert!(by_state.contains("INDEX jobs_state"), "{by_state}");
    assert!(!by_state.contains("TEMP B-TREE"), "{by_state}");
    for filter in [
        JobFilter {
            message_id: Some("m".into()),
            ..JobFilter::default()
        },
        JobFilter {
            message_id: Some("m".into()),
            account: Some("a".into()),
            state: Some(JobState::Done),
            ..JobFilter::default()
        },
    ] {
        let by_message = plan(&conn, &list_sql(&filter).0);
        assert!(by_message.contains("INDEX jobs_message"), "{by_message}");
        assert!(
            by_message.contains("sqlite_autoindex_jobs_1 (id=?)"),
            "{by_message}"
        );
        assert!(!by_message.contains("SCAN jobs"), "{by_message}");
        assert!(!by_message.contains("INDEX jobs_state"), "{by_message}");
    }
}

#[tokio::test]
async fn kept_counts_match_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let mut specs: Vec<JobSpec> = (0..12).map(|i| spec(&format!("acme:{i}"))).collect();
    for i in 0..5 {
        let mut other = spec(&format!("globex:{i}"));
        other.account = "globex".to_owned();
        specs.push(other);
    }
    specs.push(spec("acme:0")); // duplicate: no count
    queue.enqueue(specs).await.unwrap();
    let leases = queue
        .lease(10, Duration::from_secs(60))
        .await
        .unwrap()
        .leases;
    queue.complete(&leases[0]).await.unwrap();
    queue
        .fail(&leases[1], ErrorClass::Permanent, "gone")
        .await
        .unwrap();
    queue
        .fail(&leases[2], ErrorClass::Transient, "later")
        .await
        .unwrap();
    queue.park(&leases[3], i64::MAX / 4).await.unwrap();
    queue.release(&leases[4]).await.unwrap();
    queue
        .renew(&leases[5], Duration::from_secs(60))
        .await
        .unwrap();
    queue.enqueue(vec![leases[1].job_spec()]).await.unwrap(); // revive
    queue.retry_all(JobState::Waiting).await.unwrap();

    let (kept, counted) = queue
        .call(|store| {
            let read = |sql: &str| -> rusqlite::Result<Vec<(String, String, i64)>> {
                store
                    .conn
                    .prepare(sql)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            };
            Ok((
                read("SELECT account, state, n FROM job_counts WHERE n > 0 ORDER BY 1, 2")?,
                read("SELECT account, state, COUNT(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(kept, counted);
    let stats = queue.stats(Duration::ZERO).await.unwrap();
    assert_eq!(stats.by_state.values().sum::<u64>(), 17);
    assert_eq!(stats.by_state["leased"], 5);
}

#[test]
fn open_creates_the_schema_once_and_refuses_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/q.db");
    let conn = open_database(&{
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path.clone()
    })
    .unwrap_or_else(|_| panic!("open"));
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        sync, 1,
        "synchronous=NORMAL: the WAL sync stage fsyncs before answering"
    );
    drop(conn);
    assert!(open_database(&path).is_ok(), "reopening is idempotent");

    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    match open_database(&path).map_err(QueueError::from) {
        Err(QueueError::Corrupt(msg)) => assert!(msg.contains("99"), "{msg}"),
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_version_1_database_is_migrated_to_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(SCHEMA_V1).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    drop(conn);
    let conn = open_database(&path).unwrap_or_else(|_| panic!("open"));
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let insert_trigger: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_count_insert'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        insert_trigger, 0,
        "v3 counts inserts per group, not per row"
    );
    let checkpoint_pages: i64 = conn
        .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
        .unwrap();
    assert_eq!(checkpoint_pages, WAL_AUTOCHECKPOINT_PAGES);
    let message_index: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'jobs_message'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        message_index.contains("WHERE id <> account || ':' || message_id"),
        "v4 indexes only jobs not keyed by their message id: {message_index}"
    );
}

#[test]
fn open_rejects_an_invalid_policy_and_creates_parent_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let bad = RetryPolicy {
        multiplier: 0.0,
        ..RetryPolicy::default()
    };
    let err = SqliteQueue::open(&dir.path().join("q.db"), bad, Arc::new(ManualClock::new(0)))
        .unwrap_err();
    assert!(matches!(err, QueueError::InvalidPolicy(_)), "{err}");

    let path = dir.path().join("a/b/q.db");
    let queue =
        SqliteQueue::open(&path, RetryPolicy::default(), Arc::new(ManualClock::new(0))).unwrap();
    drop(queue);
    assert!(path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_waiting_in_the_channel_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(open(dir.path()));
    let commits = || {
        let queue = queue.clone();
        async move { queue.call(|store| Ok(store.enqueue_commits)).await.unwrap() }
    };
    assert_eq!(commits().await, 0);

    // Hold the database thread until 20 enqueues wait in the channel.
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let blocker = {
        let queue = queue.clone();
        tokio::spawn(async move {
            queue
                .call(move |_| {
                    let _ = started_tx.send(());
                    let _ = go_rx.recv();
                    Ok(())
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.enqueue(vec![spec(&format!("acme:{i}"))]).await })
        })
        .collect();
    let sender = queue.sender().unwrap();
    while sender.max_capacity() - sender.capacity() < 20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    go_tx.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), vec![Enqueued::New]);
    }
    assert_eq!(commits().await, 1, "20 waiting enqueues, one transaction");
}

/// A sync hook that blocks every WAL fsync until the test releases it,
/// and says when a sync is waiting.
struct HeldSyncs {
    waiting: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: std::sync::mpsc::Sender<()>,
    syncs: Arc<std::sync::atomic::AtomicUsize>,
}

fn held_syncs() -> (SyncHook, HeldSyncs) {
    let (waiting_tx, waiting) = tokio::sync::mpsc::unbounded_channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = syncs.clone();
    let hook: SyncHook = Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let _ = waiting_tx.send(());
        let released = release_rx
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .recv_timeout(Duration::from_secs(30));
        released.map_err(|_| std::io::Error::other("the test never released the sync"))
    });
    (
        hook,
        HeldSyncs {
            waiting,
            release,
            syncs,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_answered_before_the_wal_fsync_that_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, mut held) = held_syncs();
    let queue = Arc::new(
        SqliteQueue::open_with_sync_hook(
            &dir.path().join("q.db"),
            RetryPolicy::default(),
            Arc::new(ManualClock::new(1_000)),
            Some(hook),
        )
        .unwrap(),
    );
    // Nothing committed yet: a read is answered without an fsync.
    assert!(queue.get("acme:1").await.unwrap().is_none());
    assert_eq!(held.syncs.load(Ordering::SeqCst), 0);

    let enqueue = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.enqueue(vec![spec("acme:1")]).await })
    };
    // The group is committed and its fsync is held back: no answer yet,
    // and a read of the job waits behind it (it must not show a job a
    // power cut could still take away).
    tokio::time::timeout(Duration::from_secs(30), held.waiting.recv())
        .await
        .expect("the enqueue's commit was never synced")
        .unwrap();
    let read = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.get("acme:1").await })
    };
    tokio::task::yield_now().await;
    assert!(!enqueue.is_finished(), "answered before its fsync");
    assert!(!read.is_finished(), "showed an unsynced commit");

    held.release.send(()).unwrap();
    assert_eq!(enqueue.await.unwrap().unwrap(), vec![Enqueued::New]);
    let job = read.await.unwrap().unwrap().expect("the job, once durable");
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(
        held.syncs.load(Ordering::SeqCst),
        1,
        "one fsync answered both"
    );

    // Everything is durable again: reads need no fsync.
    queue.stats(Duration::from_secs(60)).await.unwrap();
    assert_eq!(held.syncs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_fsync_fails_its_answers_and_stops_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let hook: SyncHook = Arc::new(|| Err(std::io::Error::other("injected I/O error")));
    let queue = SqliteQueue::open_with_sync_hook(
        &path,
        RetryPolicy::default(),
        Arc::new(ManualClock::new(1_000)),
        Some(hook),
    )
    .unwrap();
    let unavailable = |result: Result<(), QueueError>| match result {
        Err(QueueError::Unavailable(msg)) => {
            assert!(msg.contains("injected I/O error"), "{msg}");
            assert!(msg.contains("restart"), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    };
    // The webhook hears 503, so its provider redelivers.
    unavailable(queue.enqueue(vec![spec("acme:1")]).await.map(|_| ()));
    // Nothing is trusted after a failed fsync: every call fails alike.
    unavailable(queue.ping().await);
    unavailable(queue.enqueue(vec![spec("acme:2")]).await.map(|_| ()));
    drop(queue);

    // A restart reads back what the disk has, and serves again.
    let queue = open(dir.path());
    queue.ping().await.unwrap();
    assert_eq!(
        queue.enqueue(vec![spec("acme:3")]).await.unwrap(),
        vec![Enqueued::New]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_pages_are_checkpointed_by_their_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    queue.ping().await.unwrap();
    let db_file = dir.path().join("q.db");
    let empty = std::fs::metadata(&db_file).unwrap().len();
    // Far below the writer's own checkpoint size (WAL_AUTOCHECKPOINT_PAGES).
    for group in 0..20 {
        let jobs = (0..10)
            .map(|i| spec(&format!("acme:{group}-{i}")))
            .collect();
        queue.enqueue(jobs).await.unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("q.db-wal"))
        .unwrap()
        .len();
    assert!(
        wal < 4096 * WAL_AUTOCHECKPOINT_PAGES.unsigned_abs() / 2,
        "{wal}"
    );
    // The jobs reach the database file without any further commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&db_file).unwrap().len() <= empty {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was checkpointed into the database file"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        queue.stats(Duration::ZERO).await.unwrap().by_state["pending"],
        200
    );
}

#[tokio::test]
async fn a_stopped_thread_makes_every_call_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let panicked = Arc::new(AtomicBool::new(false));
    let flag = panicked.clone();
    // A bug that panics on the thread takes the queue out of service
    // visibly (ping fails, /readyz says so) rather than silently.
    let result = queue
        .call(move |_| -> StoreResult<()> {
            flag.store(true, Ordering::SeqCst);
            panic!("simulated bug on the database thread")
        })
        .await;
    assert!(panicked.load(Ordering::SeqCst));
    assert!(matches!(result, Err(QueueError::Unavailable(_))));
    assert!(matches!(
        queue.ping().await,
        Err(QueueError::Unavailable(_))
    ));
    assert!(matches!(
        queue.enqueue(vec![spec("acme:1")]).await,
        Err(QueueError::Unavailable(_))
    ));
}

/// A database migrated to version 6 with jobs already archived has an
/// index that does not cover their manifests: erasures are refused until
/// `erase --rebuild-index` marks the store complete; the migration keeps
/// every job, its fields and its counts, and leaves the triggers working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_database_refuses_erasure_until_the_index_is_rebuilt() {
    use super::schema::{SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let conn = Connection::open(&path).unwrap();
    for step in [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5] {
        conn.execute_batch(step).unwrap();
    }
    conn.pragma_update(None, "user_version", 5).unwrap();
    conn.execute(
        "INSERT INTO jobs (id, account, provider, state, attempts, deadline, next_attempt_at,
             created_at, updated_at, message_id, media_id, message_at, payload)
         VALUES ('acme:m1', 'acme', 'greenapi', 'done', 1, 9, 9, 1, 2, 'm1', NULL, 3, '{}')",
        [],
    )
    .unwrap();
    // As the enqueue and the triggers of version 5 kept it.
    conn.execute("INSERT INTO job_counts VALUES ('acme', 'done', 1)", [])
        .unwrap();
    drop(conn);

    let queue = open(dir.path());
    let job = queue
        .get("acme:m1")
        .await
        .unwrap()
        .expect("kept by the migration");
    assert_eq!(
        (job.state, job.attempts, job.updated_at),
        (JobState::Done, 1, 2)
    );
    let filter = crate::ErasureFilter {
        account: "acme".into(),
        message_ids: vec!["m1".into()],
        ..Default::default()
    };
    let erasures = queue.erasures().unwrap();
    assert_eq!(
        erasures.plan_erasure("fs:x", &filter, true).await.unwrap(),
        Err(crate::ErasureRefused::IndexIncomplete)
    );
    erasures.mark_index_complete("fs:x").await.unwrap();
    assert!(
        erasures
            .plan_erasure("fs:x", &filter, true)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(
        erasures
            .plan_erasure("fs:other", &filter, true)
            .await
            .unwrap(),
        Err(crate::ErasureRefused::IndexIncomplete),
        "per store"
    );
    queue.enqueue(vec![spec("a:2")]).await.unwrap();
    let stats = queue.stats(Duration::ZERO).await.unwrap();
    assert_eq!(stats.by_state["done"], 1);
    assert_eq!(stats.by_state["pending"], 1, "counts still kept");
}
