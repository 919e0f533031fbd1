//! Meta WhatsApp Cloud API (`provider = "cloudapi"`), providers.md section 5.
//!
//! Webhooks: Meta first checks the callback URL with
//! `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`
//! ([`Provider::verify_subscription`]: the challenge is echoed when the
//! token is the account's `verify_token`). Every notification carries
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw body)>`:
//! a request without the header is refused from its head, before its body
//! is read; the signature is then verified over the exact bytes received,
//! in constant time, before anything is parsed. Each media message in `entry[].changes[].value.messages[]`
//! becomes one job keyed by its media id; statuses, texts and other fields
//! are ignored.
//!
//! Bytes: `GET {graph_url}/{media-id}` with the access token answers a
//! `url` valid for about five minutes, so it is asked for on every attempt
//! and never stored; the file is a GET of that URL with the same token.
//! The webhook's `sha256` (base64 in real payloads, hex in the docs) and the
//! media info's `sha256` (hex) must agree, and the bytes must match them.

use std::sync::Arc;
use std::time::Duration;

use archiver_core::config_value::resolve_secret;
use archiver_core::{
    AccountName, Clock, ErrorClass, JobSpec, ProviderKind, Secret, SecretRef, Sha256Digest,
};
use hmac::Hmac;
use media_fetch::{DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::account::Account;
use crate::api_client::{ApiClient, ApiResponse};
use crate::auth::{constant_time_eq, hmac_matches, signature_header};
use crate::config::{account_config, http_url};
use crate::meta;
use crate::rules::Facts;
use crate::{
    Announced, Direction, JobRef, MediaDetails, MediaSource, ParsedWebhook, Provider,
    ProviderError, Resolution, ResolvedMedia, WebhookRequest, endpoint, non_empty, webhook_json,
};

const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Where Graph's media `url` points (providers.md section 5): only
/// `lookaside.fbsbx.com` is documented; an operator who meets another host
/// lists it in `allowed_download_hosts`.
const DEFAULT_HOSTS: [&str; 1] = ["lookaside.fbsbx.com"];
const MEDIA_TYPES: [&str; 5] = ["image", "document", "audio", "video", "sticker"];
const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// A rejected access token is an operator's fix, not a reason to give up on
/// files that stay fetchable for days: retried this slowly.
pub(crate) const CREDENTIALS_RETRY: Duration = Duration::from_secs(5 * 60);
/// The webhook's and the media info's sha256 disagreeing is retried (Meta
/// may have answered for a moment-old upload) before this attempt.
const HASH_DISAGREEMENT_PATIENCE: u32 = 3;
/// Graph error codes that mean "slow down": transient whatever the status.
const THROTTLING_CODES: [i64; 8] = [4, 17, 32, 613, 80007, 130429, 131048, 131056];
/// Graph error codes of an invalid or expired access token.
const TOKEN_CODES: [i64; 2] = [102, 190];
/// The longest `hub.challenge` echoed (Meta sends a short number).
const MAX_CHALLENGE: usize = 256;

account_config! {
    /// `[[accounts]]` keys for `provider = "cloudapi"`. The account's
    /// `/webhooks/{name}` is the app's callback URL. `retention` defaults to
    /// 7d ("Media IDs in webhooks expire after 7 days"),
    /// `allowed_download_hosts` to `lookaside.fbsbx.com`.
    pub struct CloudApiConfig {
        /// Graph API base including the version (default
        /// `https://graph.facebook.com/v21.0`); media info is `{graph_url}/{media-id}`.
        #[serde(default = "default_graph_url")]
        graph_url: String,
        /// A system-user access token with `whatsapp_business_messaging`.
        access_token: SecretRef,
        /// The app secret: webhooks are signed with it (`X-Hub-Signature-256`).
        /// Required unless `allow_unauthenticated_webhooks = true`.
        #[serde(default)]
        app_secret: Option<SecretRef>,
        /// The verify token entered beside the callback URL in the app dashboard.
        verify_token: SecretRef,
    }
}

fn default_graph_url() -> String {
    "https://graph.facebook.com/v21.0".to_owned()
}

#[derive(Debug)]
pub(crate) struct CloudApi {
    account: Account,
    hosts: HostPolicy,
    graph_url: url::Url,
    access_token: Secret,
    /// `None` only with `allow_unauthenticated_webhooks = true`.
    app_secret: Option<Secret>,
    verify_token: Secret,
    api: ApiClient,
}

/// What a Cloud API job stores (never the short-lived media URL).
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    media_type: String,
    mime_type: Option<String>,
    /// The webhook's sha256, decoded and written as hex.
    sha256: Option<String>,
    caption: Option<String>,
    file_name: Option<String>,
    sender: Option<String>,
    /// The business number the message arrived on (`metadata.phone_number_id`).
    phone_number_id: Option<String>,
}

/// What `GET {graph_url}/{media-id}` answers.
#[derive(Debug)]
struct MediaInfo {
    url: url::Url,
    mime_type: Option<String>,
    sha256: Option<Sha256Digest>,
}

impl CloudApi {
    pub(crate) fn new(config: &CloudApiConfig, api: ApiClient) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let graph_url = http_url("graph_url", &config.graph_url, &mut errors);
        let access_token = resolve_secret("access_token", Some(&config.access_token), &mut errors);
        let verify_token = resolve_secret("verify_token", Some(&config.verify_token), &mut errors);
        let app_secret = config.account().webhook_credential(
            "app_secret",
            config.app_secret.as_ref(),
            &mut errors,
        );
        let hosts = HostPolicy::new(config.account().download_hosts(DEFAULT_HOSTS, &mut errors));
        let (Some(graph_url), Some(access_token), Some(verify_token), true) =
            (graph_url, access_token, verify_token, errors.is_empty())
        else {
            return Err(errors);
        };
        Ok(Self {
            account: Account::new(ProviderKind::Cloudapi, config.account(), DEFAULT_RETENTION),
            hosts,
            graph_url,
            access_token,
            app_secret,
            verify_token,
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

    /// `GET {graph_url}/{media-id}`: a fresh URL.
    ///
    /// Graph's optional `phone_number_id` parameter is not sent: documented
    /// for media uploaded from that number, it is not confirmed for inbound
    /// media, and a refusal would be a 400, which is permanent.
    async fn media_info(&self, media_id: &str) -> Result<MediaInfo, ProviderError> {
        const API: &str = "media info";
        let url = endpoint(&self.graph_url, [media_id]);
        let request = self.api.get(url).bearer_auth(self.access_token.expose());
        let response = self.api.send(API, request).await?;
        if response.status != 200 {
            return Err(self.api_error(API, &response));
        }
        let body = response.json(API)?;
        let unreachable = |detail: &str| ProviderError::Unreachable {
            api: API,
            detail: detail.to_owned(),
        };
        let url = body
            .get("url")
            .and_then(Value::as_str)
            .and_then(|u| url::Url::parse(u).ok())
            .ok_or_else(|| unreachable("answer has no usable `url`"))?;
        let sha256 = match body.get("sha256") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| Sha256Digest::parse(s).ok())
                    .ok_or_else(|| unreachable("answer's `sha256` is not hex or base64"))?,
            ),
        };
        Ok(MediaInfo {
            url,
            mime_type: non_empty(&body, "mime_type").map(str::to_owned),
            sha256,
        })
    }

    /// A Graph error answer, classified, with the token never in the text.
    pub(crate) fn api_error(&self, api: &'static str, response: &ApiResponse) -> ProviderError {
        let error = response
            .json(api)
            .ok()
            .and_then(|b| b.get("error").cloned());
        let code = error
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64);
        let message = error
            .as_ref()
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(|m| match code {
                Some(code) => format!("{m} (code {code})"),
                None => m.to_owned(),
            })
            .unwrap_or_else(|| response.detail());
        let message = message.replace(self.access_token.expose(), "[redacted]");
        let class = classify(response.status, code, response.retry_after);
        let detail = if token_refused(response.status, code) {
            format!(
                "{message}; the access token was refused: fix the account's access_token (retried after {} minutes at the earliest)",
                CREDENTIALS_RETRY.as_secs() / 60
            )
        } else {
            message
        };
        ProviderError::Api {
            api,
            status: response.status,
            detail,
            class,
        }
    }

    fn message_job(
        &self,
        at: &str,
        m: &Value,
        phone_number_id: Option<&str>,
    ) -> Result<Option<Announced>, ProviderError> {
        let Some(msg) = meta::media_message(at, m, &MEDIA_TYPES)? else {
            return Ok(None);
        };
        // A one-to-one chat is named after the other party.
        let chat_id = msg.sender.clone();
        let facts = Facts {
            direction: Some(Direction::Incoming),
            media_type: msg.media_kind(),
            chat_id: chat_id.as_deref(),
        };
        let (media_id, message_id, message_at) = (msg.media_id, msg.message_id, msg.message_at);
        let payload = Payload {
            media_type: msg.kind.to_owned(),
            mime_type: msg.mime_type,
            sha256: msg.sha256,
            caption: msg.caption,
            file_name: msg.file_name,
            sender: msg.sender,
            phone_number_id: phone_number_id.map(str::to_owned),
        };
        self.account
            .job(message_id, Some(media_id), message_at, facts, &payload)
            .map(Some)
    }
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` against HMAC-SHA256 of `body`
/// under `secret`, in constant time. The error says what is wrong, never
/// what the signature should have been.
pub(crate) fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), ProviderError> {
    let header = header
        .ok_or_else(|| ProviderError::Unauthorized("missing X-Hub-Signature-256 header".into()))?;
    let signature = header
        .strip_prefix(b"sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| {
            ProviderError::Unauthorized("X-Hub-Signature-256 is not `sha256=<hex>`".into())
        })?;
    if hmac_matches::<Hmac<Sha256>>(secret, body, &signature) {
        Ok(())
    } else {
        Err(ProviderError::Unauthorized(
            "X-Hub-Signature-256 does not match the body (is app_secret the app's secret?)".into(),
        ))
    }
}

/// The retry class of a Graph API error: its HTTP status, `error.code` and
/// `Retry-After`.
pub(crate) fn classify(
    status: u16,
    code: Option<i64>,
    retry_after: Option<Duration>,
) -> ErrorClass {
    let later = || retry_after.map_or(ErrorClass::Transient, ErrorClass::RetryAfter);
    if code.is_some_and(|c| THROTTLING_CODES.contains(&c)) {
        return later();
    }
    if token_refused(status, code) {
        return ErrorClass::RetryAfter(CREDENTIALS_RETRY);
    }
    match status {
        408 | 429 | 500..=599 => later(),
        // 400: invalid or expired media id (the docs advise not retrying);
        // 404: no such media. Other 4xx: a request we cannot fix by waiting.
        _ => ErrorClass::Permanent,
    }
}

/// Whether a Graph error says the access token is invalid, expired or
/// lacks permission (an operator's fix), rather than anything about the media.
fn token_refused(status: u16, code: Option<i64>) -> bool {
    let throttled = code.is_some_and(|c| THROTTLING_CODES.contains(&c));
    !throttled && (status == 401 || status == 403 || code.is_some_and(|c| TOKEN_CODES.contains(&c)))
}

/// The sha256 to check the bytes against: the webhook's and the media
/// info's, which must agree when both are given.
fn expected_sha256(
    webhook: Option<Sha256Digest>,
    info: Option<Sha256Digest>,
    attempt: u32,
) -> Result<Option<Sha256Digest>, ProviderError> {
    match (webhook, info) {
        (Some(w), Some(i)) if w != i => Err(ProviderError::Api {
            api: "media info",
            status: 200,
            detail: format!("sha256 mismatch: the webhook says {w}, the media info says {i}"),
            class: if attempt < HASH_DISAGREEMENT_PATIENCE {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            },
        }),
        (w, i) => Ok(w.or(i)),
    }
}

/// `hub.challenge` when `query` is a valid subscription check for `token`.
pub(crate) fn subscription_challenge(
    query: Option<&str>,
    token: &Secret,
) -> Result<String, ProviderError> {
    let (mut mode, mut presented, mut challenge) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v.into_owned()),
            "hub.verify_token" => presented = Some(v.into_owned()),
            "hub.challenge" => challenge = Some(v.into_owned()),
            _ => {}
        }
    }
    if mode.as_deref() != Some("subscribe") {
        return Err(ProviderError::Unauthorized(
            "not a subscription check: hub.mode must be `subscribe`".into(),
        ));
    }
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.expose().as_bytes()) => {}
        _ => {
            return Err(ProviderError::Unauthorized(
                "hub.verify_token does not match the account's verify_token".into(),
            ));
        }
    }
    match challenge {
        Some(c)
            if !c.is_empty()
                && c.len() <= MAX_CHALLENGE
                && c.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(c)
        }
        _ => Err(ProviderError::Unauthorized(format!(
            "hub.challenge missing or not 1 to {MAX_CHALLENGE} printable characters"
        ))),
    }
}

/// A list at `key` of `v`: absent or null is `None`, not a list is 400.
fn list<'a>(v: &'a Value, key: &str, at: &str) -> Result<Option<&'a Vec<Value>>, ProviderError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(l) => l
            .as_array()
            .map(Some)
            .ok_or_else(|| ProviderError::missing(&format!("{at}{key}"))),
    }
}

#[async_trait::async_trait]
impl Provider for CloudApi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Cloudapi
    }

    /// A Meta-shaped reference (`crate::backfill::meta_message`), made into
    /// a job by the webhook parser itself.
    async fn backfill(&self, reference: &Value) -> Result<JobSpec, ProviderError> {
        let message = crate::backfill::meta_message(reference)?;
        let phone_number_id = non_empty(reference, "phone_number_id")
            .map(|id| crate::checked_id(id, "phone_number_id"))
            .transpose()?;
        let job = self.message_job("reference", &message, phone_number_id)?;
        self.account.backfilled(job, "the Cloud API")
    }

    fn account(&self) -> &AccountName {
        self.account.name()
    }

    fn max_file_bytes(&self) -> Option<u64> {
        self.account.max_file_bytes()
    }

    fn webhook_auth_configured(&self) -> bool {
        self.app_secret.is_some()
    }

    /// Refuses a webhook without `X-Hub-Signature-256` before its body is
    /// read; the signature itself needs the body.
    fn authenticate_head(
        &self,
        headers: &http::HeaderMap,
        _query: Option<&str>,
    ) -> Result<(), ProviderError> {
        if self.app_secret.is_some() {
            signature_header(headers, "X-Hub-Signature-256")?;
        }
        Ok(())
    }

    fn authenticate_body(&self, request: &WebhookRequest<'_>) -> Result<(), ProviderError> {
        match &self.app_secret {
            Some(secret) => verify_signature(
                secret.expose().as_bytes(),
                request.body,
                request.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()),
            ),
            None => Ok(()),
        }
    }

    fn verify_subscription(&self, query: Option<&str>) -> Option<Result<String, ProviderError>> {
        Some(subscription_challenge(query, &self.verify_token))
    }

    fn parse_webhook(&self, request: &WebhookRequest<'_>) -> Result<ParsedWebhook, ProviderError> {
        let body = webhook_json(request.body)?;
        match body.get("object").and_then(Value::as_str) {
            None | Some("whatsapp_business_account") => {}
            Some(other) => {
                return Err(ProviderError::BadPayload(format!(
                    "field `object` is {other:?}, expected \"whatsapp_business_account\""
                )));
            }
        }
        let entries = list(&body, "entry", "")?.ok_or_else(|| ProviderError::missing("entry"))?;
        let mut parsed = ParsedWebhook::default();
        for (e, entry) in entries.iter().enumerate() {
            let at = format!("entry[{e}].");
            let changes = list(entry, "changes", &at)?
                .ok_or_else(|| ProviderError::missing(&format!("{at}changes")))?;
            for (c, change) in changes.iter().enumerate() {
                let at = format!("{at}changes[{c}].");
                if change
                    .get("field")
                    .and_then(Value::as_str)
                    .is_some_and(|f| f != "messages")
                {
                    parsed.ignored += 1;
                    continue;
                }
                let value = change
                    .get("value")
                    .filter(|v| v.is_object())
                    .ok_or_else(|| ProviderError::missing(&format!("{at}value")))?;
                let at = format!("{at}value.");
                let phone_number_id = value
                    .pointer("/metadata/phone_number_id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                if let Some(id) = phone_number_id {
                    crate::checked_id(id, &format!("{at}metadata.phone_number_id"))?;
                }
                let messages = list(value, "messages", &at)?;
                let statuses = list(value, "statuses", &at)?;
                for (i, m) in messages.into_iter().flatten().enumerate() {
                    parsed.add(self.message_job(
                        &format!("{at}messages[{i}]"),
                        m,
                        phone_number_id,
                    )?);
                }
                parsed.ignored += statuses.map_or(0, Vec::len);
                if messages.is_none() && statuses.is_none() {
                    // An `errors`-only or otherwise empty change.
                    parsed.ignored += 1;
                }
            }
        }
        Ok(parsed)
    }

    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let p: Payload = job.stored()?;
        let media_id = job.required_media_id()?;
        let webhook_sha256 = meta::stored_sha256(p.sha256.as_deref())?;
        // Always a fresh URL: the one from an earlier attempt (or from
        // before `link_dead`) has likely expired.
        let info = self.media_info(media_id).await?;
        let expected_sha256 = expected_sha256(webhook_sha256, info.sha256, job.attempt)?;
        let request = DownloadRequest::get(info.url).with_header(
            http::header::AUTHORIZATION,
            Secret::new(format!("Bearer {}", self.access_token.expose())),
        );
        Ok(Resolution::Fetch(ResolvedMedia {
            source: MediaSource::download(request, self.hosts.clone()),
            expected_sha256,
            encryption: None,
            details: MediaDetails {
                mime_type: p.mime_type.or(info.mime_type),
                file_name: p.file_name,
                caption: p.caption,
                chat_id: p.sender.clone(),
                sender: p.sender,
                direction: Some(Direction::Incoming),
            },
            size: None,
        }))
    }
}

#[cfg(test)]
mod tests;
