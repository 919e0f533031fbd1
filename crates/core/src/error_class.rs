use std::time::Duration;

/// How a failure should be handled by the queue.
///
/// Every library crate's error enum maps each of its variants to one of
/// these. The queue acts on this value alone; it never parses messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth another attempt after the usual backoff (network errors, 5xx).
    Transient,
    /// Another attempt after at least this long (429/503 with `Retry-After`).
    RetryAfter(Duration),
    /// Retrying cannot help (the file is gone, the hash does not match after
    /// the allowed retries, the payload is invalid): dead-letter now.
    Permanent,
}

impl ErrorClass {
    /// True unless the error is permanent.
    pub fn is_retryable(self) -> bool {
        !matches!(self, ErrorClass::Permanent)
    }

    /// A short label for metrics and logs (`transient`, `retry_after`, `permanent`).
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::RetryAfter(_) => "retry_after",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// Implemented by each crate's error enum: the one retry classification.
pub trait Classify {
    /// What the queue should do about this error.
    fn class(&self) -> ErrorClass;
}
