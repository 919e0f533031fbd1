//! NXCloud WhatsApp API (`provider = "nxcloud"`), providers.md section 6 and
//! `shared/spec/sources/004_…` (getMedia).
//!
//! Webhooks: NXCloud's inbound message shape is not publicly documented.
//! Accepted is the Cloud-API-like body its status callbacks share:
//! `{business_phone, messaging_product:"whatsapp", contacts?, messages:[{from,
//! id, timestamp, type, <type>:{id, mime_type, sha256?, caption?,
//! filename?}}], statuses?}`, where `type` is `image`, `video`, `audio`,
//! `voice`, `document` or `sticker`. Each media message becomes one job keyed
//! by its media id; texts and statuses are ignored; a body for another
//! `business_phone` is refused, and so is a Meta envelope (`entry[]`), so a
//! shape change is loud rather than silently archived as nothing.
//!
//! Signature: every API request carries `accessKey`, `ts` (ms), `bizType`
//! (`2`), `action` and `sign` = lowercase hex MD5 of the sorted `k=v` headers
//! joined by `&`, then `&body=` and the raw body (left out when empty), then
//! `&accessSecret=` and the secret ([`sign`]). Webhooks must carry the same
//! headers, signed the same way over the headers they carry (`algorithm:
//! sha256` is honoured), unless the account sets
//! `allow_unauthenticated_webhooks = true` (which headers NXCloud's
//! callbacks carry is unconfirmed; an operator whose app signs nothing
//! says so on purpose, and `check-config` warns). The check is in two
//! steps: from the request head, `sign`, `accessKey` (this account's) and
//! `ts` must be present and `ts` (ms) within [`REPLAY_WINDOW`] of the
//! clock, so that a request without credentials, or a replay of an old
//! one, never gets its body read; then the `sign` over the body.
//!
//! Bytes: `POST {api_url}/api/wa/getMedia` -> `data.url` (an OSS link signed
//! until its `Expires`) -> GET at once. When the link has died (403/404/410)
//! getMedia is asked again. NXCloud vouches for no hash, but a `sha256` in
//! the webhook, if one ever appears, is checked.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archiver_core::config_value::resolve_secret;
use archiver_core::{
    AccountName, Clock, ErrorClass, JobSpec, ProviderKind, Secret, SecretRef, Sha256Digest,
};
use md5::Md5;
use media_fetch::{DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::account::Account;
use crate::api_client::ApiResponse;
use crate::auth::constant_time_eq;
use crate::config::{StringOrInt, account_config, http_url};
use crate::rules::Facts;
use crate::{
    Announced, ApiClient, Direction, JobRef, MediaDetails, MediaKind, MediaSource, ParsedWebhook,
    Provider, ProviderError, Resolution, ResolvedMedia, WebhookRequest, endpoint, invalid,
    opt_string, webhook_json,
};

const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
const DEFAULT_HOSTS: [&str; 1] = ["*.aliyuncs.com"];
const MEDIA_TYPES: [&str; 6] = ["image", "video", "audio", "voice", "document", "sticker"];
const GET_MEDIA: &str = "getMedia";
/// `bizType` of WhatsApp requests.
const BIZ_TYPE: &str = "2";
/// How far a webhook's `ts` may be from the clock (PRODUCT.md section 4):
/// a captured webhook replayed later is refused.
pub(crate) const REPLAY_WINDOW: Duration = Duration::from_secs(5 * 60);

account_config! {
    /// `[[accounts]]` keys for `provider = "nxcloud"`. `retention`
    /// defaults to 7d, `allowed_download_hosts` to `*.aliyuncs.com`.
    /// `allow_unauthenticated_webhooks` accepts webhooks without `sign`
    /// (NXCloud signs callbacks only when the app has a receipt-signing
    /// algorithm configured).
    pub struct NxcloudConfig {
        /// The API host (default `https://api2.nxcloud.com`).
        #[serde(default = "default_api_url")]
        api_url: String,
        /// The `accessKey` (user identity, sent in every request). Required.
        #[serde(default)]
        access_key: Option<String>,
        /// The `accessSecret` that signs requests and webhooks (never sent).
        /// Required.
        #[serde(default)]
        access_secret: Option<SecretRef>,
        /// The merchant's WhatsApp number with country code (`86158xxxx1795`).
        business_phone: StringOrInt,
    }
}

fn default_api_url() -> String {
    "https://api2.nxcloud.com".to_owned()
}

#[derive(Debug)]
pub(crate) struct Nxcloud {
    /// Its clock also bounds each webhook's `ts`.
    account: Account,
    hosts: HostPolicy,
    api_url: url::Url,
    access_key: String,
    access_secret: Secret,
    business_phone: String,
    verify_webhooks: bool,
    api: ApiClient,
}

/// What an NXCloud job stores (the media id is the job's `media_id`).
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    media_type: String,
    mime_type: Option<String>,
    sha256: Option<Sha256Digest>,
    caption: Option<String>,
    file_name: Option<String>,
    from: Option<String>,
}

/// The digest of a signature (`algorithm` header; MD5 unless it says sha256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignAlgorithm {
    Md5,
    Sha256,
}

/// NXCloud's request signature: lowercase hex digest of `k=v` pairs sorted
/// by key (ASCII) and joined by `&`, then `&body=<raw body>` unless the body
/// is empty, then `&accessSecret=<secret>`.
pub(crate) fn sign(
    headers: &[(&str, &str)],
    body: &[u8],
    secret: &str,
    algorithm: SignAlgorithm,
) -> String {
    let mut sorted = headers.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes();
    if !body.is_empty() {
        text.extend_from_slice(b"&body=");
        text.extend_from_slice(body);
    }
    text.extend_from_slice(b"&accessSecret=");
    text.extend_from_slice(secret.as_bytes());
    match algorithm {
        SignAlgorithm::Md5 => hex::encode(Md5::digest(&text)),
        SignAlgorithm::Sha256 => hex::encode(sha2::Sha256::digest(&text)),
    }
}

/// The headers NXCloud signs, in the order they are looked up.
const SIGNED_HEADERS: [&str; 4] = ["accessKey", "action", "bizType", "ts"];

/// Header `name` as text, if present.
fn header<'h>(headers: &'h http::HeaderMap, name: &str) -> Result<Option<&'h str>, ProviderError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ProviderError::Unauthorized(format!("header `{name}` is not text")))
        })
        .transpose()
}

/// The `algorithm` header's digest (MD5 when absent).
fn sign_algorithm(headers: &http::HeaderMap) -> Result<SignAlgorithm, ProviderError> {
    match header(headers, "algorithm")? {
        None => Ok(SignAlgorithm::Md5),
        Some(a) if a.eq_ignore_ascii_case("md5") => Ok(SignAlgorithm::Md5),
        Some(a) if a.eq_ignore_ascii_case("sha256") => Ok(SignAlgorithm::Sha256),
        Some(_) => Err(ProviderError::Unauthorized(
            "unsupported signature `algorithm` (md5 or sha256)".into(),
        )),
    }
}

/// What can be checked of a webhook's signature from its head alone: `sign`,
/// `accessKey` and `ts` present, `accessKey` this account's, `ts` (Unix ms)
/// within [`REPLAY_WINDOW`] of `now_ms`, a known `algorithm`.
pub(crate) fn check_sign_head(
    headers: &http::HeaderMap,
    access_key: &str,
    now_ms: i64,
) -> Result<(), ProviderError> {
    let missing = |name: &str| {
        ProviderError::Unauthorized(format!(
            "missing header `{name}` (NXCloud webhooks are signed: accessKey, ts, sign)"
        ))
    };
    header(headers, "sign")?.ok_or_else(|| missing("sign"))?;
    let key = header(headers, "accessKey")?.ok_or_else(|| missing("accessKey"))?;
    let ts = header(headers, "ts")?.ok_or_else(|| missing("ts"))?;
    sign_algorithm(headers)?;
    if !constant_time_eq(key.as_bytes(), access_key.as_bytes()) {
        return Err(ProviderError::Unauthorized(
            "webhook `accessKey` is not this account's".into(),
        ));
    }
    let ts: i64 = ts
        .trim()
        .parse()
        .map_err(|_| ProviderError::Unauthorized("header `ts` is not Unix milliseconds".into()))?;
    let window = i64::try_from(REPLAY_WINDOW.as_millis()).unwrap_or(i64::MAX);
    if ts.abs_diff(now_ms) > window.unsigned_abs() {
        return Err(ProviderError::Unauthorized(format!(
            "header `ts` is more than {} minutes from this server's clock (a replay, or a clock to fix with NTP)",
            REPLAY_WINDOW.as_secs() / 60
        )));
    }
    Ok(())
}

/// Checks a webhook's `sign` against the signed headers it carries, the raw
/// body and the secret ([`check_sign_head`] ran first).
pub(crate) fn verify_sign_body(
    headers: &http::HeaderMap,
    body: &[u8],
    secret: &Secret,
) -> Result<(), ProviderError> {
    let presented = header(headers, "sign")?
        .ok_or_else(|| ProviderError::Unauthorized("missing header `sign`".into()))?;
    let mut signed = Vec::new();
    for name in SIGNED_HEADERS {
        if let Some(value) = header(headers, name)? {
            signed.push((name, value));
        }
    }
    let expected = sign(&signed, body, secret.expose(), sign_algorithm(headers)?);
    if constant_time_eq(
        presented.to_ascii_lowercase().as_bytes(),
        expected.as_bytes(),
    ) {
        Ok(())
    } else {
        Err(ProviderError::Unauthorized(
            "webhook `sign` does not match".into(),
        ))
    }
}

/// What a getMedia `code` means (providers.md section 6 (f)).
pub(crate) fn classify_code(code: i64) -> ErrorClass {
    match code {
        // Authentication (fix sign, clock or keys), parameter error, phone
        // not a WhatsApp number, number not bound to an app.
        1000..=1009 | 9000 | 9002 | 9006 => ErrorClass::Permanent,
        // -1 "request failed", 9001 system error, and codes nobody
        // documented: worth another attempt before the deadline.
        _ => ErrorClass::Transient,
    }
}

/// What a non-200 HTTP answer from the API means.
pub(crate) fn classify_status(status: u16, retry_after: Option<Duration>) -> ErrorClass {
    match status {
        429 => retry_after.map_or(ErrorClass::Transient, ErrorClass::RetryAfter),
        408 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// The `Expires` (unix seconds) of a signed OSS link, if it has one.
pub(crate) fn link_expiry(url: &url::Url) -> Option<u64> {
    url.query_pairs()
        .find(|(k, _)| k == "Expires")
        .and_then(|(_, v)| v.parse().ok())
}

fn digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Nxcloud {
    pub(crate) fn new(config: &NxcloudConfig, api: ApiClient) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let api_url = http_url("api_url", &config.api_url, &mut errors);
        // Both sign every getMedia call, so they are required whether or
        // not webhooks are verified.
        let access_secret =
            resolve_secret("access_secret", config.access_secret.as_ref(), &mut errors);
        if config.access_secret.is_none() {
            errors.push("access_secret: required (it signs getMedia calls and webhooks)".into());
        }
        let access_key = config.access_key.as_deref().map(str::trim);
        match access_key {
            None => errors
                .push("access_key: required (it identifies getMedia calls and webhooks)".into()),
            Some("") => errors.push("access_key: must not be empty".into()),
            Some(_) => {}
        }
        let hosts = config.account().download_hosts(DEFAULT_HOSTS, &mut errors);
        let business_phone = digits(&config.business_phone.to_string());
        if business_phone.is_empty() {
            errors.push("business_phone: must hold the number's digits".into());
        }
        let (Some(api_url), Some(access_key), Some(access_secret), true) =
            (api_url, access_key, access_secret, errors.is_empty())
        else {
            return Err(errors);
        };
        Ok(Self {
            account: Account::new(ProviderKind::Nxcloud, config.account(), DEFAULT_RETENTION),
            hosts: HostPolicy::new(hosts),
            api_url,
            access_key: access_key.to_owned(),
            access_secret,
            business_phone,
            verify_webhooks: !config.allow_unauthenticated_webhooks,
            api,
        })
    }

    /// The same adapter on another clock.
    pub(crate) fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self {
            account: self.account.with_clock(clock),
            ..self
        }
    }

    /// One `messages[]` element: a job, or `None` when it carries no media.
    fn message_job(&self, m: &Value, at: &str) -> Result<Option<Announced>, ProviderError> {
        let field = |key: &str| format!("{at}.{key}");
        let kind = m
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::missing(&field("type")))?;
        if !MEDIA_TYPES.contains(&kind) {
            return Ok(None);
        }
        let media = m
            .get(kind)
            .filter(|v| v.is_object())
            .ok_or_else(|| ProviderError::missing(&field(kind)))?;
        let media_id = media
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ProviderError::missing(&field(&format!("{kind}.id"))))?;
        crate::checked_id(media_id, &field(&format!("{kind}.id")))?;
        let message_id = m
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ProviderError::missing(&field("id")))?;
        crate::checked_id(message_id, &field("id"))?;
        let message_at = crate::message_time(m.get("timestamp"), &field("timestamp"))?;
        if let Some(from) = opt_string(m, "from") {
            crate::checked_id(&from, &field("from"))?;
        }
        let sha256 = match media.get("sha256") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(v) => Some(
                Sha256Digest::from_json(v)
                    .map_err(|e| invalid(&field(&format!("{kind}.sha256")), e))?,
            ),
        };
        // NXCloud forwards the messages the business received (its
        // "message replies"), as Cloud API does: incoming.
        let from = opt_string(m, "from");
        let facts = Facts {
            direction: Some(Direction::Incoming),
            media_type: MediaKind::from_message_type(
                kind,
                media.get("voice").and_then(Value::as_bool) == Some(true),
            ),
            chat_id: from.as_deref(),
        };
        let payload = Payload {
            media_type: kind.to_owned(),
            mime_type: opt_string(media, "mime_type"),
            sha256,
            caption: opt_string(media, "caption"),
            file_name: opt_string(media, "filename"),
            from: from.clone(),
        };
        self.account
            .job(message_id, Some(media_id), message_at, facts, &payload)
            .map(Some)
    }

    /// The signed getMedia call; returns `data` of a `code: 0` answer.
    async fn get_media(&self, media_id: &str) -> Result<Value, ProviderError> {
        let url = endpoint(&self.api_url, ["api", "wa", GET_MEDIA]);
        let body = serde_json::to_vec(&json!({
            "business_phone": self.business_phone,
            "messaging_product": "whatsapp",
            "Media-ID": media_id,
        }))
        .map_err(|e| ProviderError::BadJob(e.to_string()))?;
        let ts = now().as_millis().to_string();
        let headers = [
            ("accessKey", self.access_key.as_str()),
            ("action", GET_MEDIA),
            ("bizType", BIZ_TYPE),
            ("ts", ts.as_str()),
        ];
        let signature = sign(
            &headers,
            &body,
            self.access_secret.expose(),
            SignAlgorithm::Md5,
        );
        let mut request = self
            .api
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("sign", signature);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = self.api.send(GET_MEDIA, request.body(body)).await?;
        if response.status != 200 {
            return Err(http_error(&response));
        }
        let answer = response.json(GET_MEDIA)?;
        let code = answer.get("code").and_then(Value::as_i64).ok_or_else(|| {
            ProviderError::Unreachable {
                api: GET_MEDIA,
                detail: "answer has no numeric `code`".into(),
            }
        })?;
        if code != 0 {
            let message = answer.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(ProviderError::Api {
                api: GET_MEDIA,
                status: response.status,
                detail: format!("code {code}: {message}"),
                class: classify_code(code),
            });
        }
        answer
            .get("data")
            .filter(|d| d.is_object())
            .cloned()
            .ok_or_else(|| ProviderError::Unreachable {
                api: GET_MEDIA,
                detail: "code 0 but no `data`".into(),
            })
    }
}

pub(crate) fn http_error(response: &ApiResponse) -> ProviderError {
    ProviderError::Api {
        api: GET_MEDIA,
        status: response.status,
        detail: response.detail(),
        class: classify_status(response.status, response.retry_after),
    }
}

#[async_trait::async_trait]
impl Provider for Nxcloud {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Nxcloud
    }

    fn account(&self) -> &AccountName {
        self.account.name()
    }

    fn max_file_bytes(&self) -> Option<u64> {
        self.account.max_file_bytes()
    }

    fn webhook_auth_configured(&self) -> bool {
        self.verify_webhooks
    }

    fn authenticate_head(
        &self,
        headers: &http::HeaderMap,
        _query: Option<&str>,
    ) -> Result<(), ProviderError> {
        if self.verify_webhooks {
            check_sign_head(headers, &self.access_key, self.account.now_ms())
        } else {
            Ok(())
        }
    }

    fn authenticate_body(&self, request: &WebhookRequest<'_>) -> Result<(), ProviderError> {
        if self.verify_webhooks {
            verify_sign_body(request.headers, request.body, &self.access_secret)
        } else {
            Ok(())
        }
    }

    fn parse_webhook(&self, request: &WebhookRequest<'_>) -> Result<ParsedWebhook, ProviderError> {
        let body = webhook_json(request.body)?;
        if body.get("entry").is_some() {
            return Err(ProviderError::BadPayload(
                "`entry[]` is Meta's Cloud API envelope; NXCloud webhooks are expected with top-level `messages[]` and `business_phone`".into(),
            ));
        }
        if let Some(phone) = body.get("business_phone") {
            let phone = match phone {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if digits(&phone) != self.business_phone {
                return Err(ProviderError::BadPayload(format!(
                    "`business_phone` {phone} is not this account's business_phone"
                )));
            }
        }
        let list = |key: &str| match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(invalid(key, "not an array")),
        };
        let (messages, statuses) = (list("messages")?, list("statuses")?);
        if messages.is_none() && statuses.is_none() {
            return Ok(ParsedWebhook::ignored_event());
        }
        let mut parsed = ParsedWebhook::default();
        parsed.ignored += statuses.map_or(0, Vec::len);
        for (i, m) in messages.into_iter().flatten().enumerate() {
            parsed.add(self.message_job(m, &format!("messages[{i}]"))?);
        }
        Ok(parsed)
    }

    /// A Meta-shaped reference (`crate::backfill::meta_message`: NXCloud's
    /// `messages[]` items are Meta's), made into a job by the webhook
    /// parser itself.
    async fn backfill(&self, reference: &Value) -> Result<JobSpec, ProviderError> {
        let message = crate::backfill::meta_message(reference)?;
        let job = self.message_job(&message, "reference")?;
        self.account.backfilled(job, "NXCloud")
    }

    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let p: Payload = job.stored()?;
        let media_id = job.required_media_id()?;
        let data = self.get_media(media_id).await?;
        let link = data
            .get("url")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ProviderError::Unreachable {
                api: GET_MEDIA,
                detail: "answer has no data.url".into(),
            })?;
        let url = url::Url::parse(link).map_err(|e| ProviderError::Unreachable {
            api: GET_MEDIA,
            detail: format!("data.url is not a URL: {e}"),
        })?;
        if let Some(expires) = link_expiry(&url)
            && expires <= now().as_secs()
        {
            // A fresh link that is already dead: the clocks disagree, or
            // NXCloud handed out a stale one. Ask again later.
            return Err(ProviderError::Unreachable {
                api: GET_MEDIA,
                detail: format!("data.url expired at {expires} (unix s) before it could be used"),
            });
        }
        Ok(Resolution::Fetch(ResolvedMedia {
            source: MediaSource::download(DownloadRequest::get(url), self.hosts.clone()),
            expected_sha256: p.sha256,
            encryption: None,
            details: MediaDetails {
                mime_type: p.mime_type.or_else(|| opt_string(&data, "mime_type")),
                file_name: p.file_name.or_else(|| opt_string(&data, "file_name")),
                caption: p.caption,
                chat_id: p.from.clone(),
                sender: p.from,
                direction: Some(Direction::Incoming),
            },
            size: None,
        }))
    }
}

#[cfg(test)]
mod tests;
