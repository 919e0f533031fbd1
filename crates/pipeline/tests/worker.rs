//! The worker, the only place that knows the order of the stages, run
//! whole: a real SQLite queue and a real fs archive in a temp folder, the
//! real fetcher, and a scripted provider adapter whose answers to `resolve`
//! the test writes in advance, one per call.
//!
//! Two clocks, as in production. The queue's and the worker's wall clock is
//! a [`ManualClock`] that only the test moves, so lease expiry, park
//! timeouts and `archived_at` are exact. Tokio's clock is paused
//! (`start_paused`): the worker's sleeps (idle polls, lease renewals, the
//! shutdown grace) pass at once when every task waits for a timer, and a
//! test waits at most [`PATIENCE`] of that time, which costs no real time.
//! A task waiting for the SQLite queue's own thread would look idle to
//! Tokio, which would then jump to the next timer (a grace ending in the
//! middle of a queue call); [`HoldingTime`] makes each queue call hold the
//! clock instead, the way `tokio::time::pause` documents for I/O.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archiver_core::{AccountName, ErrorClass, JobState, ManualClock, ProviderKind};
use media_fetch::{DownloadRequest, FetchConfig, Fetcher, HostPolicy};
use pipeline::{Stages, Worker, WorkerConfig};
use providers::{
    JobRef, MediaDetails, MediaSource, ParsedWebhook, Provider, ProviderError, Resolution,
    ResolvedMedia, WebhookRequest,
};
use retry_queue::conformance::{T0, job_of};
use retry_queue::{
    Disposition, Enqueued, JobFilter, JobQueue, JobRecord, JobSpec, Lease, Leased, QueueError,
    QueueStats, RetryPolicy, SqliteQueue, UnixMillis,
};
use s3_uploader::{Archive, Archives, FsStore, Layout};
use test_support::files_under;
use test_support::http::{TestServer, response, text};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The media file every scripted answer delivers.
const PHOTO: &[u8] = b"\xff\xd8\xff\xe0 a small JPEG";

/// The account of every job and of the scripted adapter.
const ACCOUNT: &str = "acme";

/// How long (of paused Tokio time) a test waits for what must happen.
const PATIENCE: Duration = Duration::from_secs(15 * 60);

/// How often a test looks at a job it waits for.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// [`T0`], the time the manual clock starts at, as RFC 3339.
const T0_RFC3339: &str = "2026-01-01T00:00:00Z";

/// What the scripted provider answers to one `resolve` call.
#[derive(Debug)]
enum Answer {
    /// [`PHOTO`], carried inline (as Evolution's base64).
    Photo,
    /// [`PHOTO`] is to be downloaded from this link.
    Link(url::Url),
    /// "Not yet": the provider prepares the file; park the job this long.
    NotYet(Duration),
    /// The call fails.
    Fail(ProviderError),
    /// The answer the test sends later, while the call waits.
    Later(oneshot::Receiver<Answer>),
    /// No answer ever (a hung provider API): the call ends only when the
    /// worker gives up on it.
    Hang,
}

impl Answer {
    fn into_resolution(self) -> Result<Resolution, ProviderError> {
        let fetch = |source| {
            Ok(Resolution::Fetch(ResolvedMedia {
                source,
                expected_sha256: None,
                details: MediaDetails {
                    mime_type: Some("image/jpeg".into()),
                    ..MediaDetails::default()
                },
                encryption: None,
                size: None,
            }))
        };
        match self {
            Answer::Photo => fetch(MediaSource::Inline(bytes::Bytes::from_static(PHOTO))),
            Answer::Link(url) => fetch(MediaSource::download(
                DownloadRequest::get(url),
                HostPolicy::new(["127.0.0.1"]),
            )),
            Answer::NotYet(timeout) => Ok(Resolution::Park {
                timeout,
                reason: "the provider is preparing the file".into(),
            }),
            Answer::Fail(error) => Err(error),
            Answer::Later(_) | Answer::Hang => unreachable!("waited for before answering"),
        }
    }
}

/// How a `resolve` call ended, as far as the provider could see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Still waiting for its answer.
    Open,
    /// It answered.
    Answered,
    /// The caller dropped it before it answered.
    Abandoned,
}

/// One `resolve` call as the provider saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    attempt: u32,
    link_dead: bool,
    end: End,
}

/// A provider adapter that answers `resolve` from a script and records
/// every call and how it ended.
#[derive(Debug)]
struct ScriptedProvider {
    account: AccountName,
    script: Mutex<VecDeque<Answer>>,
    calls: watch::Sender<Vec<Call>>,
}

impl ScriptedProvider {
    fn new(script: Vec<Answer>) -> Self {
        Self {
            account: AccountName::new(ACCOUNT).unwrap(),
            script: Mutex::new(script.into()),
            calls: watch::Sender::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Waits until the `n`th call has begun.
    async fn wait_for_call(&self, n: usize) {
        self.wait_for_calls(&format!("call {n}"), |calls| calls.len() >= n)
            .await;
    }

    /// Waits until the calls so far satisfy `done`; panics after [`PATIENCE`].
    async fn wait_for_calls(&self, what: &str, done: impl FnMut(&Vec<Call>) -> bool) {
        let mut calls = self.calls.subscribe();
        if tokio::time::timeout(PATIENCE, calls.wait_for(done))
            .await
            .is_err()
        {
            panic!("waited in vain for {what}; calls: {:?}", self.calls());
        }
    }
}

/// Marks its call `Abandoned` if dropped before [`OpenCall::answered`].
struct OpenCall<'a> {
    calls: &'a watch::Sender<Vec<Call>>,
    index: usize,
    end: End,
}

impl OpenCall<'_> {
    fn answered(mut self) {
        self.end = End::Answered;
    }
}

impl Drop for OpenCall<'_> {
    fn drop(&mut self) {
        self.calls
            .send_modify(|calls| calls[self.index].end = self.end);
    }
}

#[async_trait::async_trait]
impl Provider for ScriptedProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Cloudapi
    }
    fn account(&self) -> &AccountName {
        &self.account
    }
    fn webhook_auth_configured(&self) -> bool {
        true
    }
    fn authenticate_head(&self, _: &http::HeaderMap, _: Option<&str>) -> Result<(), ProviderError> {
        unreachable!("the worker never sees a webhook")
    }
    fn parse_webhook(&self, _: &WebhookRequest<'_>) -> Result<ParsedWebhook, ProviderError> {
        unreachable!("the worker never sees a webhook")
    }
    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let answer = self.script.lock().unwrap().pop_front();
        let answer = answer.unwrap_or_else(|| panic!("resolve called more often than scripted"));
        let mut index = 0;
        self.calls.send_modify(|calls| {
            index = calls.len();
            calls.push(Call {
                attempt: job.attempt,
                link_dead: job.link_dead,
                end: End::Open,
            });
        });
        let call = OpenCall {
            calls: &self.calls,
            index,
            end: End::Abandoned,
        };
        let answer = match answer {
            Answer::Later(later) => later.await.expect("the test sends the answer"),
            Answer::Hang => std::future::pending().await,
            now => now,
        };
        call.answered();
        answer.into_resolution()
    }
}

/// A queue whose every call holds Tokio's paused clock still until the
/// queue's thread answers: a blocking task runs for as long as the call
/// does, and Tokio does not auto-advance while one runs.
#[derive(Debug)]
struct HoldingTime(SqliteQueue);

/// Runs `call` with auto-advance held off; dropping the call (a renewal
/// cancelled with its job) lets go too.
async fn holding_time<T>(call: impl Future<Output = T>) -> T {
    let (_holding, released) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || released.recv());
    call.await
}

#[async_trait::async_trait]
impl JobQueue for HoldingTime {
    async fn enqueue(&self, jobs: Vec<JobSpec>) -> Result<Vec<Enqueued>, QueueError> {
        holding_time(self.0.enqueue(jobs)).await
    }
    async fn lease(&self, max: usize, lease_for: Duration) -> Result<Leased, QueueError> {
        holding_time(self.0.lease(max, lease_for)).await
    }
    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<UnixMillis, QueueError> {
        holding_time(self.0.renew(lease, lease_for)).await
    }
    async fn complete(&self, lease: &Lease) -> Result<(), QueueError> {
        holding_time(self.0.complete(lease)).await
    }
    async fn fail(
        &self,
        lease: &Lease,
        class: ErrorClass,
        error: &str,
    ) -> Result<Disposition, QueueError> {
        holding_time(self.0.fail(lease, class, error)).await
    }
    async fn park(&self, lease: &Lease, until: UnixMillis) -> Result<(), QueueError> {
        holding_time(self.0.park(lease, until)).await
    }
    async fn wake(&self, job_id: &str, note: Option<&str>) -> Result<bool, QueueError> {
        holding_time(self.0.wake(job_id, note)).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        holding_time(self.0.release(lease)).await
    }
    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, QueueError> {
        holding_time(self.0.get(job_id)).await
    }
    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        holding_time(self.0.list(filter)).await
    }
    async fn retry_now(&self, job_id: &str) -> Result<bool, QueueError> {
        holding_time(self.0.retry_now(job_id)).await
    }
    async fn retry_all(&self, state: JobState) -> Result<u64, QueueError> {
        holding_time(self.0.retry_all(state)).await
    }
    async fn stats(&self, at_risk_within: Duration) -> Result<QueueStats, QueueError> {
        holding_time(self.0.stats(at_risk_within)).await
    }
    async fn ping(&self) -> Result<(), QueueError> {
        holding_time(self.0.ping()).await
    }
}

/// A queue, an archive, a spool and a provider in a temp folder, on a
/// manual clock at [`T0`].
struct Setup {
    dir: tempfile::TempDir,
    clock: ManualClock,
    queue: Arc<dyn JobQueue>,
    store: Arc<FsStore>,
    fetcher: Fetcher,
    provider: Arc<ScriptedProvider>,
}

impl Setup {
    fn new(script: Vec<Answer>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let queue = SqliteQueue::open(
            &dir.path().join("queue.db"),
            RetryPolicy::default(),
            Arc::new(clock.clone()),
        )
        .unwrap();
        let store = FsStore::open(&dir.path().join("archive")).unwrap();
        let fetcher = Fetcher::new(FetchConfig {
            spool_dir: dir.path().join("spool"),
            // The download server is on loopback.
            allow_private_networks: true,
            // Far beyond any worker timer: paused time jumps to the next
            // timer while a queue call waits, and a download must not
            // time out because of that.
            connect_timeout: Duration::from_secs(24 * 3600),
            read_timeout: Duration::from_secs(24 * 3600),
            ..FetchConfig::default()
        })
        .unwrap();
        Self {
            dir,
            clock,
            queue: Arc::new(HoldingTime(queue)),
            store: Arc::new(store),
            fetcher,
            provider: Arc::new(ScriptedProvider::new(script)),
        }
    }

    /// Enqueues the job of message `key` (deadline a week away); its id.
    async fn enqueue(&self, key: &str) -> String {
        let job = job_of(ACCOUNT, key, T0 + 7 * 24 * 3_600_000);
        let id = job.id.clone();
        self.queue.enqueue(vec![job]).await.unwrap();
        id
    }

    /// Starts a worker on this setup with the default timings.
    fn start(&self, concurrency: usize) -> Running {
        let providers: std::collections::HashMap<String, Arc<dyn Provider>> = [(
            ACCOUNT.to_owned(),
            self.provider.clone() as Arc<dyn Provider>,
        )]
        .into();
        let worker = Arc::new(Worker::new(
            Stages {
                queue: self.queue.clone(),
                providers,
                fetcher: self.fetcher.clone(),
                archives: Archives::from(Archive {
                    store: self.store.clone(),
                    layout: Layout::default(),
                    presign_ttl: Duration::from_secs(3600),
                    description: "fs (test)".into(),
                    store_id: "fs:test".into(),
                    object_lock: None,
                }),
                clock: Arc::new(self.clock.clone()),
            },
            config(concurrency),
        ));
        let shutdown = CancellationToken::new();
        Running {
            new_work: worker.new_work_signal(),
            task: tokio::spawn(worker.run(shutdown.clone())),
            shutdown,
        }
    }

    async fn job(&self, id: &str) -> JobRecord {
        self.queue.get(id).await.unwrap().expect("the job exists")
    }

    /// Waits until job `id` is as `wanted` says; panics after [`PATIENCE`].
    async fn wait_for_job(
        &self,
        id: &str,
        what: &str,
        wanted: impl Fn(&JobRecord) -> bool,
    ) -> JobRecord {
        let give_up = Instant::now() + PATIENCE;
        loop {
            let job = self.job(id).await;
            if wanted(&job) {
                return job;
            }
            assert!(
                Instant::now() < give_up,
                "waited in vain for {what}: {job:?}"
            );
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    async fn wait_for_state(&self, id: &str, state: JobState) -> JobRecord {
        self.wait_for_job(id, &format!("{state:?}"), |job| job.state == state)
            .await
    }

    fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    /// Every blob in the archive.
    fn blobs(&self) -> Vec<PathBuf> {
        files_under(&self.archive().join("blobs"))
    }

    /// Every manifest in the archive, parsed.
    fn manifests(&self) -> Vec<serde_json::Value> {
        files_under(&self.archive().join("messages"))
            .iter()
            .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
            .collect()
    }

    /// Spool files left behind.
    fn spool_files(&self) -> Vec<PathBuf> {
        files_under(&self.dir.path().join("spool"))
    }

    /// Checks that the archive holds [`PHOTO`] once, with one manifest
    /// naming it.
    fn assert_archived_once(&self) -> serde_json::Value {
        let blobs = self.blobs();
        assert_eq!(blobs.len(), 1, "one blob: {blobs:?}");
        assert_eq!(std::fs::read(&blobs[0]).unwrap(), PHOTO);
        let manifests = self.manifests();
        assert_eq!(manifests.len(), 1, "one manifest: {manifests:?}");
        let manifest = manifests.into_iter().next().unwrap();
        assert_eq!(
            self.archive().join(manifest["blob_key"].as_str().unwrap()),
            blobs[0],
            "the manifest names the blob"
        );
        assert!(self.spool_files().is_empty(), "{:?}", self.spool_files());
        manifest
    }

    fn assert_nothing_archived(&self) {
        assert!(self.blobs().is_empty(), "{:?}", self.blobs());
        assert!(self.manifests().is_empty(), "{:?}", self.manifests());
        assert!(self.spool_files().is_empty(), "{:?}", self.spool_files());
    }
}

/// The worker settings of every test: the defaults (a 300 s lease renewed
/// every 100 s, a 25 s shutdown grace, a 1 s idle poll).
fn config(concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        ..WorkerConfig::default()
    }
}

/// A worker running in its own task.
struct Running {
    shutdown: CancellationToken,
    new_work: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Running {
    /// Begins shutdown without waiting for it.
    fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the worker to return (after [`Running::begin_shutdown`]).
    async fn stopped(self) {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the worker stops")
            .expect("the worker does not panic");
    }

    async fn stop(self) {
        self.begin_shutdown();
        self.stopped().await;
    }
}

/// Lets the worker poll the queue a few times with nothing new to do.
async fn let_the_worker_idle() {
    tokio::time::sleep(10 * WorkerConfig::default().idle_poll).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_is_archived_once_with_its_manifest_dated_by_the_injected_clock_and_marked_done() {
    let setup = Setup::new(vec![Answer::Photo]);
    let id = setup.enqueue("photo").await;
    let worker = setup.start(1);

    let job = setup.wait_for_state(&id, JobState::Done).await;
    worker.stop().await;

    assert_eq!(job.attempts, 1);
    assert_eq!(job.last_error, None);
    let manifest = setup.assert_archived_once();
    assert_eq!(manifest["message_id"], "wamid.photo");
    assert_eq!(manifest["archived_at"], T0_RFC3339);
    assert_eq!(manifest["verification"], "computed-only");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_makes_the_job_dead_with_the_providers_reason_and_archives_nothing() {
    let reason = "the sender deleted the file";
    let setup = Setup::new(vec![Answer::Fail(ProviderError::MediaUnavailable(
        reason.into(),
    ))]);
    let id = setup.enqueue("deleted").await;
    let worker = setup.start(1);

    let job = setup.wait_for_state(&id, JobState::Dead).await;
    let_the_worker_idle().await;
    worker.stop().await;

    assert_eq!(job.last_error.as_deref(), Some(reason));
    assert_eq!(job.attempts, 1);
    assert_eq!(setup.provider.calls().len(), 1, "a dead job is not retried");
    setup.assert_nothing_archived();
}

/// Moves the manual clock to just before `until` and checks that the job
/// is not run again, then to `until` and checks that it is run and
/// archived. `calls` is how many `resolve` calls were made before.
async fn assert_runs_again_exactly_at(setup: &Setup, id: &str, until: i64, calls: usize) {
    setup.clock.set(until - 1);
    let_the_worker_idle().await;
    assert_eq!(
        setup.provider.calls().len(),
        calls,
        "not run before {until}"
    );
    setup.clock.set(until);
    let job = setup.wait_for_state(id, JobState::Done).await;
    assert_eq!(setup.provider.calls().len(), calls + 1);
    assert_eq!(job.attempts, 2);
    setup.assert_archived_once();
}

#[tokio::test(start_paused = true)]
async fn a_job_the_provider_is_not_ready_for_is_parked_until_its_timeout_on_the_injected_clock_and_woken_then()
 {
    let wait = Duration::from_secs(600);
    let setup = Setup::new(vec![Answer::NotYet(wait), Answer::Photo]);
    let id = setup.enqueue("prepared").await;
    let worker = setup.start(1);

    let parked = setup.wait_for_state(&id, JobState::Waiting).await;
    let until = T0 + 600_000;
    assert_eq!(parked.next_attempt_at, until, "parked for {wait:?} from T0");
    assert_eq!(parked.attempts, 1, "the parked attempt stays counted");

    assert_runs_again_exactly_at(&setup, &id, until, 1).await;
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_job_is_retried_no_sooner_than_retry_after() {
    let retry_after = Duration::from_secs(3600);
    let rate_limited = ProviderError::Api {
        api: "getMedia",
        status: 429,
        detail: "too many requests".into(),
        class: ErrorClass::RetryAfter(retry_after),
    };
    let setup = Setup::new(vec![Answer::Fail(rate_limited), Answer::Photo]);
    let id = setup.enqueue("busy").await;
    let worker = setup.start(1);

    let waiting = setup
        .wait_for_job(&id, "a scheduled retry", |job| {
            job.state == JobState::Pending && job.attempts == 1
        })
        .await;
    let until = T0 + 3_600_000;
    assert_eq!(
        waiting.next_attempt_at, until,
        "Retry-After outweighs the 5 s backoff"
    );
    assert!(
        waiting.last_error.as_deref().unwrap().contains("429"),
        "{waiting:?}"
    );

    assert_runs_again_exactly_at(&setup, &id, until, 1).await;
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_download_link_makes_the_worker_ask_the_provider_for_a_fresh_one_in_the_same_attempt()
 {
    let requested = Arc::new(Mutex::new(Vec::new()));
    let server = {
        let requested = requested.clone();
        TestServer::start(move |req| {
            let path = req.uri().path().to_owned();
            requested.lock().unwrap().push(path.clone());
            async move {
                match path.as_str() {
                    "/expired" => text(410, "this link has expired"),
                    "/fresh" => response(200, "image/jpeg", PHOTO),
                    _ => text(404, "no such file"),
                }
            }
        })
        .await
    };
    let link = |path: &str| url::Url::parse(&format!("{}{path}", server.base_url())).unwrap();
    let setup = Setup::new(vec![
        Answer::Link(link("/expired")),
        Answer::Link(link("/fresh")),
    ]);
    let id = setup.enqueue("relinked").await;
    let worker = setup.start(1);

    let job = setup.wait_for_state(&id, JobState::Done).await;
    worker.stop().await;

    assert_eq!(*requested.lock().unwrap(), ["/expired", "/fresh"]);
    let asked = |link_dead| Call {
        attempt: 1,
        link_dead,
        end: End::Answered,
    };
    assert_eq!(setup.provider.calls(), [asked(false), asked(true)]);
    assert_eq!(job.attempts, 1, "one attempt, not a retry");
    setup.assert_archived_once();
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_lost_its_lease_abandons_the_attempt_and_the_job_is_archived_once_by_the_new_holder()
 {
    let setup = Setup::new(vec![Answer::Hang, Answer::Photo]);
    let id = setup.enqueue("contended").await;
    let stalled = setup.start(1);
    setup.provider.wait_for_call(1).await;

    // The first worker's lease runs out on the wall clock before its next
    // renewal (every 100 s of its own time), and a second worker takes the
    // job.
    setup
        .clock
        .advance(config(1).lease + Duration::from_secs(1));
    let other = setup.start(1);
    let job = setup.wait_for_state(&id, JobState::Done).await;
    setup
        .provider
        .wait_for_calls("the stalled call to be abandoned", |calls| {
            calls[0].end == End::Abandoned
        })
        .await;
    stalled.stop().await;
    other.stop().await;

    assert_eq!(
        setup.provider.calls(),
        [
            Call {
                attempt: 1,
                link_dead: false,
                end: End::Abandoned
            },
            Call {
                attempt: 2,
                link_dead: false,
                end: End::Answered
            },
        ]
    );
    assert_eq!(job.attempts, 2);
    assert_eq!(job.last_error, None);
    assert_eq!(
        setup.job(&id).await.state,
        JobState::Done,
        "the stalled worker neither failed nor released it"
    );
    setup.assert_archived_once();
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_job_in_flight_finish_within_the_grace_and_leases_no_new_one() {
    let (answer, later) = oneshot::channel();
    let setup = Setup::new(vec![Answer::Later(later)]);
    let in_flight = setup.enqueue("in-flight").await;
    let worker = setup.start(1);
    setup.provider.wait_for_call(1).await;
    // Ready, but the one permit is taken.
    let waiting = setup.enqueue("waiting").await;
    worker.new_work.notify_one();

    worker.begin_shutdown();
    // The in-flight job ends within the grace and frees the permit.
    answer.send(Answer::Photo).unwrap();
    worker.stopped().await;

    assert_eq!(setup.job(&in_flight).await.state, JobState::Done);
    let waiting = setup.job(&waiting).await;
    assert_eq!(
        (waiting.state, waiting.attempts),
        (JobState::Pending, 0),
        "never leased"
    );
    assert_eq!(setup.provider.calls().len(), 1);
    setup.assert_archived_once();
}

#[tokio::test(start_paused = true)]
async fn a_job_still_running_when_the_shutdown_grace_ends_is_released_to_the_queue_uncounted() {
    let setup = Setup::new(vec![Answer::Hang]);
    let id = setup.enqueue("slow").await;
    let worker = setup.start(1);
    setup.provider.wait_for_call(1).await;

    let shutdown_began = Instant::now();
    worker.stop().await;

    assert!(
        shutdown_began.elapsed() >= config(1).shutdown_grace,
        "stopped after {:?}",
        shutdown_began.elapsed()
    );
    assert_eq!(setup.provider.calls()[0].end, End::Abandoned);
    let job = setup.job(&id).await;
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.attempts, 0, "a released attempt is not counted");
    assert!(job.next_attempt_at <= T0, "ready at once: {job:?}");
    setup.assert_nothing_archived();
}
