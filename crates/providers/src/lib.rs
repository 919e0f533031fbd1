//! Provider adapters: everything that differs between WhatsApp gateways.
//!
//! An adapter answers three questions for one account, and nothing else:
//! 1. *Is this webhook really from my provider?* In two steps, so that a
//!    request without credentials never gets its body read:
//!    [`Provider::authenticate_head`] checks what travels in the headers and
//!    query (tokens, JWTs, the presence of a signature and its freshness),
//!    then [`Provider::authenticate_body`] checks signatures computed over
//!    the raw body. Comparisons are constant-time. Every account
//!    authenticates unless its config says `allow_unauthenticated_webhooks
//!    = true`; a missing credential is a config error, never a silent
//!    "accept everything".
//! 2. *Which media files does it announce?* ([`Provider::parse_webhook`]: a
//!    pure function from bytes to [`JobSpec`]s, with a 400-worthy error that
//!    names the offending field).
//! 3. *Where are the bytes now, and what hash does the provider vouch for?*
//!    ([`Provider::resolve`], which may call the provider's API for a fresh
//!    link, and returns a [`ResolvedMedia`] the fetch step can download).
//!
//! Adapters know nothing about the queue, the store or the HTTP server; the
//! job payload they write at parse time is opaque to everyone else and read
//! back only by the same adapter. Every error is a [`ProviderError`] whose
//! [`Classify`](archiver_core::Classify) answer follows the provider's
//! documented error codes (`shared/spec/providers.md`).
//!
//! Account configuration ([`AccountConfig`]) lives here too, one struct per
//! provider, because the keys differ per provider.

mod account;
mod api_client;
mod auth;
mod backfill;
mod baileys;
mod cloudapi;
mod codechat;
mod config;
mod error;
mod evolution;
mod greenapi;
#[cfg(test)]
mod hostile_answers;
mod meta;
mod nxcloud;
mod onprem;
mod rules;
#[cfg(test)]
mod testing;
mod waha;

use std::sync::Arc;

use archiver_core::{
    AccountName, Clock, JobSpec, ProviderKind, Sha256Digest, SystemClock, UnixMillis, bounds,
};
use media_fetch::{DownloadRequest, HostPolicy};
use serde_json::Value;

pub use api_client::ApiClient;
pub use archiver_core::Direction;
pub use cloudapi::CloudApiConfig;
pub use codechat::CodechatConfig;
pub use config::AccountConfig;
pub use error::ProviderError;
pub use evolution::EvolutionConfig;
pub use greenapi::GreenApiConfig;
pub use nxcloud::NxcloudConfig;
pub use onprem::OnPremConfig;
pub use rules::{MediaKind, RulesConfig};
pub use waha::WahaConfig;

/// A webhook request as the receiver got it, before anything is parsed.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// Request headers.
    pub headers: &'a http::HeaderMap,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// The raw body bytes (signatures are computed over exactly these).
    pub body: &'a [u8],
}

/// What a webhook announced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParsedWebhook {
    /// One job per media file.
    pub jobs: Vec<JobSpec>,
    /// Events that carry no media (texts, statuses), counted but not queued.
    pub ignored: usize,
    /// Media messages the account's `[accounts.rules]` exclude: no job;
    /// answered under `ignored` and counted as `filtered`.
    pub filtered: usize,
    /// Jobs parked for an external event that this webhook is (for example
    /// an On-Prem store callback); the receiver wakes each one.
    pub wakes: Vec<Wake>,
}

impl ParsedWebhook {
    /// A webhook that announced no media (a text, a status, another event).
    pub(crate) fn ignored_event() -> Self {
        ParsedWebhook {
            ignored: 1,
            ..ParsedWebhook::default()
        }
    }

    /// A webhook of one message: `None` when it carries no media.
    pub(crate) fn of_message(message: Option<Announced>) -> Self {
        let mut parsed = ParsedWebhook::default();
        parsed.add(message);
        parsed
    }

    /// Adds one message of the webhook: a job, one the rules excluded, or
    /// (`None`) one without media.
    pub(crate) fn add(&mut self, message: Option<Announced>) {
        match message {
            Some(Announced::Job(job)) => self.jobs.push(job),
            Some(Announced::Excluded(_)) => self.filtered += 1,
            None => self.ignored += 1,
        }
    }
}

/// A media message as the account's rules judged it (`Account::job`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Announced {
    /// Archive it.
    Job(JobSpec),
    /// Not archived; why (names the rule).
    Excluded(String),
}

/// A parked job to wake, with what the event said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    /// The job's id.
    pub job_id: String,
    /// Recorded as the job's `last_error` so the next attempt sees it
    /// (`None` when the event is plain success).
    pub note: Option<String>,
}

/// The job as the adapter sees it again in the worker.
#[derive(Debug, Clone, Copy)]
pub struct JobRef<'a> {
    /// The message id.
    pub message_id: &'a str,
    /// The provider's media id, if it has one.
    pub media_id: Option<&'a str>,
    /// What [`Provider::parse_webhook`] stored.
    pub payload: &'a serde_json::Value,
    /// Which attempt this is, counting from 1.
    pub attempt: u32,
    /// What the previous attempt or a wake-up event recorded.
    pub last_error: Option<&'a str>,
    /// The link used earlier in this attempt answered 403/404/410: ask the
    /// provider for a fresh one instead of trusting the stored link.
    pub link_dead: bool,
}

impl JobRef<'_> {
    /// The payload [`Provider::parse_webhook`] stored, read back.
    pub(crate) fn stored<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProviderError> {
        T::deserialize(self.payload).map_err(|e| ProviderError::BadJob(e.to_string()))
    }

    /// The media id of a job keyed by one.
    pub(crate) fn required_media_id(&self) -> Result<&str, ProviderError> {
        self.media_id
            .ok_or_else(|| ProviderError::BadJob("no media id".into()))
    }
}

/// Descriptive facts about a media file, recorded in its manifest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MediaDetails {
    /// The provider's mime type; decides the blob's extension.
    pub mime_type: Option<String>,
    /// The sender's file name (recorded, never used as a key).
    pub file_name: Option<String>,
    /// The caption.
    pub caption: Option<String>,
    /// The chat the message belongs to.
    pub chat_id: Option<String>,
    /// Who sent it.
    pub sender: Option<String>,
    /// Whether the account received or sent it, when the adapter knows
    /// (PRODUCT.md section 10: manifests and rules use it).
    pub direction: Option<Direction>,
}

/// What [`Provider::resolve`] found.
// One value per attempt, never stored in bulk: boxing the large variant
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Resolution {
    /// The bytes can be had now.
    Fetch(ResolvedMedia),
    /// The provider was asked to prepare the file and will say when it is
    /// ready (On-Prem's store callback): park the job until woken, or until
    /// `timeout`, whichever comes first.
    Park {
        /// How long to wait for the event before trying again.
        timeout: std::time::Duration,
        /// Why, for the log.
        reason: String,
    },
}

/// Where the bytes come from.
// One value per attempt, never stored in bulk (as `Resolution`): boxing
// the download would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum MediaSource {
    /// Download them.
    Download {
        /// The request that yields the bytes.
        request: DownloadRequest,
        /// The hosts this download (and each of its redirects) may touch.
        hosts: HostPolicy,
    },
    /// The webhook carried them (e.g. Evolution's `base64`); the stored
    /// payload is their only copy until they are archived.
    Inline(bytes::Bytes),
}

impl MediaSource {
    /// A plain GET of `request` within `hosts`.
    pub fn download(request: DownloadRequest, hosts: HostPolicy) -> Self {
        MediaSource::Download { request, hosts }
    }
}

/// Where to get a media file and what to check it against.
#[derive(Debug, Clone)]
pub struct ResolvedMedia {
    /// Where the bytes come from.
    pub source: MediaSource,
    /// The sha256 the provider vouches for; `None` when it vouches for none
    /// and the archive can only record what it computed.
    pub expected_sha256: Option<Sha256Digest>,
    /// Facts for the manifest.
    pub details: MediaDetails,
    /// Set when the bytes obtained are a WhatsApp end-to-end encrypted blob
    /// (Baileys media straight from the CDN): the pipeline authenticates and
    /// decrypts them before `expected_sha256` is checked, and the manifest
    /// says `whatsapp-enc+plain`. `None` for plain bytes.
    pub encryption: Option<whatsapp_media::EncryptedMedia>,
    /// The file's size in bytes as the provider announced it (Baileys'
    /// `fileLength`), when it did: a file over the account's
    /// `rules.max_file_bytes` is then refused without a download.
    pub size: Option<u64>,
}

/// One account's adapter.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug + 'static {
    /// The provider kind.
    fn kind(&self) -> ProviderKind;
    /// The account this adapter serves.
    fn account(&self) -> &AccountName;
    /// Whether webhooks are authenticated at all: false only for an account
    /// that set `allow_unauthenticated_webhooks = true` and left its
    /// credentials out (`check-config` and the startup log warn loudly).
    fn webhook_auth_configured(&self) -> bool;
    /// Checks the credentials that travel in the request head (headers or query: bearer tokens, JWTs, NXCloud's accessKey/ts/sign headers' presence and ts window, `?token=`). Runs before the body is read: an error is answered 401 at once and the body is never read.
    fn authenticate_head(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<(), ProviderError>;
    /// Checks credentials computed over the raw body (HMAC signatures: Cloud API's X-Hub-Signature-256, NXCloud's sign). Runs after `authenticate_head` succeeded and the body was read.
    fn authenticate_body(&self, request: &WebhookRequest<'_>) -> Result<(), ProviderError> {
        let _ = request;
        Ok(())
    }
    /// Turns an authenticated webhook into jobs. Pure: no I/O.
    fn parse_webhook(&self, request: &WebhookRequest<'_>) -> Result<ParsedWebhook, ProviderError>;
    /// Finds where the bytes are now (or parks the job until they are).
    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError>;
    /// The account's `rules.max_file_bytes`: the pipeline ends a job whose
    /// file is larger `dead` (`too-large`), before downloading it when
    /// [`ResolvedMedia::size`] says so, else as soon as the download
    /// passes it. `None` (the default): only `fetch.max_file_bytes`.
    fn max_file_bytes(&self) -> Option<u64> {
        None
    }
    /// Answers a subscription check (`GET /webhooks/{account}` with the raw
    /// `query`), as Meta's Cloud API sends one before it delivers webhooks:
    /// `Some(Ok(text))` is echoed as `200 text/plain`, `Some(Err(_))` is
    /// refused (403), and `None` (the default) means the provider has no
    /// such check, so the route answers 405.
    fn verify_subscription(&self, query: Option<&str>) -> Option<Result<String, ProviderError>> {
        let _ = query;
        None
    }
    /// Turns one reference of a backfill file (`media-archiver backfill`:
    /// one JSON object per line, in the provider's own field names) into
    /// the job its webhook would have made, for media whose webhook never
    /// arrived or predates the daemon. The job id must be the webhook's, so
    /// that a backfill and a webhook never archive one file twice and a
    /// second backfill enqueues nothing new. May call the provider's API
    /// (e.g. for a message's timestamp). The default answers
    /// [`ProviderError::Unsupported`].
    async fn backfill(&self, reference: &serde_json::Value) -> Result<JobSpec, ProviderError> {
        let _ = reference;
        Err(ProviderError::Unsupported(format!(
            "backfill is not supported for {} accounts",
            self.kind()
        )))
    }
}

/// Builds the adapter for one configured account, on the wall clock.
/// Secrets are resolved here; every problem found is returned, not just
/// the first, each starting with its key (`webhook_token: required …`).
pub fn build(config: &AccountConfig, api: &ApiClient) -> Result<Arc<dyn Provider>, Vec<String>> {
    build_with_clock(config, api, Arc::new(SystemClock))
}

/// [`build`] with the clock that dates webhook arrivals (job deadlines) and
/// bounds NXCloud's signature `ts`.
pub fn build_with_clock(
    config: &AccountConfig,
    api: &ApiClient,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Provider>, Vec<String>> {
    let rule_problems = config.keys().rules.problems();
    let built = build_adapter(config, api, clock);
    match built {
        Ok(adapter) if rule_problems.is_empty() => Ok(adapter),
        Ok(_) => Err(rule_problems),
        Err(mut problems) => {
            problems.extend(rule_problems);
            Err(problems)
        }
    }
}

fn build_adapter(
    config: &AccountConfig,
    api: &ApiClient,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Provider>, Vec<String>> {
    Ok(match config {
        AccountConfig::Greenapi(c) => {
            Arc::new(greenapi::GreenApi::new(c, api.clone())?.with_clock(clock))
        }
        AccountConfig::Codechat(c) => Arc::new(codechat::Codechat::new(c)?.with_clock(clock)),
        AccountConfig::Evolution(c) => Arc::new(evolution::Evolution::new(c)?.with_clock(clock)),
        AccountConfig::Nxcloud(c) => {
            Arc::new(nxcloud::Nxcloud::new(c, api.clone())?.with_clock(clock))
        }
        AccountConfig::Onprem(c) => {
            Arc::new(onprem::OnPrem::new(c, api.clone())?.with_clock(clock))
        }
        AccountConfig::Cloudapi(c) => {
            Arc::new(cloudapi::CloudApi::new(c, api.clone())?.with_clock(clock))
        }
        AccountConfig::Waha(c) => Arc::new(waha::Waha::new(c, api.clone())?.with_clock(clock)),
    })
}

/// The string at `key` of `v`, unless absent or empty.
pub(crate) fn non_empty<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// [`non_empty`], owned.
pub(crate) fn opt_string(v: &Value, key: &str) -> Option<String> {
    non_empty(v, key).map(str::to_owned)
}

/// A present field that could not be decoded, named by its path (a 400).
pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> ProviderError {
    ProviderError::BadPayload(format!("invalid field `{field}`: {reason}"))
}

/// A webhook body, which must be a JSON object (every provider's is); a
/// 400 otherwise.
pub(crate) fn webhook_json(body: &[u8]) -> Result<Value, ProviderError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ProviderError::BadPayload(format!("malformed JSON: {e}")))?;
    json_object(&body)?;
    Ok(body)
}

/// Refuses (400) a webhook body or backfill reference that is not a JSON
/// object.
pub(crate) fn json_object(value: &Value) -> Result<(), ProviderError> {
    if value.is_object() {
        Ok(())
    } else {
        Err(ProviderError::BadPayload("expected a JSON object".into()))
    }
}

/// `base` with `segments` appended, each percent-encoded. `base` is an
/// http(s) URL checked by [`config::http_url`], so it takes segments.
pub(crate) fn endpoint<'s>(
    base: &url::Url,
    segments: impl IntoIterator<Item = &'s str>,
) -> url::Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// A message's time in Unix seconds, as Unix milliseconds: a JSON number, a
/// decimal string (Meta) or protobuf.js's `{low, high}` (Baileys), which
/// must be an integer between 2009 and the year 9999
/// ([`archiver_core::bounds::message_time`]). Anything else is a 400 naming
/// `field`.
pub(crate) fn message_time(
    value: Option<&serde_json::Value>,
    field: &str,
) -> Result<UnixMillis, ProviderError> {
    let value = value
        .filter(|v| !v.is_null())
        .ok_or_else(|| ProviderError::missing(field))?;
    let secs = archiver_core::decode::u64_field(value)
        .ok()
        .and_then(|s| i64::try_from(s).ok())
        .ok_or_else(|| {
            ProviderError::BadPayload(format!(
                "field `{field}` is not an integer number of Unix seconds"
            ))
        })?;
    Ok(bounds::message_time(field, secs)?)
}

/// An id from the webhook at `field`, checked against the bounds every
/// store can hold ([`archiver_core::bounds::check_id`]).
pub(crate) fn checked_id<'a>(id: &'a str, field: &str) -> Result<&'a str, ProviderError> {
    bounds::check_id(field, id)?;
    Ok(id)
}
