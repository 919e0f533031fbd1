//! What the adapters' unit tests share: an API client, webhooks delivered
//! without credentials (authentication has tests of its own), the job
//! handed to `resolve`, the Baileys media fields of one test file, and
//! the checks every adapter's config and backfill tests make.

use std::time::Duration;

use archiver_core::JobSpec;
use serde_json::Value;

use crate::{
    ApiClient, JobRef, ParsedWebhook, Provider, ProviderError, Resolution, ResolvedMedia,
    WebhookRequest,
};

/// sha256("abc"), hex.
pub(crate) const SHA_HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
/// sha256("abc"), base64.
pub(crate) const SHA_B64: &str = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";

/// `mediaKey` of the Baileys test file, base64.
pub(crate) const KEY_B64: &str = "EtkHwPvSijrLUj6c18dK3vtU+ONrCzMSYbOJYY0FqTw=";
/// Its `fileEncSha256`, base64.
pub(crate) const ENC_B64: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

/// Base64 `b64` as Evolution sends bytes: a `Uint8Array` through
/// `JSON.stringify`, an object keyed by index (`{"0": 18, "1": 217, ...}`).
pub(crate) fn indexed(b64: &str) -> Value {
    let bytes = archiver_core::decode::bytes(&Value::from(b64)).unwrap();
    Value::Object(
        bytes
            .iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), Value::from(*b)))
            .collect(),
    )
}

/// An API client for adapters under test (their fakes answer at once).
pub(crate) fn api() -> ApiClient {
    ApiClient::new(Duration::from_secs(2), Duration::from_secs(5)).unwrap()
}

/// `body` as a webhook without headers or query, parsed by `adapter`.
pub(crate) fn parse(adapter: &dyn Provider, body: &Value) -> Result<ParsedWebhook, ProviderError> {
    parse_bytes(adapter, &serde_json::to_vec(body).unwrap())
}

/// [`parse`] of a body that need not be JSON.
pub(crate) fn parse_bytes(
    adapter: &dyn Provider,
    body: &[u8],
) -> Result<ParsedWebhook, ProviderError> {
    adapter.parse_webhook(&WebhookRequest {
        headers: &http::HeaderMap::new(),
        query: None,
        body,
    })
}

/// Attempt number `attempt` at `job`, with nothing recorded before it.
pub(crate) fn attempt(job: &JobSpec, attempt: u32) -> JobRef<'_> {
    JobRef {
        message_id: &job.message_id,
        media_id: job.media_id.as_deref(),
        payload: &job.payload,
        attempt,
        last_error: None,
        link_dead: false,
    }
}

/// What `adapter` resolves `job` to, which must be bytes to fetch.
pub(crate) async fn fetch(adapter: &dyn Provider, job: JobRef<'_>) -> ResolvedMedia {
    match adapter.resolve(job).await.unwrap() {
        Resolution::Fetch(resolved) => resolved,
        park @ Resolution::Park { .. } => panic!("expected bytes to fetch, got {park:?}"),
    }
}

/// A minute ago in Unix seconds: a message time inside every provider's
/// retention.
pub(crate) fn a_minute_ago() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(now).expect("seconds fit i64") - 60
}

/// Asserts that a problem in `errors` starts with each of `keys`: a config
/// check reports every problem at once, each naming its key.
pub(crate) fn assert_reported(errors: &[String], keys: &[&str]) {
    for key in keys {
        assert!(
            errors.iter().any(|e| e.starts_with(key)),
            "{key}: {errors:?}"
        );
    }
}

/// Asserts that the `data` of the gateway webhook `hook`, backfilled, makes
/// the very job the webhook makes (both dated a minute ago), so that a
/// webhook and a backfill of one message dedupe.
pub(crate) async fn backfilling_the_data_makes_the_webhook_s_job(
    adapter: &dyn Provider,
    mut hook: Value,
) {
    hook["data"]["messageTimestamp"] = Value::from(a_minute_ago());
    let webhook_job = parse(adapter, &hook).unwrap().jobs.remove(0);
    assert_eq!(
        adapter.backfill(&hook["data"]).await.unwrap(),
        webhook_job,
        "same id and payload"
    );
}

/// Both authentication steps in the receiver's order.
pub(crate) trait AuthenticateBoth: Provider {
    fn authenticate(&self, request: &WebhookRequest<'_>) -> Result<(), ProviderError> {
        self.authenticate_head(request.headers, request.query)?;
        self.authenticate_body(request)
    }
}

impl<T: Provider + ?Sized> AuthenticateBoth for T {}
