use std::time::Duration;

use archiver_core::{Classify, ErrorClass};

/// Why a download failed. Messages name the cause and, where a URL appears,
/// show it through [`crate::redact_url`]: no query strings, no credentials.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The SSRF guard refused the URL or a redirect hop: the host is not in
    /// the account's allowed hosts, or it is (or resolves to) an address
    /// downloads may not reach.
    #[error("download from {host} blocked: {reason}")]
    Blocked { host: String, reason: String },
    /// The server answered with a status other than success (or a redirect
    /// that could be followed).
    #[error("download host answered HTTP {status}{}", retry_after_text(*.retry_after))]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// The file is larger than `max_file_bytes`.
    #[error("file is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    /// Connecting, waiting for headers or waiting for the next chunk took too long.
    #[error("download timed out: {0}")]
    Timeout(String),
    /// The connection could not be made (DNS, TCP, TLS).
    #[error("could not connect: {0}")]
    Connect(String),
    /// The body ended before `Content-Length` bytes arrived.
    #[error("body truncated: expected {expected} bytes, got {got}")]
    Truncated { expected: u64, got: u64 },
    /// Reading the body or writing the spool file failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// The URL (or a redirect's `Location`, or a request header) cannot be used.
    #[error("bad URL: {0}")]
    BadUrl(String),
    /// The answer is not the file in the form the request announced (a
    /// JSON answer without its base64 field, say): the gateway had a bad
    /// moment, or cannot produce the file; retried until the deadline.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
    /// More redirects than the fetcher follows.
    #[error("too many redirects (more than {})", crate::fetcher::MAX_REDIRECTS)]
    TooManyRedirects,
}

fn retry_after_text(d: Option<Duration>) -> String {
    d.map(|d| format!(" (retry after {}s)", d.as_secs()))
        .unwrap_or_default()
}

impl FetchError {
    /// True for 401, 403, 404 and 410: the link (or the bearer token sent
    /// with it) expired, or the file is gone, and the provider should be
    /// asked again (a fresh link, a new login) rather than the same request
    /// retried. A second refusal after that is final.
    pub fn is_link_dead(&self) -> bool {
        matches!(
            self,
            FetchError::Status {
                status: 401 | 403 | 404 | 410,
                ..
            }
        )
    }
}

impl Classify for FetchError {
    fn class(&self) -> ErrorClass {
        match self {
            FetchError::Status {
                status,
                retry_after,
            } => match (*status, *retry_after) {
                (429 | 503, Some(d)) => ErrorClass::RetryAfter(d),
                (408 | 429, _) | (500..=599, _) => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            FetchError::Timeout(_)
            | FetchError::Connect(_)
            | FetchError::Truncated { .. }
            | FetchError::Io(_)
            | FetchError::BadAnswer(_) => ErrorClass::Transient,
            FetchError::Blocked { .. }
            | FetchError::TooLarge { .. }
            | FetchError::BadUrl(_)
            | FetchError::TooManyRedirects => ErrorClass::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let st = |status, retry_after| FetchError::Status {
            status,
            retry_after,
        };
        let s7 = Some(Duration::from_secs(7));
        assert_eq!(
            st(429, s7).class(),
            ErrorClass::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            st(503, s7).class(),
            ErrorClass::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(st(429, None).class(), ErrorClass::Transient);
        assert_eq!(st(500, s7).class(), ErrorClass::Transient);
        assert_eq!(st(502, None).class(), ErrorClass::Transient);
        assert_eq!(st(408, None).class(), ErrorClass::Transient);
        assert_eq!(st(404, None).class(), ErrorClass::Permanent);
        assert_eq!(st(400, None).class(), ErrorClass::Permanent);
        assert!(
            st(404, None).is_link_dead()
                && st(403, None).is_link_dead()
                && st(410, None).is_link_dead()
        );
        assert!(
            st(401, None).is_link_dead(),
            "an expired bearer token: log in again"
        );
        assert!(!st(500, None).is_link_dead() && !st(400, None).is_link_dead());
        assert_eq!(
            FetchError::TooLarge { limit: 1 }.class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            FetchError::Truncated {
                expected: 2,
                got: 1
            }
            .class(),
            ErrorClass::Transient
        );
        assert_eq!(
            FetchError::Timeout(String::new()).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            FetchError::Blocked {
                host: "h".into(),
                reason: "r".into()
            }
            .class(),
            ErrorClass::Permanent
        );
        assert_eq!(FetchError::TooManyRedirects.class(), ErrorClass::Permanent);
    }
}
