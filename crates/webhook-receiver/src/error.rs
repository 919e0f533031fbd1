//! The one place where failures become HTTP statuses.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

/// A request that cannot be answered 200, with the message the client sees.
///
/// Messages name the problem (which field, which limit) and never include
/// internals such as file paths, SQL, or credentials.
#[derive(Debug)]
pub(crate) enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    /// A subscription check that was refused (wrong verify token).
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed(&'static str),
    /// The request conflicts with the state of things (an erasure under
    /// Object Lock, or of a message being archived right now).
    Conflict(String),
    /// A body over `server.max_body_bytes` (the limit).
    PayloadTooLarge(usize),
    /// A webhook announcing more media than `server.max_jobs_per_webhook`.
    TooManyJobs {
        announced: usize,
        limit: usize,
    },
    /// The body did not arrive within `server.body_read_timeout`.
    BodyTimeout(std::time::Duration),
    /// The queue could not commit, or the front door is at a limit: the
    /// provider should redeliver.
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) | ApiError::TooManyJobs { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m) => m.clone(),
            ApiError::MethodNotAllowed(allowed) => format!("method not allowed; use {allowed}"),
            ApiError::PayloadTooLarge(limit) => {
                format!("body larger than server.max_body_bytes ({limit} bytes)")
            }
            ApiError::TooManyJobs { announced, limit } => format!(
                "webhook announces {announced} media files; server.max_jobs_per_webhook is {limit}"
            ),
            ApiError::BodyTimeout(limit) => format!(
                "request body not received within server.body_read_timeout ({})",
                humantime::format_duration(*limit)
            ),
            ApiError::Unavailable(m) => m.clone(),
        }
    }

    /// The `outcome` label of `webhooks_total`.
    pub(crate) fn outcome_label(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) | ApiError::TooManyJobs { .. } => "too_large",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut response = json(status, &serde_json::json!({ "error": self.message() }));
        if let ApiError::MethodNotAllowed(allowed) = self
            && let Ok(value) = allowed.parse()
        {
            response.headers_mut().insert(http::header::ALLOW, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("5"),
            );
        }
        if self.closes_connection() {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        response
    }

    /// Answers given before a body was read whole (refused credentials,
    /// oversized or stalled bodies, a spent body budget) close the
    /// connection: what is left of the body is never read.
    fn closes_connection(&self) -> bool {
        matches!(
            self,
            ApiError::Unauthorized(_)
                | ApiError::PayloadTooLarge(_)
                | ApiError::BodyTimeout(_)
                | ApiError::Unavailable(_)
        )
    }
}

impl From<providers::ProviderError> for ApiError {
    fn from(e: providers::ProviderError) -> Self {
        match e {
            providers::ProviderError::Unauthorized(m) => ApiError::Unauthorized(m),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    async fn body_of(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_error_is_json_with_its_status_and_a_message() {
        let cases = [
            (ApiError::BadRequest("field `x` is missing".into()), 400),
            (ApiError::Unauthorized("wrong token".into()), 401),
            (ApiError::Forbidden("verify token refused".into()), 403),
            (ApiError::NotFound("no account `a`".into()), 404),
            (ApiError::MethodNotAllowed("POST"), 405),
            (ApiError::PayloadTooLarge(1024), 413),
            (
                ApiError::TooManyJobs {
                    announced: 300,
                    limit: 256,
                },
                413,
            ),
            (
                ApiError::BodyTimeout(std::time::Duration::from_secs(15)),
                408,
            ),
            (ApiError::Unavailable("queue unavailable".into()), 503),
        ];
        for (error, status) in cases {
            let label = error.outcome_label();
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{label}");
            assert_eq!(
                response.headers()[http::header::CONTENT_TYPE],
                "application/json"
            );
            let body = body_of(response).await;
            let message = body["error"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "{label}: {body}");
        }
    }

    #[tokio::test]
    async fn a_405_names_the_allowed_method_and_a_413_the_limit() {
        let response = ApiError::MethodNotAllowed("POST").into_response();
        assert_eq!(response.headers()[http::header::ALLOW], "POST");
        assert_eq!(
            body_of(response).await["error"],
            "method not allowed; use POST"
        );

        let body = body_of(ApiError::PayloadTooLarge(4096).into_response()).await;
        assert_eq!(
            body["error"],
            "body larger than server.max_body_bytes (4096 bytes)"
        );
    }

    #[tokio::test]
    async fn limits_are_named_in_their_answers() {
        let body = body_of(
            ApiError::TooManyJobs {
                announced: 300,
                limit: 256,
            }
            .into_response(),
        )
        .await;
        assert_eq!(
            body["error"],
            "webhook announces 300 media files; server.max_jobs_per_webhook is 256"
        );
        let body =
            body_of(ApiError::BodyTimeout(std::time::Duration::from_secs(15)).into_response())
                .await;
        assert_eq!(
            body["error"],
            "request body not received within server.body_read_timeout (15s)"
        );
    }

    #[test]
    fn an_answer_before_the_body_was_read_closes_the_connection() {
        for early in [
            ApiError::Unauthorized("wrong token".into()),
            ApiError::PayloadTooLarge(10),
            ApiError::BodyTimeout(std::time::Duration::from_secs(1)),
        ] {
            let response = early.into_response();
            assert_eq!(response.headers()[http::header::CONNECTION], "close");
        }
        let parsed = ApiError::BadRequest("field `x`".into()).into_response();
        assert!(parsed.headers().get(http::header::CONNECTION).is_none());
    }

    #[test]
    fn only_a_503_asks_the_provider_to_come_back() {
        let unavailable = ApiError::Unavailable("queue unavailable".into()).into_response();
        assert_eq!(unavailable.headers()[http::header::RETRY_AFTER], "5");
        let bad = ApiError::BadRequest("x".into()).into_response();
        assert!(bad.headers().get(http::header::RETRY_AFTER).is_none());
    }

    #[test]
    fn a_refused_credential_is_401_and_any_other_provider_error_400() {
        let unauthorized: ApiError =
            providers::ProviderError::Unauthorized("bad bearer".into()).into();
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
        let bad: ApiError = providers::ProviderError::BadPayload("not JSON".into()).into();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(bad.outcome_label(), "bad_request");
    }
}
