//! Fetcher against a local HTTP server on 127.0.0.1:0.
//!
//! `allow_private_networks` is on (the server is on loopback) except in the
//! SSRF tests, which check that it is what lets these downloads through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use test_support::files_under;

use archiver_core::{Classify, ErrorClass, Secret, StagedBody, StagedFile};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, LOCATION, RETRY_AFTER};
use hyper::{Request, Response};
use media_fetch::{Answer, DownloadRequest, FetchConfig, FetchError, Fetcher, HostPolicy};
use sha2::{Digest, Sha256};
use test_support::http::{self, Body, TestServer};
use url::Url;

const MIB: usize = 1024 * 1024;
const TOKEN: &str = "Bearer tok-4f1b9c2e-very-secret";
const QUERY_SECRET: &str = "sig-7d3a-query-secret";

/// Byte `i` of the deterministic test file.
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

fn pattern_chunk(start: usize, len: usize) -> Bytes {
    (start..start + len)
        .map(pattern)
        .collect::<Vec<u8>>()
        .into()
}

/// Streams `len` pattern bytes in 64 KiB chunks, never holding them all.
fn pattern_body(len: usize) -> Body {
    let chunks = (0..len)
        .step_by(64 * 1024)
        .map(move |start| Ok(pattern_chunk(start, (64 * 1024).min(len - start))));
    http::stream(futures_util::stream::iter(chunks))
}

fn sized(len: usize, body: Body) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(CONTENT_LENGTH, len)
        .body(body)
        .unwrap()
}

struct Server {
    server: TestServer,
    hits: Arc<AtomicUsize>,
}

impl Server {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let server = TestServer::start(move |req| {
            counter.fetch_add(1, Ordering::SeqCst);
            route(req)
        })
        .await;
        Self { server, hits }
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.server.base_url())).unwrap()
    }

    fn port(&self) -> u16 {
        self.server.addr().port()
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn route(req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let num = |s: &str| s.parse::<usize>().unwrap();
    match segments.as_slice() {
        ["abc"] => http::text(200, "abc"),
        ["sized", n] => sized(num(n), pattern_body(num(n))),
        // No Content-Length: chunked transfer encoding.
        ["unsized", n] => Response::new(pattern_body(num(n))),
        ["truncated", full, sent] => sized(
            num(full),
            http::slow_body(
                pattern_chunk(0, num(sent)),
                Duration::ZERO,
                Bytes::new(),
                true,
            ),
        ),
        ["stall"] => sized(
            10,
            http::slow_body(
                Bytes::new(),
                Duration::from_secs(30),
                pattern_chunk(0, 10),
                false,
            ),
        ),
        // Half the body, then silence: a download caught mid-way.
        ["half-then-stall", n] => sized(
            2 * num(n),
            http::slow_body(
                pattern_chunk(0, num(n)),
                Duration::from_secs(30),
                pattern_chunk(num(n), num(n)),
                false,
            ),
        ),
        ["slow-headers"] => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            http::text(200, "late")
        }
        ["status", code] => {
            let mut r = http::text(num(code) as u16, "no");
            if let Some(v) = query.strip_prefix("retry_after=") {
                let v = v.replace("%20", " ").replace("%2C", ",");
                r.headers_mut().insert(RETRY_AFTER, v.parse().unwrap());
            }
            r
        }
        ["redirect"] => {
            let to = query
                .strip_prefix("to=")
                .unwrap()
                .replace("%3A", ":")
                .replace("%2F", "/");
            Response::builder()
                .status(302)
                .header(LOCATION, to)
                .body(http::empty())
                .unwrap()
        }
        ["redirect-307"] => Response::builder()
            .status(307)
            .header(LOCATION, "/echo")
            .body(http::empty())
            .unwrap(),
        ["loop", n] => Response::builder()
            .status(301)
            .header(LOCATION, format!("/loop/{}", num(n) + 1))
            .body(http::empty())
            .unwrap(),
        // Answers with the method, whether Authorization arrived, and the body.
        ["echo"] => {
            let auth = req.headers().get(AUTHORIZATION).is_some();
            let accept_encoding = req
                .headers()
                .get("accept-encoding")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let method = req.method().to_string();
            let body = http::read_body(req, 1024).await.unwrap();
            http::text(
                200,
                format!(
                    "{method} auth={auth} ae={accept_encoding} body={}",
                    String::from_utf8_lossy(&body)
                ),
            )
        }
        // `n` pattern bytes as base64 in a JSON answer, as Evolution's
        // getBase64FromMediaMessage sends a file.
        ["base64-json", n] => {
            let json = base64_json_answer(num(n));
            sized(
                json.len(),
                http::stream(futures_util::stream::iter(
                    json.chunks(64 * 1024)
                        .map(|c| Ok(Bytes::copy_from_slice(c)))
                        .collect::<Vec<_>>(),
                )),
            )
        }
        ["base64-json-truncated", n] => {
            let json = base64_json_answer(num(n));
            let sent = Bytes::copy_from_slice(&json[..json.len() / 2]);
            sized(
                json.len(),
                http::slow_body(sent, Duration::ZERO, Bytes::new(), true),
            )
        }
        ["json-without-base64"] => http::text(200, r#"{"message":"Message not found"}"#),
        _ => http::text(404, "not found"),
    }
}

fn base64_json_answer(len: usize) -> Vec<u8> {
    use base64::Engine as _;
    let file: Vec<u8> = (0..len).map(pattern).collect();
    let text = base64::engine::general_purpose::STANDARD.encode(file);
    format!(r#"{{"mediaType":"videoMessage","base64":"{text}","mimetype":"video/mp4"}}"#)
        .into_bytes()
}

fn base64_json(url: Url) -> DownloadRequest {
    let mut request = DownloadRequest::get(url);
    request.answer = Answer::Base64JsonField("base64");
    request
}

struct Env {
    fetcher: Fetcher,
    spool: tempfile::TempDir,
}

impl Env {
    fn new(tweak: impl FnOnce(&mut FetchConfig)) -> Self {
        let spool = tempfile::tempdir().unwrap();
        let mut cfg = FetchConfig {
            allow_private_networks: true,
            spool_dir: spool.path().join("spool"),
            ..FetchConfig::default()
        };
        tweak(&mut cfg);
        let fetcher = Fetcher::new(cfg).unwrap();
        Self { fetcher, spool }
    }

    fn spool_dir(&self) -> std::path::PathBuf {
        self.spool.path().join("spool")
    }

    /// Every file below `spool_dir`, in any process's subdirectory.
    fn spool_files(&self) -> Vec<std::path::PathBuf> {
        files_under(&self.spool_dir())
    }

    async fn get(
        &self,
        url: Url,
        hosts: &HostPolicy,
    ) -> Result<archiver_core::StagedFile, FetchError> {
        self.fetcher
            .download(&DownloadRequest::get(url), hosts, &AtomicU64::new(0))
            .await
    }

    /// `request` within [`loopback`].
    async fn fetch(
        &self,
        request: &DownloadRequest,
    ) -> Result<archiver_core::StagedFile, FetchError> {
        self.fetcher
            .download(request, &loopback(), &AtomicU64::new(0))
            .await
    }

    /// A GET of `url` within [`loopback`], and the bytes its progress
    /// counter saw.
    async fn get_counting(&self, url: Url) -> (Result<archiver_core::StagedFile, FetchError>, u64) {
        let progress = AtomicU64::new(0);
        let result = self
            .fetcher
            .download(&DownloadRequest::get(url), &loopback(), &progress)
            .await;
        (result, progress.load(Ordering::Relaxed))
    }
}

fn loopback() -> HostPolicy {
    HostPolicy::new(["127.0.0.1"])
}

use test_support::staged_bytes as read;

/// The spool file of a staged file that must have one.
fn spool_path(file: &StagedFile) -> std::path::PathBuf {
    file.spool_path()
        .expect("staged in a spool file, not in memory")
        .to_owned()
}

#[tokio::test]
async fn streams_40_mib_hashed_with_exact_size_and_progress() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let len = 40 * MIB;
    let (file, progress) = env.get_counting(server.url(&format!("/sized/{len}"))).await;
    let file = file.unwrap();

    let mut expected = Sha256::new();
    for start in (0..len).step_by(MIB) {
        expected.update(pattern_chunk(start, MIB));
    }
    let expected: [u8; 32] = expected.finalize().into();
    assert_eq!(file.size, len as u64);
    assert_eq!(file.sha256.as_bytes(), &expected);
    assert_eq!(progress, len as u64);
    let path = spool_path(&file);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len as u64);
    let on_disk: [u8; 32] = Sha256::digest(read(&file)).into();
    assert_eq!(on_disk, expected);
    assert!(path.starts_with(env.spool.path().join("spool")));
}

#[tokio::test]
async fn chunked_body_without_content_length_is_accepted() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let (file, progress) = env.get_counting(server.url("/unsized/300000")).await;
    let file = file.unwrap();
    assert_eq!(file.size, 300_000);
    assert_eq!(progress, 300_000);
    assert_eq!(read(&file), pattern_chunk(0, 300_000).to_vec());
}

#[tokio::test]
async fn sha256_matches_a_known_vector_and_accept_encoding_is_identity() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let file = env.get(server.url("/abc"), &loopback()).await.unwrap();
    // sha256("abc"), FIPS 180-2 appendix B.1.
    assert_eq!(
        file.sha256.to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let echo = env.get(server.url("/echo"), &loopback()).await.unwrap();
    assert_eq!(
        String::from_utf8(read(&echo)).unwrap(),
        "GET auth=false ae=identity body="
    );
}

#[tokio::test]
async fn inline_bytes_are_hashed_capped_and_kept_in_memory_when_small() {
    let env = Env::new(|c| {
        c.max_file_bytes = 5;
        c.in_memory_max_bytes = 3;
    });
    let file = env
        .fetcher
        .stage_bytes(&Bytes::from_static(b"abc"))
        .await
        .unwrap();
    assert_eq!(file.size, 3);
    assert_eq!(
        file.sha256.to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(matches!(&file.body, StagedBody::Memory(b) if b.as_ref() == b"abc"));
    assert!(
        env.spool_files().is_empty(),
        "no spool file for a small file"
    );

    let spooled = env
        .fetcher
        .stage_bytes(&Bytes::from_static(b"abcd"))
        .await
        .unwrap();
    assert_eq!(read(&spooled), b"abcd");
    assert_eq!(env.spool_files(), vec![spool_path(&spooled)]);

    let err = env
        .fetcher
        .stage_bytes(&Bytes::from_static(b"abcdef"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { limit: 5 }), "{err:?}");
    assert_eq!(env.spool_files().len(), 1, "nothing left by the refusal");
}

#[tokio::test]
async fn a_download_announced_small_is_held_in_memory_and_one_not_announced_is_spooled() {
    let server = Server::start().await;
    let env = Env::new(|c| c.in_memory_max_bytes = 300_000);
    let (small, progress) = env.get_counting(server.url("/sized/300000")).await;
    let small = small.unwrap();
    assert!(
        small.spool_path().is_none(),
        "announced 300000 bytes: memory"
    );
    assert_eq!(progress, 300_000);
    assert_eq!(read(&small), pattern_chunk(0, 300_000).to_vec());
    let digest: [u8; 32] = Sha256::digest(read(&small)).into();
    assert_eq!(small.sha256.as_bytes(), &digest);
    assert!(env.spool_files().is_empty());

    let larger = env
        .get_counting(server.url("/sized/300001"))
        .await
        .0
        .unwrap();
    assert_eq!(read(&larger), pattern_chunk(0, 300_001).to_vec());
    assert_eq!(
        env.spool_files(),
        vec![spool_path(&larger)],
        "one byte over: spool"
    );

    // No Content-Length: the size is unknown until the end, so the spool.
    let unsized_ = env
        .get_counting(server.url("/unsized/1000"))
        .await
        .0
        .unwrap();
    assert_eq!(read(&unsized_), pattern_chunk(0, 1000).to_vec());
    assert!(unsized_.spool_path().is_some());
}

#[tokio::test]
async fn too_large_with_content_length_is_refused_up_front() {
    let server = Server::start().await;
    let env = Env::new(|c| c.max_file_bytes = 100_000);
    let (result, progress) = env.get_counting(server.url("/sized/100001")).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 100_000 }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(progress, 0, "no byte read");
    assert!(env.spool_files().is_empty());
    // Exactly at the limit is fine.
    let ok = env
        .get(server.url("/sized/100000"), &loopback())
        .await
        .unwrap();
    assert_eq!(ok.size, 100_000);
}

#[tokio::test]
async fn too_large_without_content_length_stops_and_cleans_up() {
    let server = Server::start().await;
    let env = Env::new(|c| c.max_file_bytes = 100_000);
    let (result, progress) = env.get_counting(server.url("/unsized/1000000")).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 100_000 }),
        "{err:?}"
    );
    assert!(progress <= 100_000);
    assert!(env.spool_files().is_empty(), "{:?}", env.spool_files());
}

#[tokio::test]
async fn a_request_s_own_cap_below_the_config_s_stops_the_download_there() {
    let server = Server::start().await;
    let env = Env::new(|c| c.max_file_bytes = 1_000_000);
    let capped = |path: &str| DownloadRequest {
        max_file_bytes: Some(100_000),
        ..DownloadRequest::get(server.url(path))
    };
    let err = env.fetch(&capped("/sized/100001")).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 100_000 }),
        "refused from Content-Length: {err:?}"
    );
    let progress = AtomicU64::new(0);
    let err = env
        .fetcher
        .download(&capped("/unsized/1000000"), &loopback(), &progress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 100_000 }),
        "{err:?}"
    );
    assert!(
        progress.load(Ordering::Relaxed) <= 100_000,
        "stopped at the cap"
    );
    assert_eq!(
        env.fetch(&capped("/sized/100000")).await.unwrap().size,
        100_000
    );
    let err = env
        .fetch(&DownloadRequest {
            max_file_bytes: Some(MIB as u64 / 2),
            ..base64_json(server.url(&format!("/base64-json/{}", MIB / 2 + 1)))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { .. }),
        "base64 too: {err:?}"
    );
    // A request cap above the config's does not lift it.
    let err = env
        .fetch(&DownloadRequest {
            max_file_bytes: Some(u64::MAX),
            ..DownloadRequest::get(server.url("/sized/1000001"))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 1_000_000 }),
        "{err:?}"
    );
    assert!(env.spool_files().is_empty(), "{:?}", env.spool_files());
}

#[tokio::test]
async fn truncated_body_is_truncated_and_cleaned_up() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let err = env
        .get(server.url("/truncated/200000/70000"), &loopback())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Truncated {
                expected: 200_000,
                got: 70_000
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(env.spool_files().is_empty());
}

#[tokio::test]
async fn stall_after_headers_times_out() {
    let server = Server::start().await;
    let env = Env::new(|c| c.read_timeout = Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = env
        .get(server.url("/stall"), &loopback())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(env.spool_files().is_empty());
}

#[tokio::test]
async fn a_download_dropped_mid_body_leaves_no_spool_file() {
    let server = Server::start().await;
    // A small file would be held in memory, with no file to leave.
    let env = Env::new(|c| c.in_memory_max_bytes = 0);
    let progress = AtomicU64::new(0);
    let request = DownloadRequest::get(server.url("/half-then-stall/100000"));
    let hosts = loopback();
    // Boxed, so that dropping it drops the future itself (a pinned
    // reference would leave it alive until the end of the scope).
    let mut download = Box::pin(env.fetcher.download(&request, &hosts, &progress));
    // Poll the download until half the body is in the spool file, then drop
    // it, as a cancelled job (shutdown, lost lease) does.
    while progress.load(Ordering::Relaxed) < 100_000 {
        tokio::select! {
            result = &mut download => panic!("download ended early: {result:?}"),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    assert_eq!(env.spool_files().len(), 1, "the half-written spool file");
    drop(download);
    assert!(env.spool_files().is_empty(), "{:?}", env.spool_files());
}

#[test]
fn startup_sweeps_spool_files_of_dead_processes_but_not_of_live_ones() {
    let env = Env::new(|c| c.in_memory_max_bytes = 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let live = rt
        .block_on(
            env.fetcher
                .stage_bytes(&Bytes::from_static(b"a live replica's file")),
        )
        .unwrap();
    // What a process killed with -9 leaves: its directory, unlocked now
    // that the kernel dropped its lock, with a half-written file in it.
    let dead_dir = env.spool_dir().join("proc-killed");
    std::fs::create_dir(&dead_dir).unwrap();
    std::fs::write(dead_dir.join("dl-1.spool"), b"partial").unwrap();
    // A file from a version that wrote straight into spool_dir.
    let legacy = env.spool_dir().join("dl-legacy.spool");
    std::fs::write(&legacy, b"old").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&legacy)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600))
        .unwrap();

    // Another replica (or this daemon after a restart) starts on the same
    // spool_dir.
    let _restarted = Fetcher::new(FetchConfig {
        spool_dir: env.spool_dir(),
        ..FetchConfig::default()
    })
    .unwrap();

    assert!(!dead_dir.exists(), "a dead process's directory is swept");
    assert!(
        !legacy.exists(),
        "a day-old file of an older version is swept"
    );
    assert_eq!(
        env.spool_files(),
        vec![spool_path(&live)],
        "the live fetcher's file stays"
    );
    assert_eq!(read(&live), b"a live replica's file");
}

#[tokio::test]
async fn no_response_headers_times_out() {
    let server = Server::start().await;
    let env = Env::new(|c| {
        c.connect_timeout = Duration::from_millis(300);
        c.read_timeout = Duration::from_millis(300);
    });
    let err = env
        .get(server.url("/slow-headers"), &loopback())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn statuses_classify() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let hosts = loopback();
    let get = |path: &str| env.get(server.url(path), &hosts);

    let e = get("/status/429?retry_after=7").await.unwrap_err();
    assert!(
        matches!(e, FetchError::Status { status: 429, retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::RetryAfter(Duration::from_secs(7)));

    let e = get("/status/503").await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Status {
                status: 503,
                retry_after: None
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(!e.is_link_dead());

    // An HTTP-date in the past means "retry now".
    let e = get("/status/503?retry_after=Sun,%2006%20Nov%201994%2008:49:37%20GMT")
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::RetryAfter(Duration::ZERO));

    for code in [401, 404, 403, 410] {
        let e = get(&format!("/status/{code}")).await.unwrap_err();
        assert!(e.is_link_dead(), "{code}");
        assert_eq!(e.class(), ErrorClass::Permanent);
    }
    let e = get("/status/400").await.unwrap_err();
    assert!(!e.is_link_dead());
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(env.spool_files().is_empty());
}

#[tokio::test]
async fn redirect_to_an_allowed_host_is_followed() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let target = format!("http://localhost:{}/abc", server.port());
    let hosts = HostPolicy::new(["127.0.0.1", "localhost"]);
    let file = env
        .get(server.url(&format!("/redirect?to={target}")), &hosts)
        .await
        .unwrap();
    assert_eq!(read(&file), b"abc");
    // Relative Location.
    let file = env
        .get(server.url("/redirect?to=/abc"), &loopback())
        .await
        .unwrap();
    assert_eq!(read(&file), b"abc");
}

#[tokio::test]
async fn redirect_to_a_disallowed_host_is_blocked() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let target = format!("http://localhost:{}/abc", server.port());
    let err = env
        .get(server.url(&format!("/redirect?to={target}")), &loopback())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FetchError::Blocked { host, .. } if host == "localhost"),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(server.hits(), 1, "the redirect target was never requested");
}

#[tokio::test]
async fn redirect_loops_stop_after_five_hops() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let err = env
        .get(server.url("/loop/0"), &loopback())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooManyRedirects), "{err:?}");
    assert_eq!(server.hits(), 6, "the first request and five redirects");
}

#[tokio::test]
async fn credentials_stay_on_the_first_origin_and_307_keeps_the_body() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let hosts = HostPolicy::new(["127.0.0.1", "localhost"]);
    let progress = AtomicU64::new(0);

    let mut req = DownloadRequest::get(server.url("/redirect-307"))
        .with_header(AUTHORIZATION, Secret::new(TOKEN));
    req.method = hyper::Method::POST;
    req.body = Some(Bytes::from_static(b"{\"id\":1}"));
    let file = env.fetcher.download(&req, &hosts, &progress).await.unwrap();
    assert_eq!(read(&file), b"POST auth=true ae=identity body={\"id\":1}");

    let target = format!("http://localhost:{}/echo", server.port());
    let req = DownloadRequest::get(server.url(&format!("/redirect?to={target}")))
        .with_header(AUTHORIZATION, Secret::new(TOKEN));
    let file = env.fetcher.download(&req, &hosts, &progress).await.unwrap();
    assert_eq!(read(&file), b"GET auth=false ae=identity body=");
}

#[tokio::test]
async fn loopback_is_blocked_unless_private_networks_are_allowed() {
    let server = Server::start().await;
    let env = Env::new(|c| c.allow_private_networks = false);

    // IP literal: checked directly.
    let err = env.get(server.url("/abc"), &loopback()).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Blocked { host, reason } if host == "127.0.0.1" && reason.contains("loopback")),
        "{err:?}"
    );
    // A name: checked on the addresses the resolver hands to the connector.
    let hosts = HostPolicy::new(["localhost"]);
    let url = Url::parse(&format!("http://localhost:{}/abc", server.port())).unwrap();
    let err = env.get(url, &hosts).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Blocked { host, reason } if host == "localhost" && reason.contains("loopback")),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    // The metadata address, as a literal.
    let url = Url::parse("http://169.254.169.254/latest/meta-data/").unwrap();
    let err = env
        .get(url, &HostPolicy::new(["169.254.169.254"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FetchError::Blocked { reason, .. } if reason.contains("metadata")),
        "{err:?}"
    );

    assert_eq!(server.hits(), 0);
    assert!(env.spool_files().is_empty());
}

#[tokio::test]
async fn host_not_in_policy_is_blocked_even_with_private_networks_allowed() {
    let server = Server::start().await;
    let env = Env::new(|c| c.allow_private_networks = true);
    let err = env
        .get(
            server.url("/abc"),
            &HostPolicy::new(["*.whatsapp.net", "lookaside.fbsbx.com"]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FetchError::Blocked { host, reason } if host == "127.0.0.1" && reason.contains("allowed")),
        "{err:?}"
    );
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn unsupported_scheme_is_a_bad_url() {
    let env = Env::new(|_| {});
    let err = env
        .get(
            Url::parse("file:///etc/passwd").unwrap(),
            &HostPolicy::new(Vec::<String>::new()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::BadUrl(_)), "{err:?}");
}

#[tokio::test]
async fn secrets_never_appear_in_debug_or_errors() {
    let server = Server::start().await;
    let env = Env::new(|c| c.read_timeout = Duration::from_millis(300));
    let progress = AtomicU64::new(0);
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut messages = Vec::new();
    for (url, hosts) in [
        (
            server.url(&format!("/status/404?token={QUERY_SECRET}")),
            loopback(),
        ),
        (
            server.url(&format!("/stall?token={QUERY_SECRET}")),
            loopback(),
        ),
        (
            server.url(&format!("/truncated/100/10?token={QUERY_SECRET}")),
            loopback(),
        ),
        (
            server.url(&format!("/loop/0?token={QUERY_SECRET}")),
            loopback(),
        ),
        (
            server.url(&format!("/abc?token={QUERY_SECRET}")),
            HostPolicy::new(["example.com"]),
        ),
        (
            Url::parse(&format!(
                "http://user:{QUERY_SECRET}@127.0.0.1:{closed_port}/x?token={QUERY_SECRET}"
            ))
            .unwrap(),
            loopback(),
        ),
        (
            Url::parse(&format!(
                "http://127.0.0.1:{closed_port}/waInstance1101/downloadFile/{QUERY_SECRET}"
            ))
            .unwrap(),
            loopback(),
        ),
    ] {
        let req = DownloadRequest::get(url).with_header(AUTHORIZATION, Secret::new(TOKEN));
        let debug = format!("{req:?}");
        assert!(
            !debug.contains("tok-4f1b") && !debug.contains(QUERY_SECRET),
            "{debug}"
        );
        assert!(debug.contains("authorization"), "{debug}");
        let err = env
            .fetcher
            .download(&req, &hosts, &progress)
            .await
            .unwrap_err();
        messages.push(format!("{err} | {err:?}"));
    }
    for m in &messages {
        assert!(!m.contains("tok-4f1b") && !m.contains(QUERY_SECRET), "{m}");
    }
    // The connection-refused error names the place, redacted.
    assert!(
        messages.iter().any(|m| m.contains(&format!(
            "127.0.0.1:{closed_port}/waInstance1101/downloadFile/***"
        ))),
        "{messages:#?}"
    );
}

#[tokio::test]
async fn a_base64_json_answer_becomes_the_decoded_file_in_the_spool() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let len = 8 * MIB + 5;
    let progress = AtomicU64::new(0);
    let staged = env
        .fetcher
        .download(
            &base64_json(server.url(&format!("/base64-json/{len}"))),
            &loopback(),
            &progress,
        )
        .await
        .unwrap();
    let file: Vec<u8> = (0..len).map(pattern).collect();
    assert_eq!(staged.size, len as u64);
    assert_eq!(
        staged.sha256.to_hex(),
        format!("{:x}", Sha256::digest(&file))
    );
    assert_eq!(read(&staged), file);
    // Progress counts the answer's bytes as they arrive.
    assert_eq!(
        progress.load(Ordering::Relaxed),
        base64_json_answer(len).len() as u64
    );
}

#[tokio::test]
async fn a_base64_json_file_over_the_cap_is_too_large_and_leaves_nothing() {
    let server = Server::start().await;
    let env = Env::new(|c| c.max_file_bytes = MIB as u64);
    let err = env
        .fetch(&base64_json(
            server.url(&format!("/base64-json/{}", MIB + 1)),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err:?}");
    // A file of exactly the cap fits, though its answer is a third larger.
    env.fetch(&base64_json(server.url(&format!("/base64-json/{MIB}"))))
        .await
        .unwrap();
    assert_eq!(env.spool_files().len(), 1);
}

#[tokio::test]
async fn an_answer_without_the_base64_field_is_a_bad_answer_worth_retrying() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let err = env
        .fetch(&base64_json(server.url("/json-without-base64")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FetchError::BadAnswer(d) if d.contains("no `base64`")),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(env.spool_files().is_empty());
}

#[tokio::test]
async fn a_truncated_base64_json_answer_is_reported_as_truncated() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let err = env
        .fetch(&base64_json(server.url("/base64-json-truncated/300000")))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Truncated { .. }), "{err:?}");
    assert!(env.spool_files().is_empty());
}

#[tokio::test]
async fn an_account_s_gateway_exemption_covers_its_api_url_host_and_no_listed_host() {
    let server = Server::start().await;
    let env = Env::new(|c| c.allow_private_networks = false);
    // The account lists `localhost` (the same server, by another name)
    // beside its gateway at 127.0.0.1.
    let account = HostPolicy::new(["localhost"]).with_gateway_api(&server.url("/"));
    let staged = env.get(server.url("/abc"), &account).await.unwrap();
    assert_eq!(read(&staged), b"abc");
    let by_name = format!("http://localhost:{}/abc", server.port())
        .parse()
        .unwrap();
    let err = env.get(by_name, &account).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Blocked { host, reason } if host == "localhost" && reason.contains("loopback")),
        "{err:?}"
    );
    // Another account, without the exemption, is refused the gateway's host.
    let other = HostPolicy::new(["127.0.0.1"]);
    let err = env.get(server.url("/abc"), &other).await.unwrap_err();
    assert!(matches!(err, FetchError::Blocked { .. }), "{err:?}");
}

#[tokio::test]
async fn the_gateway_s_own_api_host_is_reached_on_a_private_address_and_nothing_else_is() {
    let server = Server::start().await;
    let env = Env::new(|c| c.allow_private_networks = false);
    let gateway = HostPolicy::gateway_api(&server.url("/"));
    let staged = env.get(server.url("/abc"), &gateway).await.unwrap();
    assert_eq!(read(&staged), b"abc");
    // A redirect away from it is refused like any other host.
    let away = format!("http://localhost:{}/abc", server.port())
        .replace(':', "%3A")
        .replace('/', "%2F");
    let err = env
        .get(server.url(&format!("/redirect?to={away}")), &gateway)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Blocked { .. }), "{err:?}");
}

// --- Stream-through (`download_through`) --------------------------------------

/// A sink that keeps what it is given, or refuses after `fail_after` bytes,
/// and the length it was told to expect, if it was told before any byte.
#[derive(Default)]
struct Collect {
    bytes: Vec<u8>,
    fail_after: Option<usize>,
    announced: Option<u64>,
}

#[async_trait::async_trait]
impl archiver_core::ByteSink<&'static str> for Collect {
    fn expect_length(&mut self, length: u64) {
        assert!(self.bytes.is_empty(), "the length came after a byte");
        assert_eq!(self.announced.replace(length), None, "told twice");
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), &'static str> {
        if self
            .fail_after
            .is_some_and(|n| self.bytes.len() + chunk.len() > n)
        {
            return Err("the store is down");
        }
        self.bytes.extend_from_slice(&chunk);
        Ok(())
    }
}

#[tokio::test]
async fn a_download_streams_through_into_the_sink_with_no_spool_file() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let mut sink = Collect::default();
    let progress = AtomicU64::new(0);
    let len = 3 * MIB + 17;
    let written = env
        .fetcher
        .download_through(
            &DownloadRequest::get(server.url(&format!("/sized/{len}"))),
            &loopback(),
            &progress,
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(written, len as u64);
    assert_eq!(progress.load(Ordering::Relaxed), len as u64);
    assert_eq!(sink.bytes, pattern_chunk(0, len).to_vec());
    assert_eq!(sink.announced, Some(len as u64), "Content-Length passed on");
    assert!(env.spool_files().is_empty(), "{:?}", env.spool_files());
}

#[tokio::test]
async fn a_stream_through_keeps_the_caps_and_checks_of_a_download() {
    let server = Server::start().await;
    let env = Env::new(|c| c.max_file_bytes = 100_000);
    let through = |path: &str| {
        let request = DownloadRequest::get(server.url(path));
        let fetcher = env.fetcher.clone();
        async move {
            let mut sink = Collect::default();
            let result = fetcher
                .download_through(&request, &loopback(), &AtomicU64::new(0), &mut sink)
                .await;
            (result, sink.bytes.len())
        }
    };
    let (result, kept) = through("/unsized/1000000").await;
    assert!(
        matches!(
            result,
            Err(media_fetch::ThroughError::Fetch(FetchError::TooLarge {
                limit: 100_000
            }))
        ),
        "{result:?}"
    );
    assert!(kept <= 100_000, "stopped at the cap");
    let (result, _) = through("/truncated/90000/70000").await;
    assert!(
        matches!(
            result,
            Err(media_fetch::ThroughError::Fetch(FetchError::Truncated {
                expected: 90_000,
                got: 70_000
            }))
        ),
        "{result:?}"
    );
    let (result, kept) = through("/missing").await;
    assert!(
        matches!(&result, Err(media_fetch::ThroughError::Fetch(e)) if e.is_link_dead()),
        "{result:?}"
    );
    assert_eq!(kept, 0);
}

#[tokio::test]
async fn a_sink_that_fails_stops_the_download_with_its_own_error() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let mut sink = Collect {
        fail_after: Some(MIB),
        ..Collect::default()
    };
    let result = env
        .fetcher
        .download_through(
            &DownloadRequest::get(server.url(&format!("/sized/{}", 8 * MIB))),
            &loopback(),
            &AtomicU64::new(0),
            &mut sink,
        )
        .await;
    assert!(
        matches!(
            result,
            Err(media_fetch::ThroughError::Sink("the store is down"))
        ),
        "{result:?}"
    );
    assert!(sink.bytes.len() <= MIB);
}

#[tokio::test]
async fn a_base64_json_answer_is_not_streamed_through() {
    let server = Server::start().await;
    let env = Env::new(|_| {});
    let result = env
        .fetcher
        .download_through(
            &base64_json(server.url("/base64-json/10")),
            &loopback(),
            &AtomicU64::new(0),
            &mut Collect::default(),
        )
        .await;
    assert!(
        matches!(
            result,
            Err(media_fetch::ThroughError::Fetch(FetchError::BadUrl(_)))
        ),
        "{result:?}"
    );
    assert_eq!(server.hits(), 0, "refused before any request");
}
