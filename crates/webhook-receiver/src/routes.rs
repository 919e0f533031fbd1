//! Request routing and the webhook handler.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use providers::WebhookRequest;
use retry_queue::Enqueued;
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Receiver;
use crate::admin::AT_RISK_WITHIN;
use crate::clients::Client;
use crate::error::{ApiError, json};

impl Receiver {
    /// Routes one request. Every outcome, errors included, is a response.
    pub(crate) async fn route(
        &self,
        request: Request<Incoming>,
        client: &Client,
    ) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let result = match (request.method(), segments.as_slice()) {
            (&Method::GET, ["healthz"]) => Ok(json(StatusCode::OK, &json!({"status": "ok"}))),
            (_, ["healthz"]) => Err(ApiError::MethodNotAllowed("GET")),
            (&Method::GET, ["readyz"]) => self.readyz().await,
            (_, ["readyz"]) => Err(ApiError::MethodNotAllowed("GET")),
            (&Method::GET, ["metrics"]) => self.metrics(&request).await,
            (_, ["metrics"]) => Err(ApiError::MethodNotAllowed("GET")),
            (&Method::POST, ["webhooks", account]) => {
                let result = self.webhook(account, request, client).await;
                if self.accounts.contains_key(*account) {
                    count_webhook(account, &result);
                }
                result
            }
            (&Method::GET, ["webhooks", account]) => self.subscription_check(account, &request),
            (_, ["webhooks", account]) => {
                if self.accounts.contains_key(*account) {
                    Err(ApiError::MethodNotAllowed("POST"))
                } else {
                    Err(unknown_account(account))
                }
            }
            (_, ["api", "v1", rest @ ..]) => self.admin(rest, request, client).await,
            _ => Err(ApiError::NotFound(format!("no route {path}"))),
        };
        let response = result.unwrap_or_else(ApiError::into_response);
        tracing::debug!(peer = %client.peer, path, status = response.status().as_u16(), "request");
        response
    }

    async fn metrics(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let Some(render) = &self.render_metrics else {
            return Err(ApiError::NotFound("metrics are not enabled".into()));
        };
        if let Some(token) = &self.config.metrics_token
            && !bearer_matches(request.headers(), token)
        {
            return Err(ApiError::Unauthorized(
                "metrics need Authorization: Bearer <metrics token>".into(),
            ));
        }
        self.queue_gauges.refresh(self.queue.as_ref()).await;
        let mut response = Response::new(Full::new(Bytes::from((render.0)())));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(response)
    }

    async fn readyz(&self) -> Result<Response<Full<Bytes>>, ApiError> {
        if self.is_draining() {
            return Err(ApiError::Unavailable("draining: shutting down".into()));
        }
        self.readiness
            .check()
            .await
            .map_err(ApiError::Unavailable)?;
        Ok(json(StatusCode::OK, &json!({"status": "ready"})))
    }

    async fn webhook(
        &self,
        account: &str,
        request: Request<Incoming>,
        client: &Client,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let provider = self
            .accounts
            .get(account)
            .ok_or_else(|| unknown_account(account))?;
        let (parts, body) = request.into_parts();
        // Credentials in the head first: a wrong one is 401 and the body
        // is never read.
        if let Err(e) = provider.authenticate_head(&parts.headers, parts.uri.query()) {
            tracing::warn!(account, error = %e, "webhook rejected: bad credentials");
            return Err(e.into());
        }
        // The body (and with it this request's share of the body budget) is
        // held until the jobs are committed.
        let body = self
            .read_body(body, &parts.headers, &client.body_budget)
            .await?;
        let webhook = WebhookRequest {
            headers: &parts.headers,
            query: parts.uri.query(),
            body: &body.bytes,
        };
        if let Err(e) = provider.authenticate_body(&webhook) {
            tracing::warn!(account, error = %e, "webhook rejected: bad credentials");
            return Err(e.into());
        }
        let parsed = provider.parse_webhook(&webhook).map_err(|e| {
            tracing::warn!(account, error = %e, "webhook rejected: unrecognised payload");
            ApiError::from(e)
        })?;
        let announced = parsed.jobs.len() + parsed.wakes.len();
        let limit = self.config.server.max_jobs_per_webhook;
        if announced > limit {
            tracing::warn!(
                account,
                announced,
                limit,
                "webhook rejected: too many media files"
            );
            return Err(ApiError::TooManyJobs { announced, limit });
        }
        // Messages the account's rules exclude are answered as ignored.
        let filtered = parsed.filtered;
        let (mut accepted, mut duplicates, mut ignored) =
            (0usize, 0usize, parsed.ignored + filtered);
        if !parsed.jobs.is_empty() {
            let outcomes = self.queue.enqueue(parsed.jobs).await.map_err(|e| {
                tracing::error!(account, error = %e, "cannot commit jobs; answering 503 so the provider redelivers");
                ApiError::Unavailable("queue unavailable; retry later".into())
            })?;
            for outcome in outcomes {
                match outcome {
                    Enqueued::New => accepted += 1,
                    Enqueued::Duplicate => duplicates += 1,
                }
            }
            self.new_work.notify_one();
        }
        // Events a parked job waits for (On-Prem store callbacks): each wakes
        // its job, durably, before the 200.
        for wake in &parsed.wakes {
            let woken = self
                .queue
                .wake(&wake.job_id, wake.note.as_deref())
                .await
                .map_err(|e| {
                    tracing::error!(account, error = %e, "cannot record a wake-up; answering 503 so the provider redelivers");
                    ApiError::Unavailable("queue unavailable; retry later".into())
                })?;
            if woken {
                accepted += 1;
                self.new_work.notify_one();
            } else {
                // Unknown id, or a job not waiting (done, dead, or already
                // retrying): nothing to wake, but the event is recorded.
                ignored += 1;
                tracing::info!(account, job_id = %wake.job_id, note = wake.note.as_deref(), "wake-up event matched no waiting job");
            }
        }
        tracing::info!(
            account,
            accepted,
            duplicates,
            ignored,
            filtered,
            "webhook accepted"
        );
        let mut response = json(
            StatusCode::OK,
            &json!({"accepted": accepted, "duplicates": duplicates, "ignored": ignored}),
        );
        if filtered > 0 && accepted + duplicates == 0 {
            response.extensions_mut().insert(Filtered);
        }
        Ok(response)
    }

    /// `GET /webhooks/{account}`: a provider's subscription check (Meta's
    /// `hub.challenge`), echoed as plain text when the provider accepts it.
    fn subscription_check(
        &self,
        account: &str,
        request: &Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let provider = self
            .accounts
            .get(account)
            .ok_or_else(|| unknown_account(account))?;
        match provider.verify_subscription(request.uri().query()) {
            None => Err(ApiError::MethodNotAllowed("POST")),
            Some(Ok(challenge)) => {
                tracing::info!(account, "subscription check answered");
                let mut response = Response::new(Full::new(Bytes::from(challenge)));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response.headers_mut().insert(
                    http::header::X_CONTENT_TYPE_OPTIONS,
                    http::HeaderValue::from_static("nosniff"),
                );
                Ok(response)
            }
            Some(Err(e)) => {
                tracing::warn!(account, error = %e, "subscription check refused");
                Err(ApiError::Forbidden(e.to_string()))
            }
        }
    }
}

/// Marks the answer to a webhook whose media the account's rules all
/// excluded (no job made or matched): counted as `outcome="filtered"`.
#[derive(Debug, Clone, Copy)]
struct Filtered;

/// `webhooks_total{account,outcome}`, one count per webhook on a known
/// account: `ok`, `filtered` (its media were all excluded by the account's
/// rules) or the error's label.
fn count_webhook(account: &str, result: &Result<Response<Full<Bytes>>, ApiError>) {
    let outcome = match result {
        Ok(response) if response.extensions().get::<Filtered>().is_some() => "filtered",
        Ok(_) => "ok",
        Err(e) => e.outcome_label(),
    };
    metrics::counter!("media_archiver_webhooks_total", "account" => account.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub(crate) fn unknown_account(account: &str) -> ApiError {
    let shown: String = account.chars().take(64).collect();
    ApiError::NotFound(format!("unknown account {shown:?}"))
}

/// How much of an oversized body is read and thrown away before answering
/// 413, so that an ordinary client (which sends its whole body before it
/// reads the answer) sees the 413 instead of a connection reset. Beyond this
/// the connection is simply closed. Discarded bytes hold no memory.
const OVERSIZE_DRAIN_BYTES: u64 = 16 * 1024 * 1024;

/// How long a request waits for room in a spent body budget before it is
/// answered 503 (the provider redelivers later).
const BODY_BUDGET_WAIT: Duration = Duration::from_secs(1);

/// A request body read whole, with the share of
/// `server.max_inflight_body_bytes` (and of its client's
/// `max_inflight_body_bytes_per_client`) it holds until dropped.
pub(crate) struct HeldBody {
    pub(crate) bytes: Bytes,
    _budget: Option<BudgetShare>,
}

/// Permits of both body budgets: the client's and the process's.
struct BudgetShare {
    client: OwnedSemaphorePermit,
    process: OwnedSemaphorePermit,
}

impl BudgetShare {
    fn merge(&mut self, other: BudgetShare) {
        self.client.merge(other.client);
        self.process.merge(other.process);
    }
}

impl Receiver {
    /// Reads a body of at most `server.max_body_bytes` within
    /// `server.body_read_timeout`, taking a share of the client's and the
    /// process's body budgets for each chunk as it arrives (so a client
    /// holds only what it has really sent). A body that declares a larger
    /// length is 413 before it is read; one that turns out larger, 413 once
    /// it does.
    pub(crate) async fn read_body(
        &self,
        mut body: Incoming,
        headers: &http::HeaderMap,
        client_budget: &Arc<Semaphore>,
    ) -> Result<HeldBody, ApiError> {
        let server = &self.config.server;
        let limit = server.max_body_bytes;
        let deadline = tokio::time::Instant::now() + server.body_read_timeout;
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut too_large = declared.is_some_and(|n| n > limit as u64);
        // The declared length is reserved at once, so the buffer never
        // doubles past it. Pages become memory only as bytes arrive, and the
        // budgets are taken as they do.
        let mut collected = match declared {
            Some(length) if !too_large => bytes::BytesMut::with_capacity(length as usize),
            _ => bytes::BytesMut::new(),
        };
        let mut held: Option<BudgetShare> = None;
        let mut discarded = 0u64;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                // An oversized body is answered 413 whether or not its
                // client finished sending what is drained of it.
                Err(_) if too_large => break,
                Err(_) => return Err(ApiError::BodyTimeout(server.body_read_timeout)),
                Ok(None) => break,
                Ok(Some(frame)) => frame.map_err(|e| {
                    ApiError::BadRequest(format!("could not read the request body: {e}"))
                })?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if !too_large && collected.len() + data.len() <= limit {
                let share = self
                    .body_budget_share(client_budget, data.len(), deadline)
                    .await?;
                match &mut held {
                    Some(permit) => permit.merge(share),
                    None => held = Some(share),
                }
                collected.extend_from_slice(&data);
                continue;
            }
            too_large = true;
            discarded += data.len() as u64;
            if discarded > OVERSIZE_DRAIN_BYTES {
                break;
            }
        }
        if too_large {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        Ok(HeldBody {
            bytes: collected.freeze(),
            _budget: held,
        })
    }

    /// Takes `bytes` permits of the client's body budget, then of the
    /// process's, waiting at most [`BODY_BUDGET_WAIT`] for both together
    /// (and never past the body's deadline).
    async fn body_budget_share(
        &self,
        client_budget: &Arc<Semaphore>,
        bytes: usize,
        deadline: tokio::time::Instant,
    ) -> Result<BudgetShare, ApiError> {
        let wait_until = deadline.min(tokio::time::Instant::now() + BODY_BUDGET_WAIT);
        let client = take_budget(client_budget, bytes, wait_until)
            .await
            .ok_or_else(|| budget_spent("server.max_inflight_body_bytes_per_client", "client"))?;
        let process = take_budget(&self.body_budget, bytes, wait_until)
            .await
            .ok_or_else(|| budget_spent("server.max_inflight_body_bytes", "process"))?;
        Ok(BudgetShare { client, process })
    }
}

/// `bytes` permits of `budget`, or `None` if they are not free by `until`.
async fn take_budget(
    budget: &Arc<Semaphore>,
    bytes: usize,
    until: tokio::time::Instant,
) -> Option<OwnedSemaphorePermit> {
    // A chunk is at most hyper's read buffer, far below u32::MAX; the limit
    // checked before keeps it below max_body_bytes anyway.
    let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
    if let Ok(permit) = budget.clone().try_acquire_many_owned(permits) {
        return Some(permit);
    }
    tokio::time::timeout_at(until, budget.clone().acquire_many_owned(permits))
        .await
        .ok()?
        .ok()
}

/// The 503 for a spent body budget, counted by which one it was.
fn budget_spent(key: &'static str, scope: &'static str) -> ApiError {
    metrics::counter!("media_archiver_body_budget_exhausted_total", "scope" => scope).increment(1);
    tracing::warn!("{key} is spent; answering 503 so the provider redelivers");
    ApiError::Unavailable(format!("server busy ({key} in use); retry later"))
}

/// `Authorization: Bearer <token>`, compared in constant time.
pub(crate) fn bearer_matches(headers: &http::HeaderMap, token: &archiver_core::Secret) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|presented| bool::from(presented.ct_eq(token.expose().as_bytes())))
}

/// How old the queue gauges of `/metrics` may be.
const QUEUE_GAUGES_MAX_AGE: Duration = Duration::from_secs(5);

/// The queue gauges (`jobs{state}`, `jobs_at_risk`) with the time they were
/// read. Counting jobs by state is a scan of the queue's table (a `GROUP
/// BY` on PostgreSQL): scrapes share one reading for a few seconds, and
/// concurrent scrapes wait for the one query in flight instead of each
/// running their own.
#[derive(Debug, Default)]
pub(crate) struct QueueGauges {
    read_at: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl QueueGauges {
    /// Reads the queue's counts into the gauges unless they are fresh;
    /// answers whether the queue was asked.
    pub(crate) async fn refresh(&self, queue: &dyn retry_queue::JobQueue) -> bool {
        let mut read_at = self.read_at.lock().await;
        if read_at.is_some_and(|at| at.elapsed() < QUEUE_GAUGES_MAX_AGE) {
            return false;
        }
        match queue.stats(AT_RISK_WITHIN).await {
            Ok(stats) => {
                for (state, count) in &stats.by_state {
                    metrics::gauge!("media_archiver_jobs", "state" => state.clone())
                        .set(*count as f64);
                }
                metrics::gauge!("media_archiver_jobs_at_risk").set(stats.at_risk as f64);
                *read_at = Some(tokio::time::Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "metrics: queue stats unavailable"),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use retry_queue::{RetryPolicy, SqliteQueue};

    use super::*;

    #[tokio::test]
    async fn scrapes_share_one_queue_reading_for_a_few_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(
            &dir.path().join("queue.db"),
            RetryPolicy::default(),
            Arc::new(archiver_core::SystemClock),
        )
        .unwrap();
        let gauges = QueueGauges::default();
        tokio::time::pause();
        assert!(
            gauges.refresh(&queue).await,
            "the first scrape reads the queue"
        );
        for _ in 0..10 {
            assert!(
                !gauges.refresh(&queue).await,
                "a scrape within 5s reads the cache"
            );
        }
        tokio::time::advance(QUEUE_GAUGES_MAX_AGE).await;
        assert!(
            gauges.refresh(&queue).await,
            "a stale reading is read again"
        );
    }
}
