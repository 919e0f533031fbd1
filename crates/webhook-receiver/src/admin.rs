//! The admin API: `/api/v1/jobs...`, `/api/v1/media`, `/api/v1/stats`,
//! `/api/v1/notifications...` and `/api/v1/erasures` (PRODUCT.md sections
//! 3, 10 and 11).
//!
//! Disabled (404) unless `server.admin_token` is set; then every request must
//! carry `Authorization: Bearer <admin token>`.

use std::collections::HashMap;
use std::time::Duration;

use archiver_core::{JobState, UnixMillis};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use retry_queue::{
    Delivery, DeliveryFilter, DeliveryState, ErasureFilter, JobFilter, JobRecord, Outbox, Retried,
};
use serde_json::{Value, json};

use crate::clients::Client;
use crate::error::{ApiError, json};
use crate::{ErasureFailure, Receiver};

/// Jobs whose deadline is this close count as at risk.
pub(crate) const AT_RISK_WITHIN: Duration = Duration::from_secs(24 * 3600);

impl Receiver {
    /// Authorizes an admin request and hands it to its route's function.
    pub(crate) async fn admin(
        &self,
        path: &[&str],
        request: Request<Incoming>,
        client: &Client,
    ) -> Reply {
        let Some(token) = &self.config.admin_token else {
            return Err(ApiError::NotFound(
                "admin API disabled: set server.admin_token to enable it".into(),
            ));
        };
        if !crate::routes::bearer_matches(request.headers(), token) {
            return Err(ApiError::Unauthorized(
                "admin API needs Authorization: Bearer <admin token>".into(),
            ));
        }
        if path == ["erasures"] {
            if request.method() != Method::POST {
                return Err(ApiError::MethodNotAllowed("POST"));
            }
            return self.erase(request, client).await;
        }
        let query = parse_query(request.uri().query());
        match (request.method(), path) {
            (&Method::GET, ["jobs"]) => self.list_jobs(&query).await,
            (&Method::POST, ["jobs", "retry"]) => self.retry_jobs(&query).await,
            (&Method::GET, ["jobs", id]) => self.show_job(&decode(id)).await,
            (&Method::POST, ["jobs", id, "retry"]) => self.retry_job(&decode(id)).await,
            (&Method::GET, ["media"]) => self.media(&query).await,
            (&Method::GET, ["stats"]) => self.stats().await,
            (&Method::GET, ["notifications"]) => self.list_notifications(&query).await,
            (&Method::POST, ["notifications", id, "retry"]) => {
                self.retry_notification(&decode(id)).await
            }
            (_, ["jobs", "retry"] | ["jobs", _, "retry"] | ["notifications", _, "retry"]) => {
                Err(ApiError::MethodNotAllowed("POST"))
            }
            (_, ["jobs"] | ["stats"] | ["media"] | ["jobs", _] | ["notifications"]) => {
                Err(ApiError::MethodNotAllowed("GET"))
            }
            _ => Err(ApiError::NotFound(format!(
                "no admin route /api/v1/{}",
                path.join("/")
            ))),
        }
    }

    /// `GET /api/v1/jobs?state=&account=&limit=`.
    async fn list_jobs(&self, query: &Query) -> Reply {
        let filter = JobFilter {
            state: query
                .get("state")
                .map(|s| s.parse::<JobState>())
                .transpose()
                .map_err(ApiError::BadRequest)?,
            account: query.get("account").cloned(),
            message_id: None,
            limit: limit(query)?,
        };
        let jobs = self.queue.list(&filter).await.map_err(queue_unavailable)?;
        let jobs: Vec<Value> = jobs.iter().map(job_json).collect();
        Ok(json(StatusCode::OK, &json!({ "jobs": jobs })))
    }

    /// `POST /api/v1/jobs/retry?state=dead`: requeues every job in a state.
    async fn retry_jobs(&self, query: &Query) -> Reply {
        let state = query
            .get("state")
            .ok_or_else(|| {
                ApiError::BadRequest("missing query parameter state (e.g. state=dead)".into())
            })?
            .parse::<JobState>()
            .map_err(ApiError::BadRequest)?;
        let requeued = self
            .queue
            .retry_all(state)
            .await
            .map_err(queue_unavailable)?;
        self.new_work.notify_one();
        Ok(json(StatusCode::OK, &json!({ "requeued": requeued })))
    }

    /// `GET /api/v1/jobs/{id}`.
    async fn show_job(&self, id: &str) -> Reply {
        match self.queue.get(id).await.map_err(queue_unavailable)? {
            Some(job) => Ok(json(StatusCode::OK, &job_json(&job))),
            None => Err(ApiError::NotFound(format!("no job {id:?}"))),
        }
    }

    /// `POST /api/v1/jobs/{id}/retry`: requeues one job now.
    async fn retry_job(&self, id: &str) -> Reply {
        if self.queue.retry_now(id).await.map_err(queue_unavailable)? {
            self.new_work.notify_one();
            return Ok(json(StatusCode::OK, &json!({ "requeued": 1 })));
        }
        match self.queue.get(id).await.map_err(queue_unavailable)? {
            Some(job) => Err(ApiError::BadRequest(format!(
                "job {id:?} is {}; only pending, waiting or dead jobs can be retried",
                job.state
            ))),
            None => Err(ApiError::NotFound(format!("no job {id:?}"))),
        }
    }

    /// The queue's outbox; a backend without one has no notifications.
    fn outbox(&self) -> Result<&dyn Outbox, ApiError> {
        self.queue
            .outbox()
            .ok_or_else(|| ApiError::NotFound("this queue keeps no notifications".into()))
    }

    /// `GET /api/v1/notifications?state=&target=&job=&limit=`.
    async fn list_notifications(&self, query: &Query) -> Reply {
        let filter = DeliveryFilter {
            state: query
                .get("state")
                .map(|s| {
                    DeliveryState::parse(s).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "state {s:?} is not one of pending, delivered, dead"
                        ))
                    })
                })
                .transpose()?,
            target: query.get("target").cloned(),
            job_id: query.get("job").cloned(),
            limit: limit(query)?,
        };
        let found = self
            .outbox()?
            .list_deliveries(&filter)
            .await
            .map_err(queue_unavailable)?;
        let notifications: Vec<Value> = found.iter().map(delivery_json).collect();
        Ok(json(
            StatusCode::OK,
            &json!({ "notifications": notifications }),
        ))
    }

    /// `POST /api/v1/notifications/{id}/retry`: sends a dead notification
    /// again now.
    async fn retry_notification(&self, id: &str) -> Reply {
        match self
            .outbox()?
            .retry_delivery(id)
            .await
            .map_err(queue_unavailable)?
        {
            Retried::Requeued => Ok(json(StatusCode::OK, &json!({ "requeued": 1 }))),
            Retried::NotDead(state) => Err(ApiError::BadRequest(format!(
                "notification {id:?} is {}; only dead notifications can be retried (a pending one is sent when due)",
                state.as_str()
            ))),
            Retried::Unknown => Err(ApiError::NotFound(format!("no notification {id:?}"))),
        }
    }

    /// `POST /api/v1/erasures` with `{"account", "chat_id", "message_ids",
    /// "before", "dry_run"}` (PRODUCT.md section 10).
    async fn erase(&self, request: Request<Incoming>, client: &Client) -> Reply {
        let Some(eraser) = &self.eraser else {
            return Err(ApiError::NotFound("erasure is not available".into()));
        };
        let (parts, body) = request.into_parts();
        let body = self
            .read_body(body, &parts.headers, &client.body_budget)
            .await?;
        let asked: ErasureRequest = serde_json::from_slice(&body.bytes)
            .map_err(|e| ApiError::BadRequest(format!("erasure request: {e}")))?;
        let (filter, dry_run) = asked.checked(|account| self.accounts.contains_key(account))?;
        // On a task of its own: a client that hangs up does not cut an
        // erasure short (nor its audit event).
        let eraser = eraser.clone();
        let erasure =
            tokio::spawn(async move { eraser.erase(&filter, dry_run, "admin API").await });
        let failed = || {
            ApiError::Unavailable(
                "the queue or the store failed part-way; send the same erasure again to finish it"
                    .into(),
            )
        };
        match erasure.await {
            Ok(Ok(report)) => Ok(json(
                StatusCode::OK,
                &serde_json::to_value(report).unwrap_or_default(),
            )),
            Ok(Err(ErasureFailure::Refused(why))) => Err(ApiError::Conflict(why)),
            Ok(Err(ErasureFailure::Unavailable(why))) => {
                tracing::error!(error = %why, "erasure failed part-way; sending it again finishes it");
                Err(failed())
            }
            Err(e) => {
                tracing::error!(error = %e, "erasure task ended abnormally");
                Err(failed())
            }
        }
    }

    /// `GET /api/v1/stats`.
    async fn stats(&self) -> Reply {
        let stats = self
            .queue
            .stats(AT_RISK_WITHIN)
            .await
            .map_err(queue_unavailable)?;
        Ok(json(
            StatusCode::OK,
            &json!({
                "by_state": stats.by_state,
                "by_account": stats.by_account,
                "oldest_pending": stats.oldest_pending.map(rfc3339),
                "at_risk": stats.at_risk,
            }),
        ))
    }
}

/// The body of `POST /api/v1/erasures`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureRequest {
    account: String,
    #[serde(default)]
    chat_id: Option<String>,
    #[serde(default)]
    message_ids: Vec<String>,
    /// RFC 3339.
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

impl ErasureRequest {
    /// The filter, once the account is known (`known`).
    fn checked(self, known: impl Fn(&str) -> bool) -> Result<(ErasureFilter, bool), ApiError> {
        if !known(&self.account) {
            return Err(ApiError::BadRequest(format!(
                "account {:?} is not configured",
                self.account
            )));
        }
        let filter = crate::erasure_filter(
            self.account,
            self.chat_id,
            self.message_ids,
            self.before.as_deref(),
        )
        .map_err(ApiError::BadRequest)?;
        Ok((filter, self.dry_run))
    }
}

/// What an admin route answers.
type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// The query parameters of an admin request.
type Query = HashMap<String, String>;

/// `limit=`, 0 (the default) when absent.
fn limit(query: &Query) -> Result<usize, ApiError> {
    query
        .get("limit")
        .map(|l| l.parse::<usize>())
        .transpose()
        .map_err(|_| ApiError::BadRequest("limit must be a whole number".into()))
        .map(Option::unwrap_or_default)
}

/// A notification as the admin API shows it.
fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "target": d.target,
        "job_id": d.job_id,
        "event": d.event.as_str(),
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": rfc3339(d.next_attempt_at),
        "deadline": rfc3339(d.deadline),
        "last_error": d.last_error,
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
    })
}

/// A queue failure, logged here and shown to the client as a 503.
fn queue_unavailable(e: retry_queue::QueueError) -> ApiError {
    tracing::error!(error = %e, "admin request failed at the queue");
    ApiError::Unavailable("queue unavailable; retry later".into())
}

impl Receiver {
    /// `GET /api/v1/media?account=&message_id=`: the message's jobs from the
    /// queue (by message id, so media-id-keyed jobs are found too), then
    /// each done job's manifest from the archive. 404 until one is archived.
    async fn media(&self, query: &Query) -> Reply {
        let required = |name: &str| {
            query
                .get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| ApiError::BadRequest(format!("missing query parameter {name}")))
        };
        let account = required("account")?;
        let message_id = required("message_id")?;
        let Some(index) = &self.media_index else {
            return Err(ApiError::NotFound(
                "media lookup is not available in this daemon".into(),
            ));
        };
        let filter = JobFilter {
            account: Some(account.clone()),
            message_id: Some(message_id.clone()),
            limit: JobFilter::MAX_LIMIT,
            ..JobFilter::default()
        };
        let jobs = self.queue.list(&filter).await.map_err(queue_unavailable)?;
        if jobs.is_empty() {
            return Err(ApiError::NotFound(format!(
                "no job for message {message_id:?} of account {account:?}"
            )));
        }
        let mut objects: Vec<crate::ArchivedMedia> = Vec::new();
        let mut not_archived = Vec::new();
        for job in &jobs {
            if job.state != JobState::Done {
                not_archived.push(format!("job {:?} is {}", job.id, job.state));
                continue;
            }
            match index.archived(job).await {
                Ok(Some(found)) => {
                    // Jobs of one message share its manifest.
                    if !objects.iter().any(|o| o.manifest_key == found.manifest_key) {
                        objects.push(found);
                    }
                }
                Ok(None) => not_archived.push(format!(
                    "job {:?} is done but its manifest is not in the archive",
                    job.id
                )),
                Err(e) => {
                    tracing::error!(job_id = %job.id, error = %e, "media lookup failed at the archive");
                    return Err(ApiError::Unavailable(
                        "archive store unavailable; retry later".into(),
                    ));
                }
            }
        }
        if objects.is_empty() {
            return Err(ApiError::NotFound(format!(
                "message {message_id:?} of account {account:?} is not archived: {}",
                not_archived.join("; ")
            )));
        }
        Ok(json(StatusCode::OK, &json!({ "objects": objects })))
    }
}

/// The job JSON of PRODUCT.md section 3 (times RFC 3339 UTC).
pub fn job_json(job: &JobRecord) -> Value {
    json!({
        "id": job.id,
        "account": job.account,
        "provider": job.provider,
        "state": job.state,
        "attempts": job.attempts,
        "deadline": rfc3339(job.deadline),
        "next_attempt_at": rfc3339(job.next_attempt_at),
        "last_error": job.last_error,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "message_id": job.message_id,
        "media_id": job.media_id,
        "message_timestamp": rfc3339(job.message_at),
    })
}

fn rfc3339(ms: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(query: Option<&str>) -> Query {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}
