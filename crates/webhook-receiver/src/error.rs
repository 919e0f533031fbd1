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
    PayloadTooLarge(usize),
    /// The queue could not commit: the provider should redeliver.
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
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m) => m.clone(),
            ApiError::MethodNotAllowed(allowed) => format!("method not allowed; use {allowed}"),
            ApiError::PayloadTooLarge(limit) => {
                format!("body larger than server.max_body_bytes ({limit} bytes)")
            }
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
            ApiError::PayloadTooLarge(_) => "too_large",
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
        response
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
