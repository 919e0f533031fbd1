use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use archiver_core::{ByteSink, Sha256Digest, StagedBody, StagedFile, parse_retry_after};
use http::header::{ACCEPT_ENCODING, LOCATION, RETRY_AFTER};
use http::{HeaderValue, Method, StatusCode};
use reqwest::redirect::Policy;
use sha2::Digest as _;
use url::{Host, Url};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::base64_json::{self, ChannelReader};
use crate::guard::{BlockedAddress, GuardedResolver, forbidden_reason};
use crate::spool::{Spool, Staging};
use crate::{Answer, DownloadRequest, FetchConfig, FetchError, HostPolicy, redact_url};

/// Redirects followed before giving up with [`FetchError::TooManyRedirects`].
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Downloads files into the spool. Cheap to clone: clones share one
/// connection pool.
///
/// The HTTP client never uses a proxy: the SSRF guard must see the address
/// actually connected to, which a proxy would hide.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    /// For the gateway API host of a policy ([`HostPolicy::with_gateway_api`])
    /// only: the same client without the private-address check.
    gateway_client: reqwest::Client,
    cfg: Arc<FetchConfig>,
    /// This process's locked directory in `spool_dir`, shared by clones.
    spool: Arc<Spool>,
}

impl Fetcher {
    /// Builds the HTTP client, creates `spool_dir` if it is missing, removes
    /// the spool files of processes that are gone (a `kill -9` leaves
    /// some), and takes this process's own locked spool directory in it.
    /// Other live processes' files are left alone, so replicas may share
    /// one `spool_dir`.
    pub fn new(cfg: FetchConfig) -> Result<Self, FetchError> {
        let spool = Arc::new(Spool::open(&cfg.spool_dir)?);
        Ok(Self {
            client: http_client(&cfg, cfg.allow_private_networks)?,
            gateway_client: http_client(&cfg, true)?,
            cfg: Arc::new(cfg),
            spool,
        })
    }

    /// Streams the response body into a new spool file while hashing it,
    /// or into memory when `Content-Length` announces at most
    /// `in_memory_max_bytes` (see [`StagedBody`](archiver_core::StagedBody)).
    ///
    /// A body larger than that, or of unannounced size, is never held in
    /// memory. Enforces `max_file_bytes` (the request's own when lower; from
    /// `Content-Length` up front and on the bytes received), `read_timeout`
    /// while waiting for headers and between chunks, and the SSRF guard on
    /// the URL and on every redirect hop (at most 5 redirects, followed here
    /// rather than by the client). `progress` grows by the size of each
    /// chunk so that the caller can renew its lease while bytes move. A
    /// spool file is scratch space, not fsynced (the store makes what it
    /// keeps durable); on any error (or if the future is dropped) it is
    /// removed. Compression is never requested or undone.
    pub async fn download(
        &self,
        req: &DownloadRequest,
        hosts: &HostPolicy,
        progress: &AtomicU64,
    ) -> Result<StagedFile, FetchError> {
        let shown = redact_url(&req.url);
        let result = self.download_inner(req, hosts, progress).await;
        match &result {
            Ok(file) => {
                tracing::debug!(url = %shown, bytes = file.size, sha256 = %file.sha256, "download complete")
            }
            Err(error) => tracing::debug!(url = %shown, %error, "download failed"),
        }
        result
    }

    /// Like [`Fetcher::download`], for a body already in memory (a provider
    /// that inlines the file, e.g. base64 in a webhook): hashes it and keeps
    /// it in memory if it is at most `in_memory_max_bytes`, else writes it
    /// into the spool; under the same size cap.
    pub async fn stage_bytes(&self, bytes: &Bytes) -> Result<StagedFile, FetchError> {
        let len = bytes.len() as u64;
        if len > self.cfg.max_file_bytes {
            return Err(FetchError::TooLarge {
                limit: self.cfg.max_file_bytes,
            });
        }
        if len <= self.cfg.in_memory_max_bytes {
            let sha256: [u8; 32] = sha2::Sha256::digest(bytes).into();
            return Ok(StagedFile {
                body: StagedBody::Memory(bytes.clone()),
                size: len,
                sha256: Sha256Digest::from_bytes(sha256),
            });
        }
        let mut staging = Staging::spool(self.spool.dir())?;
        staging.write(bytes).await?;
        staging.finish().await
    }

    /// Streams the response body into `sink` instead of staging it
    /// (stream-through: the caller knows the file's hash in advance and the
    /// sink commits the bytes only if they match it). The same limits and
    /// guards as [`Fetcher::download`] apply; the body is not hashed here
    /// (the sink hashes what it keeps). Returns the number of bytes
    /// written. Only for a body that is the file ([`Answer::File`]): a
    /// base64-in-JSON answer is refused with [`FetchError::BadUrl`] before
    /// any request.
    pub async fn download_through<E: Send, S: ByteSink<E>>(
        &self,
        req: &DownloadRequest,
        hosts: &HostPolicy,
        progress: &AtomicU64,
        sink: &mut S,
    ) -> Result<u64, ThroughError<E>> {
        if req.answer != Answer::File {
            return Err(ThroughError::Fetch(FetchError::BadUrl(
                "a base64-in-JSON answer cannot be streamed through".into(),
            )));
        }
        let shown = redact_url(&req.url);
        let (url, response) = self
            .send_following_redirects(req, hosts)
            .await
            .map_err(ThroughError::Fetch)?;
        let limit = self.max_bytes_for(req);
        let result = self.receive(&url, response, limit, progress, sink).await;
        match &result {
            Ok(bytes) => tracing::debug!(url = %shown, bytes, "download streamed through"),
            Err(ThroughError::Fetch(error)) => {
                tracing::debug!(url = %shown, %error, "download failed")
            }
            Err(ThroughError::Sink(_)) => {
                tracing::debug!(url = %shown, "the sink stopped the download")
            }
        }
        result
    }

    /// The most bytes `req` may download: `fetch.max_file_bytes`, or the
    /// request's own cap when lower.
    pub fn max_bytes_for(&self, req: &DownloadRequest) -> u64 {
        req.max_file_bytes.map_or(self.cfg.max_file_bytes, |cap| {
            cap.min(self.cfg.max_file_bytes)
        })
    }

    async fn download_inner(
        &self,
        req: &DownloadRequest,
        hosts: &HostPolicy,
        progress: &AtomicU64,
    ) -> Result<StagedFile, FetchError> {
        let (url, response) = self.send_following_redirects(req, hosts).await?;
        let limit = self.max_bytes_for(req);
        let announced = response.content_length();
        let mut staging = match (req.answer, announced) {
            (Answer::File, Some(len)) if len <= self.cfg.in_memory_max_bytes.min(limit) => {
                Staging::memory(len)
            }
            _ => Staging::spool(self.spool.dir())?,
        };
        match req.answer {
            Answer::File => {
                self.receive(&url, response, limit, progress, &mut staging)
                    .await
                    .map_err(ThroughError::flatten)?;
            }
            Answer::Base64JsonField(field) => {
                self.receive_base64_json(&url, response, field, limit, progress, &mut staging)
                    .await?;
            }
        }
        staging.finish().await
    }

    /// Streams a response body into `sink`, at most `limit` bytes, with
    /// `read_timeout` between chunks, checked against `Content-Length`;
    /// returns the number of bytes received.
    async fn receive<E: Send, S: ByteSink<E>>(
        &self,
        url: &Url,
        mut response: reqwest::Response,
        limit: u64,
        progress: &AtomicU64,
        sink: &mut S,
    ) -> Result<u64, ThroughError<E>> {
        let expected = response.content_length();
        if expected.is_some_and(|len| len > limit) {
            return Err(ThroughError::Fetch(FetchError::TooLarge { limit }));
        }
        if let Some(length) = expected {
            sink.expect_length(length);
        }
        let mut received: u64 = 0;
        loop {
            let next = tokio::time::timeout(self.cfg.read_timeout, response.chunk()).await;
            let chunk = match next {
                Err(_) => {
                    return Err(ThroughError::Fetch(FetchError::Timeout(format!(
                        "no data for {:?} from {} after {received} bytes",
                        self.cfg.read_timeout,
                        redact_url(url),
                    ))));
                }
                Ok(Err(e)) => {
                    return Err(ThroughError::Fetch(match expected {
                        Some(expected) if received < expected => FetchError::Truncated {
                            expected,
                            got: received,
                        },
                        _ if e.is_timeout() => {
                            FetchError::Timeout(format!("{}: {}", redact_url(url), chain(&e)))
                        }
                        _ => FetchError::Io(format!(
                            "reading the body from {}: {}",
                            redact_url(url),
                            chain(&e)
                        )),
                    }));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            let len = chunk.len() as u64;
            if received + len > limit {
                return Err(ThroughError::Fetch(FetchError::TooLarge { limit }));
            }
            sink.write(chunk).await.map_err(ThroughError::Sink)?;
            received += len;
            progress.fetch_add(len, Ordering::Relaxed);
        }
        match expected {
            Some(expected) if received != expected => {
                Err(ThroughError::Fetch(FetchError::Truncated {
                    expected,
                    got: received,
                }))
            }
            _ => Ok(received),
        }
    }

    /// [`Answer::Base64JsonField`]: the body goes through a bounded channel
    /// to the decoder on a blocking thread (see `base64_json.rs`), whose
    /// decoded chunks come back through another into the spool, under
    /// `max_file_bytes`. Memory: a few chunks in each channel.
    async fn receive_base64_json(
        &self,
        url: &Url,
        response: reqwest::Response,
        field: &'static str,
        limit: u64,
        progress: &AtomicU64,
        staging: &mut Staging,
    ) -> Result<(), FetchError> {
        let (body_tx, body_rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (file_tx, file_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
        let decoder = tokio::task::spawn_blocking(move || {
            base64_json::decode_field(ChannelReader::new(body_rx), field, |chunk| {
                file_tx
                    .blocking_send(chunk.to_vec())
                    .map_err(|_| std::io::Error::other("the download stopped"))
            })
        });
        let body = async move {
            let mut sink = DecoderInput(body_tx);
            let answer_limit = base64_json::answer_limit(limit);
            self.receive(url, response, answer_limit, progress, &mut sink)
                .await
                .map_err(ThroughError::flatten)
        };
        let file = write_decoded(file_rx, staging, limit);
        // The download's own errors come first; the decoder, which reads
        // the body to its end whatever it finds, answers after.
        let transfer = tokio::try_join!(body, file);
        let decoded = decoder
            .await
            .unwrap_or_else(|e| Err(FetchError::Io(format!("the base64 decoder failed: {e}"))));
        transfer?;
        decoded
    }

    /// Sends the request, following redirects by hand so that every hop goes
    /// through [`Fetcher::check_url`]. Returns the final URL and a successful
    /// response whose body is still unread.
    async fn send_following_redirects(
        &self,
        req: &DownloadRequest,
        hosts: &HostPolicy,
    ) -> Result<(Url, reqwest::Response), FetchError> {
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        // Caller headers may be credentials: they go to the first origin only.
        let first_origin = url.origin();
        let mut send_headers = true;

        for hop in 0..=MAX_REDIRECTS {
            let client = self.check_url(&url, hosts)?;
            let mut builder = client
                .request(method.clone(), url.clone())
                .header(ACCEPT_ENCODING, "identity");
            if send_headers {
                for (name, value) in &req.headers {
                    let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                        FetchError::BadUrl(format!("request header {name} has an invalid value"))
                    })?;
                    value.set_sensitive(true);
                    builder = builder.header(name, value);
                }
            }
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }

            // The client's connect_timeout covers DNS + handshake; after
            // that the server gets read_timeout to start answering.
            let wait = self.cfg.connect_timeout + self.cfg.read_timeout;
            let response = tokio::time::timeout(wait, builder.send())
                .await
                .map_err(|_| {
                    FetchError::Timeout(format!(
                        "no response within {wait:?} from {}",
                        redact_url(&url)
                    ))
                })?
                .map_err(|e| from_reqwest(e, &url))?;

            let status = response.status();
            if status.is_success() {
                return Ok((url, response));
            }
            let location = response.headers().get(LOCATION);
            if !is_followed_redirect(status) || location.is_none() {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                return Err(FetchError::Status {
                    status: status.as_u16(),
                    retry_after,
                });
            }
            if hop == MAX_REDIRECTS {
                break;
            }
            let next = location
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    FetchError::BadUrl(format!(
                        "unusable redirect Location from {}",
                        redact_url(&url)
                    ))
                })?;
            if url.scheme() == "https" && next.scheme() == "http" {
                return Err(FetchError::Blocked {
                    host: next.host_str().unwrap_or_default().to_owned(),
                    reason: "redirect from https to plain http".to_owned(),
                });
            }
            if status == StatusCode::SEE_OTHER
                || (matches!(status.as_u16(), 300..=302) && method == Method::POST)
            {
                if method != Method::HEAD {
                    method = Method::GET;
                }
                body = None;
            }
            if next.origin() != first_origin {
                send_headers = false;
            }
            tracing::debug!(from = %redact_url(&url), to = %redact_url(&next), status = status.as_u16(), "following redirect");
            url = next;
        }
        Err(FetchError::TooManyRedirects)
    }

    /// The SSRF guard's static half, for one hop: scheme, host allowlist,
    /// and (for IP-literal hosts, which skip DNS) the address check. Returns
    /// the client for the hop: the guarded one, or for the gateway's own API
    /// host ([`HostPolicy::with_gateway_api`]) the one without the address check.
    fn check_url(&self, url: &Url, hosts: &HostPolicy) -> Result<&reqwest::Client, FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::BadUrl(format!(
                "unsupported scheme in {}",
                redact_url(url)
            )));
        }
        let (host, ip) = match url.host() {
            None => {
                return Err(FetchError::BadUrl(format!(
                    "no host in {}",
                    redact_url(url)
                )));
            }
            Some(Host::Domain(d)) => (d.to_owned(), None),
            Some(Host::Ipv4(a)) => (a.to_string(), Some(a.into())),
            Some(Host::Ipv6(a)) => (a.to_string(), Some(a.into())),
        };
        if !hosts.allows(&host) {
            return Err(FetchError::Blocked {
                host,
                reason: "host is not in the account's allowed download hosts".to_owned(),
            });
        }
        if hosts.trusts_addresses_of(&host) {
            return Ok(&self.gateway_client);
        }
        if !self.cfg.allow_private_networks
            && let Some(reason) = ip.and_then(forbidden_reason)
        {
            return Err(FetchError::Blocked {
                host,
                reason: format!("{reason} address"),
            });
        }
        Ok(&self.client)
    }
}

/// Chunks in flight in each channel of a base64-in-JSON download.
const CHANNEL_CHUNKS: usize = 4;

/// Why [`Fetcher::download_through`] failed: the download, or the sink it
/// was writing into (whose error is passed on as it came).
#[derive(Debug)]
pub enum ThroughError<E> {
    /// The download failed (the same errors as [`Fetcher::download`]).
    Fetch(FetchError),
    /// The sink refused a chunk; the download stopped there.
    Sink(E),
}

impl ThroughError<FetchError> {
    /// One error, for the stages whose sink fails with a [`FetchError`]
    /// itself (the spool, the base64 decoder).
    fn flatten(self) -> FetchError {
        match self {
            ThroughError::Fetch(e) | ThroughError::Sink(e) => e,
        }
    }
}

/// The body of a base64-in-JSON answer, on its way to the decoder.
struct DecoderInput(mpsc::Sender<Bytes>);

#[async_trait::async_trait]
impl ByteSink<FetchError> for DecoderInput {
    // The decoder reads to the end of the body, so a closed channel means
    // it failed; its own error is what the caller reports.
    async fn write(&mut self, chunk: Bytes) -> Result<(), FetchError> {
        self.0
            .send(chunk)
            .await
            .map_err(|_| FetchError::Io("the base64 decoder stopped".into()))
    }
}

/// Writes the decoder's chunks into the spool, refusing a decoded file
/// above `limit`.
async fn write_decoded(
    mut chunks: mpsc::Receiver<Vec<u8>>,
    staging: &mut Staging,
    limit: u64,
) -> Result<(), FetchError> {
    while let Some(chunk) = chunks.recv().await {
        if staging.size() + chunk.len() as u64 > limit {
            return Err(FetchError::TooLarge { limit });
        }
        staging.write(&chunk).await?;
    }
    Ok(())
}

/// The download client: no redirects (followed by hand, each hop checked),
/// no proxy (the guard must see the address connected to), and the guarding
/// resolver.
fn http_client(
    cfg: &FetchConfig,
    allow_private_networks: bool,
) -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .connect_timeout(cfg.connect_timeout)
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private_networks,
        }))
        .user_agent(concat!("media-archiver/", env!("CARGO_PKG_VERSION")))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| FetchError::Io(format!("building the HTTP client: {}", chain(&e))))
}

/// 301, 302, 303, 307 and 308 are followed (300 too, when it names a
/// `Location`); 304 and the rest are answers, not redirects.
fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 300..=303 | 307 | 308)
}

fn from_reqwest(err: reqwest::Error, url: &Url) -> FetchError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(b) = e.downcast_ref::<BlockedAddress>() {
            return FetchError::Blocked {
                host: b.host.clone(),
                reason: format!("resolves to {}, a {} address", b.addr, b.reason),
            };
        }
        source = e.source();
    }
    let (timeout, builder) = (err.is_timeout(), err.is_builder());
    let detail = format!("{}: {}", redact_url(url), chain(&err.without_url()));
    if timeout {
        FetchError::Timeout(detail)
    } else if builder {
        FetchError::BadUrl(detail)
    } else {
        // Connect failures, and the request failing on the wire before a
        // response arrived: both worth another attempt.
        FetchError::Connect(detail)
    }
}

/// An error and its sources, joined with ": ", for messages. Callers strip
/// URLs from reqwest errors first (`without_url`).
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}
