use std::time::Duration;

use archiver_core::{Classify, ErrorClass};
use retry_queue::QueueError;

/// Why a delivery was not delivered this time.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The target answered, but not 2xx.
    #[error("HTTP {status}")]
    Status {
        /// The status code.
        status: u16,
        /// The `Retry-After` of a 429 or 503, in seconds.
        retry_after: Option<Duration>,
    },
    /// No answer within the target's `timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be sent (connection refused, DNS, TLS).
    #[error("cannot reach the target: {0}")]
    Unreachable(String),
    /// The event's data could not be read now (the store did not answer).
    #[error("cannot read the event's data: {0}")]
    Data(String),
    /// The job or its manifest is gone (erased): there is nothing to send.
    #[error("nothing to send: {0}")]
    Gone(String),
    /// The outbox could not be read or updated.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Classify for NotifyError {
    fn class(&self) -> ErrorClass {
        match self {
            NotifyError::Status {
                retry_after: Some(after),
                ..
            } => ErrorClass::RetryAfter(*after),
            NotifyError::Status { .. }
            | NotifyError::Timeout(_)
            | NotifyError::Unreachable(_)
            | NotifyError::Data(_) => ErrorClass::Transient,
            NotifyError::Gone(_) => ErrorClass::Permanent,
            NotifyError::Queue(e) => e.class(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failed_send_is_retried_and_a_missing_job_is_not() {
        let refused = NotifyError::Status {
            status: 500,
            retry_after: None,
        };
        assert_eq!(refused.class(), ErrorClass::Transient);
        assert_eq!(refused.to_string(), "HTTP 500");
        let busy = NotifyError::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            busy.class(),
            ErrorClass::RetryAfter(Duration::from_secs(30))
        );
        assert_eq!(
            NotifyError::Timeout(Duration::from_secs(10)).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            NotifyError::Gone("job x".into()).class(),
            ErrorClass::Permanent
        );
    }
}
