//! The queue is the part users trust with their data: these tests kill the
//! daemon mid-stream, run two replicas on one PostgreSQL queue, and take the
//! S3 store away, and check that every webhook answered 200 still ends
//! archived, once.
//!
//! PostgreSQL tests use a private schema on the test server and skip with a
//! notice when it is unreachable (fail under
//! `MEDIA_ARCHIVER_REQUIRE_POSTGRES=1`); the outage test needs Garage (fails
//! under `MEDIA_ARCHIVER_REQUIRE_S3=1`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::accounts::GREEN_WEBHOOK_TOKEN as TOKEN;
use e2e::{
    Archive, Daemon, StoreUnderTest, accounts, blob_key, bytes, config, fjall_queue, now,
    postgres_queue, sha256_hex,
};
use retry_queue::conformance::pg::PgTestDatabase;
use serde_json::Value;
use test_support::garage::Garage;
use test_support::green_api::FakeGreenApi;

const CHAT: &str = "79001234568@c.us";

/// One announced file: the message id, its bytes, its download URL and the
/// webhook body that announces it.
struct Message {
    id: String,
    content: Vec<u8>,
    url: String,
    webhook: Vec<u8>,
}

/// Registers `n` image messages with the fake, each with bytes of its own
/// (so each must end as a blob of its own).
fn messages(fake: &FakeGreenApi, prefix: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}{i:0>width$}", width = 32 - prefix.len());
            let content = bytes(2048 + (i % 7) * 512, 1_000_003 * (i as u64 + 1));
            let url = fake.add_file(CHAT, &id, content.clone(), "image/jpeg", "p.jpg");
            let hook = fake.file_webhook(
                "incomingMessageReceived",
                "imageMessage",
                CHAT,
                &id,
                &url,
                now(),
            );
            Message {
                id,
                content,
                url,
                webhook: serde_json::to_vec(&hook).unwrap(),
            }
        })
        .collect()
}

/// Posts every message's webhook from `tasks` concurrent senders, spread
/// over `targets` (daemon base URLs, round robin). Returns the ids answered
/// 200; anything else (including a connection dropped by a crash) is not
/// acknowledged. `acked` counts 200s as they come.
async fn post_all(
    targets: Vec<String>,
    messages: &[Message],
    tasks: usize,
    acked: Arc<AtomicUsize>,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let bodies: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        messages
            .iter()
            .map(|m| (m.id.clone(), m.webhook.clone()))
            .collect(),
    );
    post_bodies(targets, bodies, tasks, http, next, acked).await
}

async fn post_bodies(
    targets: Vec<String>,
    bodies: Arc<Vec<(String, Vec<u8>)>>,
    tasks: usize,
    http: reqwest::Client,
    next: Arc<AtomicUsize>,
    acked: Arc<AtomicUsize>,
) -> Vec<String> {
    let senders: Vec<_> = (0..tasks)
        .map(|_| {
            let (http, next, bodies, acked, targets) = (
                http.clone(),
                next.clone(),
                bodies.clone(),
                acked.clone(),
                targets.clone(),
            );
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((id, body)) = bodies.get(i) else {
                        return mine;
                    };
                    let target = &targets[i % targets.len()];
                    let answer = http
                        .post(format!("{target}/webhooks/green"))
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    if answer.is_ok_and(|a| a.status() == 200) {
                        acked.fetch_add(1, Ordering::SeqCst);
                        mine.push(id.clone());
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for sender in senders {
        all.extend(sender.await.unwrap());
    }
    all
}

/// The state of every job, by id.
async fn job_states(daemon: &Daemon, ids: &[String]) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for id in ids {
        let (status, job) = daemon.job(id).await;
        if status == 200 {
            out.insert(id.clone(), job);
        }
    }
    out
}

/// Drives 360 webhooks from 6 concurrent senders, SIGKILLs the daemon
/// after 150 were answered 200, restarts it on the same workdir and queue,
/// and checks that every acknowledged webhook ends archived, each file
/// exactly once in the store.
async fn kill_mid_stream_and_restart(backend: &str, queue: &str) {
    const TOTAL: usize = 360;
    const KILL_AFTER: usize = 150;
    let fake = FakeGreenApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A short lease, so the jobs the crash left leased run again soon.
    let cfg = config(
        &StoreUnderTest::Fs,
        &format!("{}{queue}", accounts::green_api(&fake)),
    )
    .replace("lease = \"30s\"", "lease = \"3s\"");
    let mut daemon = Daemon::start(&cfg, dir.path());
    let messages = messages(&fake, "CRASH", TOTAL);

    let acked_count = Arc::new(AtomicUsize::new(0));
    let sending = {
        let targets = vec![daemon.base_url.clone()];
        let acked_count = acked_count.clone();
        let bodies = Arc::new(
            messages
                .iter()
                .map(|m| (m.id.clone(), m.webhook.clone()))
                .collect(),
        );
        let (http, next) = (reqwest::Client::new(), Arc::new(AtomicUsize::new(0)));
        tokio::spawn(post_bodies(targets, bodies, 6, http, next, acked_count))
    };
    let started = Instant::now();
    while acked_count.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} webhooks answered in 60s; logs:\n{}",
            acked_count.load(Ordering::SeqCst),
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    daemon.kill(); // SIGKILL: no drain, no cleanup
    let acked: Vec<String> = sending.await.unwrap();
    assert!(
        acked.len() >= KILL_AFTER && acked.len() < TOTAL,
        "the crash must land mid-stream: {} of {TOTAL} acknowledged",
        acked.len()
    );

    let daemon = Daemon::start(&cfg, dir.path());
    daemon.wait_until_idle(Duration::from_secs(120)).await;

    let archive = Archive::of(&StoreUnderTest::Fs, dir.path());
    let ids: Vec<String> = messages.iter().map(|m| format!("green:{}", m.id)).collect();
    let states = job_states(&daemon, &ids).await;
    let mut intact = HashSet::new();
    for message in &messages {
        let stored = archive.try_get(&blob_key(&message.content, ".jpg")).await;
        if stored.is_ok_and(|stored| stored == message.content) {
            intact.insert(format!("green:{}", message.id));
        }
    }
    let archived_ok = |id: &String| {
        states.get(id).is_some_and(|job| job["state"] == "done") && intact.contains(id)
    };
    let acked_ids: Vec<String> = acked.iter().map(|id| format!("green:{id}")).collect();
    let archived = acked_ids.iter().filter(|id| archived_ok(id)).count();
    let lost: Vec<&String> = acked_ids.iter().filter(|id| !archived_ok(id)).collect();
    let unacked = TOTAL - acked.len();
    let unacked_archived = ids
        .iter()
        .filter(|id| !acked_ids.contains(id) && archived_ok(id))
        .count();
    let refetched = messages
        .iter()
        .filter(|m| fake.file_hits(&m.url) > 1)
        .count();
    println!(
        "crash test ({backend}): acked {} / archived {archived} / lost {} \
         (unacknowledged {unacked}, of which committed and archived anyway {unacked_archived}; \
         files fetched twice after the crash {refetched})",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but not archived: {lost:?}");

    // None twice: one blob per archived file, nothing else in the store.
    let done = states.values().filter(|job| job["state"] == "done").count();
    let blobs = archive.keys("blobs/").await;
    assert_eq!(
        blobs.len(),
        done,
        "one blob per archived (distinct) file, no partial or duplicate objects"
    );
    let manifests = archive.keys("messages/").await;
    assert_eq!(manifests.len(), done, "one manifest per archived message");
    assert!(
        states.values().all(|job| job["state"] != "dead"),
        "no job was dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_kill_9_mid_stream_loses_no_acknowledged_webhook() {
    kill_mid_stream_and_restart("sqlite", "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fjall_a_kill_9_mid_stream_loses_no_acknowledged_webhook() {
    kill_mid_stream_and_restart("fjall", &fjall_queue()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_kill_9_mid_stream_loses_no_acknowledged_webhook() {
    let Some(db) = PgTestDatabase::create() else {
        return;
    };
    kill_mid_stream_and_restart("postgres", &postgres_queue(&db)).await;
}

/// Two daemon processes lease from one PostgreSQL queue. 1,000 webhooks
/// are spread over both; one replica is SIGKILLed on purpose mid-way. Every
/// file is fetched once, except the few the killed replica held, which the
/// survivor fetches again after their leases expire; none is lost.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_two_replicas_share_the_work_and_fetch_each_file_once() {
    const TOTAL: usize = 1000;
    const CONCURRENCY: u64 = 4; // per replica, from the test config
    let Some(db) = PgTestDatabase::create() else {
        return;
    };
    let fake = FakeGreenApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    let cfg = config(
        &StoreUnderTest::Fs,
        &format!("{}{}", accounts::green_api(&fake), postgres_queue(&db)),
    )
    .replace("lease = \"30s\"", "lease = \"3s\"")
    .replace(
        "path = \"data/archive\"",
        &format!("path = \"{}\"", archive_dir.display()),
    );
    assert!(cfg.contains(&archive_dir.display().to_string()));
    let archive = Archive::fs(&archive_dir);
    let survivor = Daemon::start(&cfg, &dir.path().join("a"));
    let mut victim = Daemon::start(&cfg, &dir.path().join("b"));
    let messages = messages(&fake, "REPL", TOTAL);

    let acked_count = Arc::new(AtomicUsize::new(0));
    let acked = post_all(
        vec![survivor.base_url.clone(), victim.base_url.clone()],
        &messages,
        8,
        acked_count,
    )
    .await;
    assert_eq!(acked.len(), TOTAL, "both replicas accept webhooks");

    // Kill one replica once a third of the work is done: whatever it holds
    // leased must be taken over after the 3 s lease.
    let started = Instant::now();
    loop {
        let done = survivor.stats().await["by_state"]["done"]
            .as_u64()
            .unwrap_or(0);
        if done >= TOTAL as u64 / 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stalled at {done} done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim_archived = victim.logs().matches("\"outcome\":\"archived\"").count();
    victim.kill();
    let stats = survivor.wait_until_idle(Duration::from_secs(180)).await;
    assert_eq!(stats["by_state"]["done"], TOTAL as u64, "{stats}");

    let ids: Vec<String> = messages.iter().map(|m| format!("green:{}", m.id)).collect();
    let states = job_states(&survivor, &ids).await;
    let mut hits_histogram: BTreeMap<usize, usize> = BTreeMap::new();
    let mut taken_over = 0;
    for message in &messages {
        let job = &states[&format!("green:{}", message.id)];
        let attempts = job["attempts"].as_u64().unwrap();
        let hits = fake.file_hits(&message.url);
        *hits_histogram.entry(hits).or_default() += 1;
        assert!(hits >= 1, "{} never fetched", message.id);
        if attempts > 1 {
            taken_over += 1;
        }
        assert!(
            hits == 1 || hits as u64 <= attempts && attempts > 1,
            "{} fetched {hits} times in {attempts} attempts: a refetch without a lease expiry",
            message.id
        );
        let stored = archive.get(&blob_key(&message.content, ".jpg")).await;
        assert!(stored == message.content, "{} archived intact", message.id);
    }
    println!(
        "replica test: {TOTAL} archived by two replicas (the killed one logged \
         {victim_archived} before the kill); fetches per file {hits_histogram:?}; \
         jobs taken over after the kill {taken_over}"
    );
    assert!(
        taken_over as u64 <= CONCURRENCY,
        "only the killed replica's in-flight jobs may run twice, got {taken_over}"
    );
    assert!(
        victim_archived > 0,
        "the second replica did part of the work"
    );
    let survivor_archived = survivor.logs().matches("\"outcome\":\"archived\"").count();
    assert!(
        survivor_archived > 0,
        "the first replica did part of the work"
    );
    assert_eq!(archive.keys("blobs/").await.len(), TOTAL);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_store_outage_delays_archiving_but_loses_nothing() {
    store_outage_delays_archiving_but_loses_nothing("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fjall_a_store_outage_delays_archiving_but_loses_nothing() {
    store_outage_delays_archiving_but_loses_nothing(&fjall_queue()).await;
}

/// With the S3 store down, webhooks are still answered 200 (the queue is
/// local) and the jobs retry; once the store is back, every file is
/// archived in it.
async fn store_outage_delays_archiving_but_loses_nothing(queue: &str) {
    const TOTAL: usize = 40;
    let Some(mut garage) = Garage::start() else {
        return;
    };
    let store = StoreUnderTest::garage(&garage);
    let fake = FakeGreenApi::start().await;
    let daemon = Daemon::start_in_temp_dir(&config(
        &store,
        &format!("{}{queue}", accounts::green_api(&fake)),
    ));
    let messages = messages(&fake, "OUT", TOTAL);

    garage.stop();
    let acked = post_all(
        vec![daemon.base_url.clone()],
        &messages,
        4,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    assert_eq!(acked.len(), TOTAL, "webhooks are accepted while S3 is down");

    // Every job fails at the store and is scheduled again, none dies.
    let ids: Vec<String> = messages.iter().map(|m| format!("green:{}", m.id)).collect();
    let started = Instant::now();
    loop {
        let states = job_states(&daemon, &ids).await;
        let retried = states
            .values()
            .filter(|job| job["attempts"].as_u64().unwrap_or(0) >= 2)
            .count();
        assert!(
            states.values().all(|job| job["state"] != "dead"),
            "a store outage must not dead-letter: {states:?}"
        );
        assert!(
            states.values().all(|job| job["state"] != "done"),
            "nothing can be archived while the store is down"
        );
        if retried == TOTAL {
            let sample = &states[&ids[0]];
            assert!(
                sample["last_error"].as_str().is_some_and(|e| !e.is_empty()),
                "the retry says why: {sample}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {retried} of {TOTAL} jobs retried; logs:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    garage.restart();
    let stats = daemon.wait_until_idle(Duration::from_secs(120)).await;
    assert_eq!(stats["by_state"]["done"], TOTAL as u64, "{stats}");
    let archive = Archive::of(&store, &daemon.workdir);
    for message in &messages {
        let key = blob_key(&message.content, ".jpg");
        let body = archive
            .try_get(&key)
            .await
            .unwrap_or_else(|e| panic!("{key} missing after the outage: {e}"));
        assert_eq!(
            sha256_hex(&body),
            sha256_hex(&message.content),
            "{key} intact"
        );
    }
}

/// `queue migrate` moves a daemon from the SQLite queue to fjall: after
/// the copy the daemon on fjall knows every archived job (a redelivered
/// webhook is a duplicate, not a second archive) and archives new ones; a
/// second copy adds nothing.
#[tokio::test(flavor = "multi_thread")]
async fn queue_migrate_moves_a_daemon_from_sqlite_to_fjall() {
    const TOTAL: usize = 20;
    let fake = FakeGreenApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = config(&StoreUnderTest::Fs, &accounts::green_api(&fake));
    let fjall = format!("{sqlite}{}", fjall_queue());
    let mut daemon = Daemon::start(&sqlite, dir.path());
    let messages = messages(&fake, "MOVE", TOTAL + 1);
    let acked = post_all(
        vec![daemon.base_url.clone()],
        &messages[..TOTAL],
        4,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    assert_eq!(acked.len(), TOTAL);
    daemon.wait_until_idle(Duration::from_secs(60)).await;
    assert!(daemon.terminate().success(), "{}", daemon.logs());
    drop(daemon);

    std::fs::write(dir.path().join("sqlite.toml"), &sqlite).unwrap();
    std::fs::write(dir.path().join("fjall.toml"), &fjall).unwrap();
    let migrate = || {
        e2e::cli::run(
            dir.path(),
            &[
                "queue",
                "migrate",
                "--from",
                "sqlite.toml",
                "--to",
                "fjall.toml",
            ],
        )
    };
    let first = migrate();
    let (stdout, stderr) = e2e::cli::output_text(&first);
    assert_eq!(first.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("new in target:   {TOTAL}")),
        "{stdout}"
    );
    let again = migrate();
    let (stdout, stderr) = e2e::cli::output_text(&again);
    assert_eq!(again.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("new in target:   0"), "{stdout}");
    let onto_itself = e2e::cli::run(
        dir.path(),
        &[
            "queue",
            "migrate",
            "--from",
            "fjall.toml",
            "--to",
            "fjall.toml",
        ],
    );
    assert_eq!(onto_itself.status.code(), Some(2));

    let daemon = Daemon::start(&fjall, dir.path());
    assert!(daemon.logs().contains("queue: fjall"), "{}", daemon.logs());
    let stats = daemon.stats().await;
    assert_eq!(stats["by_state"]["done"], TOTAL as u64, "{stats}");
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = daemon
        .post_raw(
            "green",
            messages[0].webhook.clone(),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["duplicates"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    post_all(
        vec![daemon.base_url.clone()],
        &messages[TOTAL..],
        1,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let stats = daemon.wait_until_idle(Duration::from_secs(60)).await;
    assert_eq!(stats["by_state"]["done"], (TOTAL + 1) as u64, "{stats}");
    assert_eq!(
        fake.file_hits(&messages[0].url),
        1,
        "fetched once, before the move"
    );
}
