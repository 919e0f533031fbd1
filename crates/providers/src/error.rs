use archiver_core::{Classify, ErrorClass};

/// Everything that can go wrong in an adapter.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The webhook's credentials are missing or wrong (HTTP 401).
    #[error("{0}")]
    Unauthorized(String),
    /// The webhook body is not what the provider sends; the message names
    /// the field (HTTP 400).
    #[error("{0}")]
    BadPayload(String),
    /// The provider's API answered with an error; `class` follows the
    /// provider's documented error codes.
    #[error("{api} answered HTTP {status}: {detail}")]
    Api {
        /// Which API call (`downloadFile`, `getMessage`, ...).
        api: &'static str,
        /// The HTTP status.
        status: u16,
        /// What the provider said, shortened; never a credential.
        detail: String,
        /// What to do about it.
        class: ErrorClass,
    },
    /// The provider's API could not be reached or answered nonsense.
    #[error("{api} failed: {detail}")]
    Unreachable {
        /// Which API call.
        api: &'static str,
        /// What happened.
        detail: String,
    },
    /// The provider says the file cannot be had (e.g. Green API `{{SWE002}}`).
    #[error("{0}")]
    MediaUnavailable(String),
    /// The stored job payload is not one this adapter wrote.
    #[error("job payload unreadable: {0}")]
    BadJob(String),
    /// The adapter does not offer this operation (e.g. backfill).
    #[error("{0}")]
    Unsupported(String),
    /// The account's `[accounts.rules]` exclude the message (a backfill
    /// reference; a webhook's excluded messages are counted, not refused).
    #[error("excluded by the account's rules: {0}")]
    Excluded(String),
}

impl ProviderError {
    pub(crate) fn missing(field: &str) -> Self {
        ProviderError::BadPayload(format!("missing or invalid field `{field}`"))
    }
}

impl From<archiver_core::OutOfBounds> for ProviderError {
    fn from(e: archiver_core::OutOfBounds) -> Self {
        ProviderError::BadPayload(e.to_string())
    }
}

impl Classify for ProviderError {
    fn class(&self) -> ErrorClass {
        match self {
            ProviderError::Api { class, .. } => *class,
            ProviderError::Unreachable { .. } => ErrorClass::Transient,
            ProviderError::Unauthorized(_)
            | ProviderError::BadPayload(_)
            | ProviderError::MediaUnavailable(_)
            | ProviderError::BadJob(_)
            | ProviderError::Unsupported(_)
            | ProviderError::Excluded(_) => ErrorClass::Permanent,
        }
    }
}
