//! Request routing and the webhook handler.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use providers::WebhookRequest;
use retry_queue::Enqueued;
use serde_json::json;

use crate::Receiver;
use crate::error::{ApiError, json};

impl Receiver {
    /// Routes one request. Every outcome, errors included, is a response.
    pub(crate) async fn route(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let result = match (request.method(), segments.as_slice()) {
            (&Method::GET, ["healthz"]) => Ok(json(StatusCode::OK, &json!({"status": "ok"}))),
            (_, ["healthz"]) => Err(ApiError::MethodNotAllowed("GET")),
            (&Method::GET, ["readyz"]) => self.readyz().await,
            (_, ["readyz"]) => Err(ApiError::MethodNotAllowed("GET")),
            (&Method::GET, ["metrics"]) => self.metrics().await,
            (_, ["metrics"]) => Err(ApiError::MethodNotAllowed("GET")),
            (&Method::POST, ["webhooks", account]) => {
                let result = self.webhook(account, request).await;
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
            (_, ["api", "v1", rest @ ..]) => self.admin(rest, request).await,
            _ => Err(ApiError::NotFound(format!("no route {path}"))),
        };
        let response = result.unwrap_or_else(ApiError::into_response);
        tracing::debug!(%peer, path, status = response.status().as_u16(), "request");
        response
    }

    async fn metrics(&self) -> Result<Response<Full<Bytes>>, ApiError> {
        let Some(render) = &self.render_metrics else {
            return Err(ApiError::NotFound("metrics are not enabled".into()));
        };
        // Queue gauges are read at scrape time, so they are never stale.
        match self
            .queue
            .stats(std::time::Duration::from_secs(24 * 3600))
            .await
        {
            Ok(stats) => {
                for (state, count) in &stats.by_state {
                    metrics::gauge!("media_archiver_jobs", "state" => state.clone())
                        .set(*count as f64);
                }
                metrics::gauge!("media_archiver_jobs_at_risk").set(stats.at_risk as f64);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: queue stats unavailable"),
        }
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
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let provider = self
            .accounts
            .get(account)
            .ok_or_else(|| unknown_account(account))?;
        let (parts, body) = request.into_parts();
        if let Err(e) = provider.authenticate_head(&parts.headers, parts.uri.query()) {
            tracing::warn!(account, error = %e, "webhook rejected: bad credentials");
            return Err(e.into());
        }
        let body = read_body(body, &parts.headers, self.config.max_body_bytes).await?;
        let webhook = WebhookRequest {
            headers: &parts.headers,
            query: parts.uri.query(),
            body: &body,
        };
        if let Err(e) = provider.authenticate_body(&webhook) {
            tracing::warn!(account, error = %e, "webhook rejected: bad credentials");
            return Err(e.into());
        }
        let parsed = provider.parse_webhook(&webhook).map_err(|e| {
            tracing::warn!(account, error = %e, "webhook rejected: unrecognised payload");
            ApiError::from(e)
        })?;
        let (mut accepted, mut duplicates, mut ignored) = (0usize, 0usize, parsed.ignored);
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
        tracing::info!(account, accepted, duplicates, ignored, "webhook accepted");
        Ok(json(
            StatusCode::OK,
            &json!({"accepted": accepted, "duplicates": duplicates, "ignored": ignored}),
        ))
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

/// `webhooks_total{account,outcome}`, one count per webhook on a known account.
fn count_webhook(account: &str, result: &Result<Response<Full<Bytes>>, ApiError>) {
    let outcome = match result {
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
/// the connection is simply closed.
const OVERSIZE_DRAIN_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a body of at most `limit` bytes; a declared or actual larger body is
/// 413. Memory use is bounded by `limit`: the excess is discarded as it arrives.
pub(crate) async fn read_body(
    mut body: Incoming,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut collected = bytes::BytesMut::new();
    let mut too_large = declared.is_some_and(|n| n > limit as u64);
    let mut discarded = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !too_large && collected.len() + data.len() <= limit {
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
    Ok(collected.freeze())
}
