//! The front door under hostile clients: each test speaks raw HTTP/1.1 over
//! TCP to a real [`Receiver`] (a real On-Premises API adapter, a SQLite
//! queue in a temporary folder), so that it controls exactly which bytes
//! arrive and when, as a hostile client would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archiver_core::SystemClock;
use providers::{AccountConfig, ApiClient};
use retry_queue::{JobFilter, JobQueue, RetryPolicy, SqliteQueue};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use webhook_receiver::{Readiness, Receiver, ServerConfig};

const TOKEN: &str = "hook-secret";

#[derive(Debug)]
struct AlwaysReady;

#[async_trait::async_trait]
impl Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A receiver serving one On-Prem account `shop` on `127.0.0.1:0`.
struct FrontDoor {
    addr: SocketAddr,
    queue: Arc<SqliteQueue>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FrontDoor {
    /// `server` is the `[server]` section (TOML) under test.
    async fn start(server: &str) -> Self {
        let config = ServerConfig::deserialize(toml::from_str::<toml::Table>(server).unwrap())
            .unwrap()
            .validate()
            .unwrap();
        let account: AccountConfig = toml::from_str(&format!(
            r#"
            provider = "onprem"
            name = "shop"
            api_url = "http://127.0.0.1:9"
            username = "admin"
            password = "pw"
            webhook_token = "{TOKEN}"
            "#
        ))
        .unwrap();
        let api = ApiClient::new(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        let provider = providers::build(&account, &api).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(
            SqliteQueue::open(
                &dir.path().join("queue.db"),
                RetryPolicy::default(),
                Arc::new(SystemClock),
            )
            .unwrap(),
        );
        let receiver = Arc::new(Receiver::new(
            [("shop".to_owned(), provider)].into_iter().collect(),
            queue.clone(),
            Arc::new(Notify::new()),
            Arc::new(AlwaysReady),
            config,
        ));
        let listener = webhook_receiver::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(receiver.serve(listener, stop.clone(), Duration::from_secs(1)));
        FrontDoor {
            addr,
            queue,
            stop,
            _dir: dir,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// A connection from another client: loopback answers every
    /// 127.0.0.0/8 address, so `127.0.0.2` is a second host here.
    async fn connect_from(&self, client: &str) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(client.parse().unwrap(), 0))
            .unwrap();
        socket.connect(self.addr).await.unwrap()
    }

    async fn jobs(&self) -> usize {
        self.queue.list(&JobFilter::default()).await.unwrap().len()
    }
}

/// An On-Prem webhook announcing `count` images, dated now.
fn webhook(count: usize) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let messages: Vec<_> = (0..count)
        .map(|i| {
            serde_json::json!({
                "from": "16315551234",
                "id": format!("ABGGFlA5Fpaf{i:04}"),
                "timestamp": now.to_string(),
                "type": "image",
                "image": {
                    "id": format!("f043afd0-f0ae-4b9c-ab3d-696fb4c8{i:04}"),
                    "mime_type": "image/jpeg",
                    "sha256": "29ed500fa64eb55fc19dc4124acb300e5dcca0f822a301ae99944db012345678",
                }
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "messages": messages })).unwrap()
}

/// A request head for `POST /webhooks/shop`.
fn head(token: &str, content_length: usize) -> Vec<u8> {
    format!(
        "POST /webhooks/shop HTTP/1.1\r\nHost: archiver\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
    .into_bytes()
}

/// A whole webhook request with the right token.
fn request(body: &[u8]) -> Vec<u8> {
    let mut bytes = head(TOKEN, body.len());
    bytes.extend_from_slice(body);
    bytes
}

/// One response read off `stream`: its status, head and body, or `None`
/// if none came within `within`.
async fn response(stream: &mut TcpStream, within: Duration) -> Option<(u16, String, String)> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse().unwrap());
                if buf.len() >= end + 4 + length {
                    let status = head[9..12].parse().unwrap();
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into();
                    return Some((status, head, body));
                }
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// Whether the server closes `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let drain = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, drain).await.is_ok()
}

const PROMPTLY: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_wrong_token_is_refused_before_the_body_is_read() {
    let door = FrontDoor::start("").await;
    let mut stream = door.connect().await;
    // A 1 MiB body is announced; all but its last byte is never sent.
    stream
        .write_all(&head("wrong-token", 1 << 20))
        .await
        .unwrap();
    stream.write_all(b"{\"messages\":").await.unwrap();
    let (status, head, body) = response(&mut stream, PROMPTLY)
        .await
        .expect("a 401 without waiting for the body");
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_within(&mut stream, PROMPTLY).await);
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_its_connection_closed() {
    let door = FrontDoor::start(r#"body_read_timeout = "300ms""#).await;
    let mut stream = door.connect().await;
    let body = webhook(1);
    stream.write_all(&head(TOKEN, body.len())).await.unwrap();
    stream.write_all(&body[..body.len() - 1]).await.unwrap();
    let (status, _, message) = response(&mut stream, PROMPTLY).await.expect("an answer");
    assert_eq!(status, 408);
    assert!(message.contains("server.body_read_timeout"), "{message}");
    assert!(closed_within(&mut stream, PROMPTLY).await);
    assert_eq!(door.jobs().await, 0);
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_413_and_none_of_it_is_held() {
    let door = FrontDoor::start(
        r#"
        max_body_bytes = 1000
        body_read_timeout = "500ms"
        "#,
    )
    .await;
    let mut stream = door.connect().await;
    stream.write_all(&head(TOKEN, 1 << 30)).await.unwrap();
    stream.write_all(&[b' '; 2000]).await.unwrap();
    let (status, _, message) = response(&mut stream, PROMPTLY).await.expect("an answer");
    assert_eq!(status, 413);
    assert!(message.contains("server.max_body_bytes"), "{message}");
}

#[tokio::test]
async fn a_head_trickled_slowly_or_never_started_is_cut_off_at_header_read_timeout() {
    let door = FrontDoor::start(
        r#"
        header_read_timeout = "300ms"
        idle_timeout = "30s"
        "#,
    )
    .await;
    let mut trickled = door.connect().await;
    trickled
        .write_all(b"POST /webhooks/shop HTTP/1.1\r\nHost: a")
        .await
        .unwrap();
    // A new connection's first head is due header_read_timeout after
    // connecting, not after the keep-alive idle_timeout.
    let mut silent = door.connect().await;
    assert!(closed_within(&mut trickled, PROMPTLY).await);
    assert!(closed_within(&mut silent, PROMPTLY).await);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let door = FrontDoor::start(
        r#"
        header_read_timeout = "30s"
        idle_timeout = "400ms"
        "#,
    )
    .await;
    let mut stream = door.connect().await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (status, _, _) = response(&mut stream, PROMPTLY).await.unwrap();
    assert_eq!(status, 200);
    // Idle for longer than header_read_timeout would allow a head, but it
    // is idle_timeout that counts while no head has started.
    let started = tokio::time::Instant::now();
    assert!(closed_within(&mut stream, PROMPTLY).await);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let door = FrontDoor::start("max_connections = 2\nmax_connections_per_client = 2").await;
    let first = door.connect().await;
    let second = door.connect().await;
    // Let the server accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = door.connect().await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(
        response(&mut third, Duration::from_millis(500))
            .await
            .is_none(),
        "a third connection was served while two were open"
    );
    drop(first);
    let (status, _, _) = response(&mut third, PROMPTLY)
        .await
        .expect("served once a permit is free");
    assert_eq!(status, 200);
    drop(second);
}

#[tokio::test]
async fn when_the_body_budget_is_spent_a_webhook_gets_503_with_retry_after_and_later_200() {
    let body = webhook(1);
    let door = FrontDoor::start(&format!(
        "max_body_bytes = {}\nmax_inflight_body_bytes = {}",
        body.len(),
        body.len() + body.len() / 2
    ))
    .await;
    // Another client holds most of the budget with a body it never finishes.
    let mut hog = door.connect_from("127.0.0.2").await;
    hog.write_all(&head(TOKEN, body.len())).await.unwrap();
    hog.write_all(&body[..body.len() - 1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut stream = door.connect().await;
    stream.write_all(&request(&body)).await.unwrap();
    let (status, head, message) = response(&mut stream, PROMPTLY).await.expect("an answer");
    assert_eq!(status, 503, "{message}");
    assert!(head.contains("retry-after: 5"), "{head}");
    assert!(
        message.contains("(server.max_inflight_body_bytes in use)"),
        "{message}"
    );
    assert_eq!(door.jobs().await, 0);

    // Once the hog is gone its share is free again; the redelivery lands.
    drop(hog);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut retry = door.connect().await;
    retry.write_all(&request(&body)).await.unwrap();
    let (status, _, message) = response(&mut retry, PROMPTLY).await.expect("an answer");
    assert_eq!(status, 200, "{message}");
    assert_eq!(door.jobs().await, 1);
}

#[tokio::test]
async fn legitimate_webhooks_get_200_during_a_flood_of_bogus_stalled_ones() {
    let door = FrontDoor::start(
        r#"
        max_inflight_body_bytes = 4194304
        body_read_timeout = "30s"
        "#,
    )
    .await;
    let mut flood = Vec::new();
    for _ in 0..48 {
        let mut stream = door.connect().await;
        stream
            .write_all(&head("wrong-token", 1 << 20))
            .await
            .unwrap();
        let _ = stream.write_all(&vec![b' '; 64 * 1024]).await;
        flood.push(stream);
    }
    for i in 0..5 {
        let mut stream = door.connect().await;
        stream.write_all(&request(&webhook(1))).await.unwrap();
        let (status, _, message) = response(&mut stream, PROMPTLY)
            .await
            .unwrap_or_else(|| panic!("webhook {i} unanswered during the flood"));
        assert_eq!(status, 200, "webhook {i}: {message}");
    }
}

#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let door = FrontDoor::start("max_connections = 8\nmax_connections_per_client = 2").await;
    let mut hogs = Vec::new();
    for _ in 0..2 {
        hogs.push(door.connect_from("127.0.0.2").await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its third connection is closed as soon as it is accepted...
    let mut third = door.connect_from("127.0.0.2").await;
    assert!(closed_within(&mut third, PROMPTLY).await);
    // ...while another client is served.
    let mut stream = door.connect().await;
    stream.write_all(&request(&webhook(1))).await.unwrap();
    let (status, _, message) = response(&mut stream, PROMPTLY).await.expect("an answer");
    assert_eq!(status, 200, "{message}");
}

#[tokio::test]
async fn stalled_bodies_from_one_client_spend_only_its_share_of_the_body_budget() {
    // Four times a body's room in all; a client may hold one body's worth.
    let body = webhook(1);
    let door = FrontDoor::start(&format!(
        "max_body_bytes = {}\nmax_inflight_body_bytes = {}\nbody_read_timeout = \"30s\"",
        body.len(),
        4 * body.len()
    ))
    .await;
    // A client that knows the token (or a signed route, whose check needs
    // the body) starts bodies it never finishes.
    let mut hogs = Vec::new();
    for _ in 0..6 {
        let mut hog = door.connect_from("127.0.0.2").await;
        hog.write_all(&head(TOKEN, body.len())).await.unwrap();
        hog.write_all(&body[..body.len() - 1]).await.unwrap();
        hogs.push(hog);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Its own next webhook finds its share spent...
    let mut own = door.connect_from("127.0.0.2").await;
    own.write_all(&request(&body)).await.unwrap();
    let (status, _, message) = response(&mut own, PROMPTLY).await.expect("an answer");
    assert_eq!(status, 503, "{message}");
    assert!(
        message.contains("server.max_inflight_body_bytes_per_client"),
        "{message}"
    );
    // ...while the provider's webhooks are all answered 200.
    for i in 0..3 {
        let mut stream = door.connect().await;
        stream.write_all(&request(&body)).await.unwrap();
        let (status, _, message) = response(&mut stream, PROMPTLY).await.expect("an answer");
        assert_eq!(status, 200, "webhook {i}: {message}");
    }
}

#[tokio::test]
async fn a_webhook_announcing_more_media_than_the_cap_is_413_naming_it() {
    let door = FrontDoor::start("max_jobs_per_webhook = 2").await;
    let mut stream = door.connect().await;
    stream.write_all(&request(&webhook(3))).await.unwrap();
    let (status, _, message) = response(&mut stream, PROMPTLY).await.expect("an answer");
    assert_eq!(status, 413);
    assert!(
        message.contains("announces 3 media files; server.max_jobs_per_webhook is 2"),
        "{message}"
    );
    assert_eq!(
        door.jobs().await,
        0,
        "nothing of a refused webhook is queued"
    );

    let mut stream = door.connect().await;
    stream.write_all(&request(&webhook(2))).await.unwrap();
    let (status, _, message) = response(&mut stream, PROMPTLY).await.expect("an answer");
    assert_eq!(status, 200, "{message}");
    assert_eq!(door.jobs().await, 2);
}
