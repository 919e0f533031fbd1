//! Building the SDK client from checked settings, and the time limits of
//! its requests.
//!
//! Every attempt of every request has a limit, so a store that stops
//! answering fails a job (retried later) instead of holding a worker: small
//! requests get [`SMALL_REQUEST_TIMEOUT`], an upload as long as the slowest
//! tolerated rate needs for its bytes, and CompleteMultipartUpload, which
//! AWS may take minutes over for large objects, [`COMPLETE_TIMEOUT`]. The
//! exception is a piped part ([`piped_override`]), which lasts as long as
//! the download feeding it: a store that stops taking its bytes is caught
//! chunk by chunk instead, one that takes a chunk a minute is not.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};

use super::{S3Settings, S3Store};

/// Connect timeout for every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt of a small request (Head*, Get of a manifest, Create/Abort).
pub(super) const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// CompleteMultipartUpload can take minutes on AWS for large objects.
pub(super) const COMPLETE_TIMEOUT: Duration = Duration::from_secs(600);
/// Slowest upload rate tolerated before an attempt is abandoned as stalled.
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 64 * 1024;

impl S3Store {
    /// Builds the client for checked settings. Does no request
    /// (credentials from the AWS chain are resolved on first use); call
    /// [`ObjectStore::ping`](crate::ObjectStore::ping) to check the bucket.
    pub async fn connect(settings: S3Settings) -> Self {
        let (cfg, credentials) = settings.into_parts();
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(cfg.region.clone()));
        if let Some(keys) = credentials {
            loader = loader.credentials_provider(Credentials::new(
                keys.access_key_id.expose(),
                keys.secret_access_key.expose(),
                None,
                None,
                "media-archiver-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .timeout_config(attempt_timeout(SMALL_REQUEST_TIMEOUT));
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(builder.build()),
            stream_buffers: Arc::new(tokio::sync::Semaphore::new(cfg.stream_buffers)),
            cfg: Arc::new(cfg),
        }
    }
}

/// A per-request override of the attempt timeout (an upload's is
/// [`upload_limit`]).
pub(super) fn timeout_override(limit: Duration) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(attempt_timeout(limit))
}

/// The override for a piped part's request, which lasts as long as the
/// download feeding it: no limit on the attempt as a whole. A stall is
/// caught on each side instead: `fetch.read_timeout` for the provider,
/// [`PIPE_STALL`](super::pipe) for the store, and [`SMALL_REQUEST_TIMEOUT`]
/// for the answer once the last byte went in.
pub(super) fn piped_override() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .disable_operation_attempt_timeout()
            .build(),
    )
}

/// How long one attempt to upload `len` bytes may take.
pub(super) fn upload_limit(len: u64) -> Duration {
    SMALL_REQUEST_TIMEOUT + Duration::from_secs(len / MIN_UPLOAD_BYTES_PER_SEC)
}

fn attempt_timeout(limit: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(limit)
        .build()
}
