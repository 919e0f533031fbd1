use archiver_core::{Classify, ErrorClass};

/// Everything a queue operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The backend cannot be used right now: I/O or database error, or the
    /// queue's worker has stopped. Nothing was committed; try again later
    /// (the webhook receiver answers 503 so the provider redelivers).
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The lease no longer holds the job: it expired and another worker leased
    /// the job, or the job was already finished. The caller must drop its work.
    #[error(
        "lease on job {job_id} was lost: it expired and the job was leased again, or the job was finished"
    )]
    LeaseLost {
        /// The job the lease was for.
        job_id: String,
    },
    /// An erasure is deleting the blob a worker is about to write: the
    /// attempt waits until the erasure is over, then writes it again.
    #[error("blob {blob_key} is being deleted by an erasure; retry when it is over")]
    BlobBeingErased {
        /// The blob.
        blob_key: String,
    },
    /// The retry policy's bounds make no sense (see [`crate::RetryPolicy::validate`]).
    #[error("invalid retry policy: {0}")]
    InvalidPolicy(String),
    /// The backend's settings are wrong (e.g. a PostgreSQL URL that does not
    /// parse); the message names the setting, never a secret value.
    #[error("invalid queue configuration: {0}")]
    Config(String),
    /// The stored data cannot be read by this build (unknown state or
    /// provider, payload that is not JSON, a newer schema version).
    #[error("queue storage is corrupt or from a newer version: {0}")]
    Corrupt(String),
}

impl Classify for QueueError {
    fn class(&self) -> ErrorClass {
        match self {
            QueueError::Unavailable(_) | QueueError::BlobBeingErased { .. } => {
                ErrorClass::Transient
            }
            QueueError::LeaseLost { .. }
            | QueueError::InvalidPolicy(_)
            | QueueError::Config(_)
            | QueueError::Corrupt(_) => ErrorClass::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailability_is_worth_retrying() {
        assert_eq!(
            QueueError::Unavailable("disk".into()).class(),
            ErrorClass::Transient
        );
        let lost = QueueError::LeaseLost {
            job_id: "a:1".into(),
        };
        assert_eq!(lost.class(), ErrorClass::Permanent);
        assert!(lost.to_string().contains("a:1"));
        assert_eq!(
            QueueError::Corrupt("x".into()).class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            QueueError::Config("url".into()).class(),
            ErrorClass::Permanent
        );
    }
}
