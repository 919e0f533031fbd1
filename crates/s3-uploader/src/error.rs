use std::path::PathBuf;
use std::time::Duration;

use archiver_core::{Classify, ErrorClass};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Everything that can go wrong while archiving, for both backends.
///
/// Classification ([`Classify`]) — the queue acts on it alone:
///
/// | variant | class | why |
/// |---|---|---|
/// | `Io`, `Unreachable`, `Server` | transient | local disk or network trouble, 5xx: may pass |
/// | `Io` naming the request itself (file name too long, invalid argument) | permanent | the same path fails the same way on every attempt; waiting cannot shorten a name |
/// | `Io` permission denied | transient | like `Denied`: an operator fixes the folder's owner or mode (or the unit's `ReadWritePaths`) and the jobs resume by themselves; dead-lettering every job meanwhile would hide media that can still be saved |
/// | `Throttled` | retry-after when the store said how long, else transient | |
/// | `Denied`, `NoSuchBucket` | transient | the *store* is misconfigured, not the job: every job would fail alike, dead-lettering them all would hide media an operator can save by fixing credentials or the bucket; `/readyz` (ping) reports it meanwhile, and the queue's deadline still ends the retries |
/// | `ChecksumRejected`, `SpoolMismatch` | permanent | the bytes in the spool do not hash to what the fetch step recorded (or the store recomputed another hash): sending the same file again gives the same answer |
/// | `InvalidKey`, `Config`, `TooLarge`, `Rejected` | permanent | the request itself is wrong; repeating it cannot help |
///
/// Messages name keys, paths, S3 error codes and the store's own message;
/// never credentials or presigned URLs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key is not one a backend accepts (see `Layout`).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The store's configuration is unusable (every problem listed).
    #[error("invalid storage configuration: {0}")]
    Config(String),

    /// Reading or writing a local file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The spool file is not what its `StagedFile` says (size or sha256),
    /// or an S3-compatible store returned an object of an unexpected size.
    #[error("{path}: {detail}")]
    SpoolMismatch {
        /// The staged file (or key).
        path: PathBuf,
        /// What differed.
        detail: String,
    },

    /// An object is larger than [`MAX_SMALL_OBJECT_BYTES`](crate::MAX_SMALL_OBJECT_BYTES).
    #[error("object {key:?} is larger than {limit} bytes")]
    TooLarge {
        /// The key read.
        key: String,
        /// The limit.
        limit: u64,
    },

    /// The S3 request never got an answer: connection refused or reset,
    /// DNS, TLS, timeout, credentials that could not be loaded, a garbled
    /// response.
    #[error("s3 {op} {key:?}: store unreachable: {detail}")]
    Unreachable {
        /// The S3 operation.
        op: &'static str,
        /// The key (or bucket) concerned.
        key: String,
        /// The transport error chain.
        detail: String,
    },

    /// The store asked us to slow down (429, 503 SlowDown, throttling codes).
    #[error("s3 {op} {key:?}: throttled ({code}){}", retry_hint(*.retry_after))]
    Throttled {
        /// The S3 operation.
        op: &'static str,
        /// The key concerned.
        key: String,
        /// The error code or status.
        code: String,
        /// The store's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },

    /// The store failed (5xx).
    #[error("s3 {op} {key:?}: server error {status} {code}: {message}")]
    Server {
        /// The S3 operation.
        op: &'static str,
        /// The key concerned.
        key: String,
        /// HTTP status.
        status: u16,
        /// S3 error code (may be empty).
        code: String,
        /// The store's message.
        message: String,
    },

    /// The store refused our credentials or permissions (401/403,
    /// `AccessDenied`, `InvalidAccessKeyId`, `SignatureDoesNotMatch`,
    /// `ExpiredToken`, `RequestTimeTooSkewed`...).
    #[error("s3 {op} {key:?}: denied {status} {code}: {message}")]
    Denied {
        /// The S3 operation.
        op: &'static str,
        /// The key concerned.
        key: String,
        /// HTTP status.
        status: u16,
        /// S3 error code.
        code: String,
        /// The store's message.
        message: String,
    },

    /// The configured bucket does not exist.
    #[error("s3 {op}: bucket {bucket:?} does not exist")]
    NoSuchBucket {
        /// The S3 operation.
        op: &'static str,
        /// The bucket.
        bucket: String,
    },

    /// The store recomputed the sha256 of what we sent and it differs from
    /// the `ChecksumSHA256` we declared; nothing was stored.
    #[error("s3 {op} {key:?}: checksum rejected by the store ({code}): {message}")]
    ChecksumRejected {
        /// The S3 operation.
        op: &'static str,
        /// The key concerned.
        key: String,
        /// S3 error code (`BadDigest`, `InvalidDigest`, ...).
        code: String,
        /// The store's message.
        message: String,
    },

    /// Any other refusal (4xx) or a request that could not be built.
    #[error("s3 {op} {key:?}: rejected {status} {code}: {message}")]
    Rejected {
        /// The S3 operation.
        op: &'static str,
        /// The key concerned.
        key: String,
        /// HTTP status (0 when the request was never sent).
        status: u16,
        /// S3 error code.
        code: String,
        /// The store's message.
        message: String,
    },
}

fn retry_hint(after: Option<Duration>) -> String {
    after
        .map(|d| format!(", retry after {}s", d.as_secs()))
        .unwrap_or_default()
}

impl Classify for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            StoreError::Io { source, .. } => io_class(source),
            StoreError::Unreachable { .. }
            | StoreError::Server { .. }
            | StoreError::Denied { .. }
            | StoreError::NoSuchBucket { .. } => ErrorClass::Transient,
            StoreError::Throttled { retry_after, .. } => match retry_after {
                Some(d) => ErrorClass::RetryAfter(*d),
                None => ErrorClass::Transient,
            },
            StoreError::InvalidKey { .. }
            | StoreError::Config(_)
            | StoreError::SpoolMismatch { .. }
            | StoreError::TooLarge { .. }
            | StoreError::ChecksumRejected { .. }
            | StoreError::Rejected { .. } => ErrorClass::Permanent,
        }
    }
}

/// A local I/O error is transient (a full disk, an I/O error, a directory
/// an operator can fix) unless it says the request itself is wrong.
fn io_class(e: &std::io::Error) -> ErrorClass {
    use std::io::ErrorKind;
    match e.kind() {
        // ENAMETOOLONG: a key segment longer than the filesystem allows.
        ErrorKind::InvalidFilename | ErrorKind::InvalidInput => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Maps an SDK error of operation `op` on `key` (in `bucket`).
    pub(crate) fn from_sdk<E>(op: &'static str, bucket: &str, key: &str, err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let key = key.to_owned();
        let response = match &err {
            SdkError::ServiceError(_) => err.raw_response(),
            SdkError::ConstructionFailure(_) => {
                return StoreError::Rejected {
                    op,
                    key,
                    status: 0,
                    code: "ConstructionFailure".into(),
                    message: DisplayErrorContext(&err).to_string(),
                };
            }
            _ => None,
        };
        let Some(response) = response else {
            // Timeouts, dispatch failures (connection, DNS, TLS, credential
            // loading) and responses that could not be parsed.
            return StoreError::Unreachable {
                op,
                key,
                detail: DisplayErrorContext(&err).to_string(),
            };
        };
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|value| {
            archiver_core::parse_retry_after(value, std::time::SystemTime::now())
        });
        let code = err.code().unwrap_or_default().to_owned();
        let message = err.message().unwrap_or_default().to_owned();
        classify_response(op, bucket, key, status, code, message, retry_after)
    }
}

/// Decides the variant from an S3 error response. Pure, so that the table
/// is tested without a server.
fn classify_response(
    op: &'static str,
    bucket: &str,
    key: String,
    status: u16,
    code: String,
    message: String,
    retry_after: Option<Duration>,
) -> StoreError {
    const THROTTLING: &[&str] = &[
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
    ];
    const CHECKSUM: &[&str] = &[
        "BadDigest",
        "InvalidDigest",
        "XAmzContentSHA256Mismatch",
        "XAmzContentChecksumMismatch",
        "InvalidChecksum",
    ];
    const DENIED: &[&str] = &[
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
        "AccountProblem",
        "InvalidSecurity",
    ];
    const TRANSIENT_4XX: &[&str] = &[
        "RequestTimeout",
        "OperationAborted",
        "InternalError",
        "ServiceUnavailable",
    ];
    let code_is = |set: &[&str]| set.iter().any(|c| *c == code);
    if status == 429 || code_is(THROTTLING) {
        let code = if code.is_empty() {
            status.to_string()
        } else {
            code
        };
        return StoreError::Throttled {
            op,
            key,
            code,
            retry_after,
        };
    }
    if code == "NoSuchBucket" {
        return StoreError::NoSuchBucket {
            op,
            bucket: bucket.to_owned(),
        };
    }
    if code_is(CHECKSUM) {
        return StoreError::ChecksumRejected {
            op,
            key,
            code,
            message,
        };
    }
    if status == 401 || status == 403 || code_is(DENIED) {
        return StoreError::Denied {
            op,
            key,
            status,
            code,
            message,
        };
    }
    if status >= 500 || status == 408 || code_is(TRANSIENT_4XX) {
        if status == 503 && retry_after.is_some() {
            return StoreError::Throttled {
                op,
                key,
                code: if code.is_empty() { "503".into() } else { code },
                retry_after,
            };
        }
        // 501 NotImplemented: the store lacks a feature we were configured
        // to use (object lock, SSE); asking again will not add it.
        if status == 501 {
            return StoreError::Rejected {
                op,
                key,
                status,
                code,
                message,
            };
        }
        return StoreError::Server {
            op,
            key,
            status,
            code,
            message,
        };
    }
    StoreError::Rejected {
        op,
        key,
        status,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, code: &str, retry_after: Option<Duration>) -> StoreError {
        classify_response(
            "PutObject",
            "bucket",
            "k".into(),
            status,
            code.into(),
            "msg".into(),
            retry_after,
        )
    }

    #[test]
    fn response_classification_table() {
        let secs = |s| Some(Duration::from_secs(s));
        let cases: &[(u16, &str, Option<Duration>, ErrorClass)] = &[
            (
                503,
                "SlowDown",
                secs(7),
                ErrorClass::RetryAfter(Duration::from_secs(7)),
            ),
            (503, "SlowDown", None, ErrorClass::Transient),
            (
                429,
                "",
                secs(2),
                ErrorClass::RetryAfter(Duration::from_secs(2)),
            ),
            (400, "ThrottlingException", None, ErrorClass::Transient),
            (500, "InternalError", None, ErrorClass::Transient),
            (502, "", None, ErrorClass::Transient),
            (
                503,
                "ServiceUnavailable",
                secs(30),
                ErrorClass::RetryAfter(Duration::from_secs(30)),
            ),
            (400, "RequestTimeout", None, ErrorClass::Transient),
            (403, "AccessDenied", None, ErrorClass::Transient),
            (403, "SignatureDoesNotMatch", None, ErrorClass::Transient),
            (403, "RequestTimeTooSkewed", None, ErrorClass::Transient),
            (404, "NoSuchBucket", None, ErrorClass::Transient),
            (400, "BadDigest", None, ErrorClass::Permanent),
            (400, "InvalidDigest", None, ErrorClass::Permanent),
            (400, "InvalidArgument", None, ErrorClass::Permanent),
            (400, "KeyTooLongError", None, ErrorClass::Permanent),
            (400, "InvalidObjectName", None, ErrorClass::Permanent),
            (400, "InvalidRequest", None, ErrorClass::Permanent),
            (400, "EntityTooLarge", None, ErrorClass::Permanent),
            (501, "NotImplemented", None, ErrorClass::Permanent),
        ];
        for (status, code, retry_after, class) in cases {
            let err = classify(*status, code, *retry_after);
            assert_eq!(err.class(), *class, "{status} {code}: {err}");
        }
        assert!(matches!(
            classify(400, "BadDigest", None),
            StoreError::ChecksumRejected { .. }
        ));
        assert!(matches!(
            classify(404, "NoSuchBucket", None),
            StoreError::NoSuchBucket { .. }
        ));
    }

    #[test]
    fn local_errors_are_classified() {
        let io = StoreError::io("read", "/x", std::io::Error::other("disk"));
        assert_eq!(io.class(), ErrorClass::Transient);
        let bad = StoreError::SpoolMismatch {
            path: "/x".into(),
            detail: "sha256 differs".into(),
        };
        assert_eq!(bad.class(), ErrorClass::Permanent);
        assert_eq!(
            StoreError::InvalidKey {
                key: "..".into(),
                reason: "r"
            }
            .class(),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn local_io_errors_that_cannot_heal_by_waiting_are_permanent() {
        // errno values as the kernel reports them (Linux numbering).
        let cases: &[(i32, &str, ErrorClass)] = &[
            (36, "ENAMETOOLONG", ErrorClass::Permanent),
            (22, "EINVAL", ErrorClass::Permanent),
            (13, "EACCES", ErrorClass::Transient),
            (1, "EPERM", ErrorClass::Transient),
            (28, "ENOSPC", ErrorClass::Transient),
            (122, "EDQUOT", ErrorClass::Transient),
            (30, "EROFS", ErrorClass::Transient),
            (5, "EIO", ErrorClass::Transient),
            (2, "ENOENT", ErrorClass::Transient),
        ];
        for (errno, name, class) in cases {
            let err = StoreError::io(
                "rename temp file to",
                "/archive/x",
                std::io::Error::from_raw_os_error(*errno),
            );
            assert_eq!(err.class(), *class, "{name}: {err}");
        }
    }

    #[test]
    fn error_stays_small_enough_to_return_by_value() {
        // clippy's result_large_err threshold.
        assert!(std::mem::size_of::<StoreError>() <= 128);
    }

    #[test]
    fn throttled_message_mentions_the_hint() {
        let e = classify(503, "SlowDown", Some(Duration::from_secs(9)));
        assert!(e.to_string().contains("retry after 9s"), "{e}");
    }
}
