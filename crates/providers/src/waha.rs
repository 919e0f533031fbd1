//! WAHA, the self-hosted WhatsApp HTTP API (`provider = "waha"`, any
//! engine: WEBJS, NOWEB, GOWS), providers.md section 7.
//!
//! Webhooks: `message` and `message.any` events (`{id, timestamp, event,
//! session, me, payload, engine, ...}`) whose `payload.hasMedia` is true
//! become one job each, keyed by `payload.id`, so the same message
//! announced by both events, or redelivered by WAHA's retries, is one job.
//! Other events and messages without media are ignored. A webhook for
//! another session is refused. `payload.timestamp` is Unix seconds (the
//! envelope's `timestamp` is milliseconds and is not read). `fromMe`
//! messages are `outgoing`, the others `incoming`.
//!
//! Authentication: `X-Webhook-Hmac`, the lower-case hex HMAC-SHA512 of
//! the raw body under `webhook_hmac_key` (the webhook's `hmac.key` in
//! WAHA). A request without the header is refused from its head; the
//! HMAC is then checked over the exact bytes received, in constant time,
//! before anything is parsed. `X-Webhook-Hmac-Algorithm`, when sent, must
//! say `sha512`.
//!
//! Bytes: a GET of `media.url` as WAHA gave it (`{WAHA_BASE_URL}/api/files/
//! {session}/{file}`, or a presigned S3 URL with WAHA's S3 storage), with
//! `X-Api-Key` for WAHA's own `/api/files/` route. WAHA keeps a local file
//! only `WHATSAPP_FILES_LIFETIME` seconds (180 by default) and empties the
//! folder when it restarts, so when the webhook carried no file (`media`
//! null, `media.url` null, `media.error` set) or the file answers
//! 401/403/404/410, `GET {api_url}/api/{session}/chats/{chatId}/messages/
//! {messageId}?downloadMedia=true` has WAHA download it again from
//! WhatsApp under a new name, and that `media.url` is fetched instead.
//! Each such call is counted in `media_archiver_redownloads_total`.
//!
//! Hash: NOWEB (Baileys) puts the raw message in `_data`, whose
//! `_data.message.<type>Message.fileSha256` is the plaintext's sha256: the
//! bytes are checked against it (`provider-sha256`). WEBJS and GOWS vouch
//! for no hash that a document or a real payload confirms, so their files
//! are `computed-only`.
//!
//! Backfill: a reference is `{"chatId", "messageId"}`; the message endpoint
//! above answers the message (with a fresh `media.url`), which is made into
//! a job by the webhook parser itself.

use std::sync::Arc;
use std::time::Duration;

use archiver_core::config_value::resolve_secret;
use archiver_core::{AccountName, Clock, ErrorClass, JobSpec, ProviderKind, Secret, SecretRef};
use hmac::Hmac;
use media_fetch::{DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha512;

use crate::account::Account;
use crate::api_client::{ApiClient, ApiResponse};
use crate::auth::{constant_time_eq, hmac_matches, signature_header};
use crate::baileys;
use crate::config::{account_config, http_url, path_segment};
use crate::rules::Facts;
use crate::{
    Announced, Direction, JobRef, MediaDetails, MediaKind, MediaSource, ParsedWebhook, Provider,
    ProviderError, Resolution, ResolvedMedia, WebhookRequest, checked_id, endpoint, invalid,
    json_object, message_time, non_empty, opt_string, webhook_json,
};

const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);
const MESSAGE_EVENTS: [&str; 2] = ["message", "message.any"];
const SIGNATURE_HEADER: &str = "X-Webhook-Hmac";
const ALGORITHM_HEADER: &str = "X-Webhook-Hmac-Algorithm";
/// The header WAHA's API and file routes take the API key in.
const API_KEY_HEADER: &str = "x-api-key";
/// WAHA's route for its local files: the API key is sent there only, never
/// to an S3 host a presigned `media.url` points at.
const FILES_ROUTE: &str = "/api/files/";
/// Names the message endpoint in errors.
const MESSAGE_API: &str = "WAHA message download";
/// "Message not found" right after a restart may be a store still
/// loading: retried this many attempts before it counts as permanent.
const NOT_FOUND_PATIENCE: u32 = 3;
/// WAHA answered the message without a file (its download from WhatsApp
/// failed): retried this many attempts before giving up.
const DOWNLOAD_PATIENCE: u32 = 3;
/// The longest `media.error` kept for the log.
const MAX_ERROR_CHARS: usize = 200;

account_config! {
    /// `[[accounts]]` keys for `provider = "waha"`. `retention` defaults to
    /// 14d (WhatsApp serves the media about two weeks, and the message
    /// endpoint fetches it again within that time); `allowed_download_hosts`
    /// to none besides the host of `api_url`, which is always allowed, on a
    /// private address too ([`HostPolicy::with_gateway_api`]); list the S3
    /// host when WAHA stores media in S3.
    pub struct WahaConfig {
        /// WAHA's base URL, e.g. `http://localhost:3000` (its API and, with
        /// `WAHA_BASE_URL` set to the same, its files).
        api_url: String,
        /// The session name (default `default`).
        #[serde(default = "default_session")]
        session: String,
        /// The API key, sent as `X-Api-Key` (a media-only key from `POST
        /// /api/keys/media` is enough).
        api_key: SecretRef,
        /// The webhook's `hmac.key`: webhooks must carry `X-Webhook-Hmac`.
        /// Required unless `allow_unauthenticated_webhooks = true`.
        #[serde(default)]
        webhook_hmac_key: Option<SecretRef>,
    }
}

fn default_session() -> String {
    "default".to_owned()
}

#[derive(Debug)]
pub(crate) struct Waha {
    account: Account,
    hosts: HostPolicy,
    api_url: url::Url,
    session: String,
    api_key: Secret,
    /// `None` only with `allow_unauthenticated_webhooks = true`.
    hmac_key: Option<Secret>,
    api: ApiClient,
}

/// What a WAHA job stores.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    chat_id: String,
    /// `media.url` as WAHA gave it; `None` when the webhook carried no file.
    media_url: Option<String>,
    /// Why WAHA gave no file (`media.error`, or `media` null), for the log.
    media_missing: Option<String>,
    mime_type: Option<String>,
    file_name: Option<String>,
    caption: Option<String>,
    sender: Option<String>,
    /// NOWEB's `fileSha256`, decoded and written as hex.
    sha256: Option<String>,
    direction: Direction,
}

impl Waha {
    pub(crate) fn new(config: &WahaConfig, api: ApiClient) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let api_url = http_url("api_url", &config.api_url, &mut errors);
        let api_key = resolve_secret("api_key", Some(&config.api_key), &mut errors);
        let hmac_key = config.account().webhook_credential(
            "webhook_hmac_key",
            config.webhook_hmac_key.as_ref(),
            &mut errors,
        );
        path_segment("session", &config.session, &mut errors);
        let hosts = config.account().download_hosts([], &mut errors);
        let (Some(api_url), Some(api_key), true) = (api_url, api_key, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(Self {
            account: Account::new(ProviderKind::Waha, config.account(), DEFAULT_RETENTION),
            hosts: HostPolicy::new(hosts).with_gateway_api(&api_url),
            api_url,
            session: config.session.clone(),
            api_key,
            hmac_key,
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

    /// The job of one `WAMessage` (a webhook's `payload`, or the message
    /// endpoint's answer) found at `at`; `None` for a message without
    /// media. `engine` is the envelope's, `me` the session's own id (the
    /// sender of `fromMe` messages), when known.
    fn message_job(
        &self,
        message: &Value,
        at: &str,
        engine: Option<&str>,
        me: Option<&str>,
    ) -> Result<Option<Announced>, ProviderError> {
        let field = |key: &str| format!("{at}.{key}");
        if !message.is_object() {
            return Err(ProviderError::missing(at));
        }
        match message.get("hasMedia") {
            None | Some(Value::Null | Value::Bool(false)) => return Ok(None),
            Some(Value::Bool(true)) => {}
            Some(_) => return Err(invalid(&field("hasMedia"), "not a boolean")),
        }
        let id = non_empty(message, "id").ok_or_else(|| ProviderError::missing(&field("id")))?;
        checked_id(id, &field("id"))?;
        let message_at = message_time(message.get("timestamp"), &field("timestamp"))?;
        let direction = match message.get("fromMe") {
            None | Some(Value::Null | Value::Bool(false)) => Direction::Incoming,
            Some(Value::Bool(true)) => Direction::Outgoing,
            Some(_) => return Err(invalid(&field("fromMe"), "not a boolean")),
        };
        // The chat is the other party: `to` of an own message, else `from`
        // (a group's id in a group, where `participant` is the sender).
        let chat_key = match direction {
            Direction::Outgoing => "to",
            Direction::Incoming => "from",
        };
        let chat_id =
            non_empty(message, chat_key).ok_or_else(|| ProviderError::missing(&field(chat_key)))?;
        checked_id(chat_id, &field(chat_key))?;
        let sender = match direction {
            Direction::Outgoing => me.map(str::to_owned),
            Direction::Incoming => {
                opt_string(message, "participant").or_else(|| Some(chat_id.to_owned()))
            }
        };
        let mut media = WebhookMedia::parse(message.get("media"), &field("media"))?;
        // NOWEB's raw Baileys message: the hash, and what `media` lacked.
        let stub = engine
            .is_none_or(|e| e.eq_ignore_ascii_case("NOWEB"))
            .then(|| message.pointer("/_data/message").filter(|m| m.is_object()))
            .flatten()
            .and_then(|m| baileys::find_media(m, None));
        let mut sha256 = None;
        // The media type: NOWEB's message type (`ptt` marks a voice note),
        // WEBJS's `_data.type` (`ptt` too), else the mime type.
        let mut media_type = message
            .pointer("/_data/type")
            .and_then(Value::as_str)
            .and_then(|t| MediaKind::from_message_type(t, false));
        if let Some((name, content)) = stub {
            let ptt = content.get("ptt").and_then(Value::as_bool) == Some(true);
            media_type = media_type.or_else(|| MediaKind::from_message_type(name, ptt));
            media.mime_type = media.mime_type.or_else(|| opt_string(content, "mimetype"));
            media.file_name = media.file_name.or_else(|| opt_string(content, "fileName"));
            if let Some(v) = content.get("fileSha256").filter(|v| !v.is_null()) {
                let digest = archiver_core::Sha256Digest::from_json(v)
                    .map_err(|e| invalid(&field(&format!("_data.message.{name}.fileSha256")), e))?;
                sha256 = Some(digest.to_hex());
            }
        }
        let media_type =
            media_type.or_else(|| media.mime_type.as_deref().map(MediaKind::from_mime_type));
        let facts = Facts {
            direction: Some(direction),
            media_type,
            chat_id: Some(chat_id),
        };
        let payload = Payload {
            chat_id: chat_id.to_owned(),
            media_url: media.url,
            media_missing: media.missing,
            mime_type: media.mime_type,
            file_name: media.file_name,
            caption: opt_string(message, "body"),
            sender,
            sha256,
            direction,
        };
        self.account
            .job(id, None, message_at, facts, &payload)
            .map(Some)
    }

    /// `GET {api_url}/api/{session}/chats/{chatId}/messages/{messageId}
    /// ?downloadMedia=true`: the message, with the file downloaded again.
    async fn message(
        &self,
        chat_id: &str,
        message_id: &str,
        attempt: u32,
    ) -> Result<Value, ProviderError> {
        let mut url = endpoint(
            &self.api_url,
            [
                "api",
                self.session.as_str(),
                "chats",
                chat_id,
                "messages",
                message_id,
            ],
        );
        url.query_pairs_mut().append_pair("downloadMedia", "true");
        let request = self
            .api
            .get(url)
            .header(API_KEY_HEADER, self.api_key.expose());
        let response = self.api.send(MESSAGE_API, request).await?;
        if response.status == 200 {
            response.json(MESSAGE_API)
        } else {
            Err(api_error(&response, attempt))
        }
    }

    /// A fresh `media` (its `url` checked present) for the message, from
    /// the message endpoint, counted as a re-download for `reason`.
    async fn fresh_media(
        &self,
        job: &JobRef<'_>,
        chat_id: &str,
        reason: &'static str,
        why: &str,
    ) -> Result<Value, ProviderError> {
        self.account.count_redownload(reason);
        tracing::info!(
            message_id = job.message_id,
            reason,
            why,
            "asking WAHA to download the file again"
        );
        let message = self.message(chat_id, job.message_id, job.attempt).await?;
        media_of(&message, job.attempt)
    }

    /// The download of `url`, with the API key when it is WAHA's own file
    /// route on `api_url`'s host (never to another allowed host, whatever
    /// its path).
    fn download(&self, url: url::Url) -> MediaSource {
        let to_waha =
            url.path().starts_with(FILES_ROUTE) && url.host_str() == self.api_url.host_str();
        let mut request = DownloadRequest::get(url);
        if to_waha {
            request = request.with_header(
                http::HeaderName::from_static(API_KEY_HEADER),
                self.api_key.clone(),
            );
        }
        MediaSource::download(request, self.hosts.clone())
    }
}

/// A webhook's `payload.media`, read.
struct WebhookMedia {
    /// `media.url`, an http(s) URL, when WAHA downloaded the file.
    url: Option<String>,
    /// Why there is no `url`, for the log.
    missing: Option<String>,
    mime_type: Option<String>,
    file_name: Option<String>,
}

impl WebhookMedia {
    /// `media` (at `at`, for errors): null or absent when WAHA skipped the
    /// download, an object otherwise.
    fn parse(media: Option<&Value>, at: &str) -> Result<Self, ProviderError> {
        let media = match media {
            None | Some(Value::Null) => {
                return Ok(Self {
                    url: None,
                    missing: Some("media is null".to_owned()),
                    mime_type: None,
                    file_name: None,
                });
            }
            Some(media @ Value::Object(_)) => media,
            Some(_) => return Err(invalid(at, "not an object")),
        };
        let url = opt_string(media, "url");
        if let Some(url) = &url
            && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err(invalid(&format!("{at}.url"), "not an http(s) URL"));
        }
        let missing = match (&url, media.get("error")) {
            (Some(_), _) => None,
            (None, None | Some(Value::Null)) => Some("media.url is null".to_owned()),
            (None, Some(error)) => Some(describe_error(error)),
        };
        Ok(Self {
            url,
            missing,
            mime_type: opt_string(media, "mimetype"),
            file_name: opt_string(media, "filename"),
        })
    }
}

/// `media.error` as a short sentence (WAHA sends an object or a string).
fn describe_error(error: &Value) -> String {
    let text = match error {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text: String = text.chars().take(MAX_ERROR_CHARS).collect();
    format!("WAHA could not download the file: {text}")
}

/// The `media` of the message endpoint's answer, whose `url` is set, or
/// why there is none.
fn media_of(message: &Value, attempt: u32) -> Result<Value, ProviderError> {
    if message.get("hasMedia").and_then(Value::as_bool) == Some(false) {
        return Err(ProviderError::MediaUnavailable(
            "WAHA says the message has no media (hasMedia is false): it was deleted, or never had a file".into(),
        ));
    }
    let media = message.get("media").filter(|m| m.is_object());
    if let Some(media) = media.filter(|m| non_empty(m, "url").is_some()) {
        return Ok(media.clone());
    }
    let why = match media.and_then(|m| m.get("error")).filter(|e| !e.is_null()) {
        Some(error) => describe_error(error),
        None => "WAHA answered the message without a file (media or media.url is null)".to_owned(),
    };
    Err(ProviderError::Api {
        api: MESSAGE_API,
        status: 200,
        detail: why,
        class: retry_until(attempt, DOWNLOAD_PATIENCE),
    })
}

/// Transient before attempt `patience`, permanent from then on.
fn retry_until(attempt: u32, patience: u32) -> ErrorClass {
    if attempt < patience {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// Classifies an error answer of WAHA's API (providers.md section 7).
pub(crate) fn api_error(response: &ApiResponse, attempt: u32) -> ProviderError {
    let class = match response.status {
        // Session not WORKING (starting after a restart, waiting for a QR
        // scan): it comes back.
        422 | 408 | 500..=599 => ErrorClass::Transient,
        429 => response
            .retry_after
            .map_or(ErrorClass::Transient, ErrorClass::RetryAfter),
        404 => retry_until(attempt, NOT_FOUND_PATIENCE),
        // 401/403: a wrong X-Api-Key (the config must change); 400: a
        // request WAHA cannot serve.
        _ => ErrorClass::Permanent,
    };
    let mut detail = response.detail();
    if matches!(response.status, 401 | 403) {
        detail = format!("{detail} (is api_key a key of this WAHA?)");
    }
    ProviderError::Api {
        api: MESSAGE_API,
        status: response.status,
        detail,
        class,
    }
}

/// Checks `X-Webhook-Hmac` (lower-case hex HMAC-SHA512 of `body` under
/// `key`) in constant time; the error says what is wrong, never what the
/// signature should have been.
pub(crate) fn verify_signature(
    key: &[u8],
    body: &[u8],
    headers: &http::HeaderMap,
) -> Result<(), ProviderError> {
    if let Some(algorithm) = headers.get(ALGORITHM_HEADER)
        && !algorithm.as_bytes().eq_ignore_ascii_case(b"sha512")
    {
        return Err(ProviderError::Unauthorized(format!(
            "{ALGORITHM_HEADER} must be sha512"
        )));
    }
    let signature = hex::decode(signature_header(headers, SIGNATURE_HEADER)?)
        .map_err(|_| ProviderError::Unauthorized(format!("{SIGNATURE_HEADER} is not hex")))?;
    if hmac_matches::<Hmac<Sha512>>(key, body, &signature) {
        Ok(())
    } else {
        Err(ProviderError::Unauthorized(format!(
            "{SIGNATURE_HEADER} does not match the body (is webhook_hmac_key the webhook's hmac.key?)"
        )))
    }
}

#[async_trait::async_trait]
impl Provider for Waha {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Waha
    }

    fn account(&self) -> &AccountName {
        self.account.name()
    }

    fn max_file_bytes(&self) -> Option<u64> {
        self.account.max_file_bytes()
    }

    fn webhook_auth_configured(&self) -> bool {
        self.hmac_key.is_some()
    }

    /// Refuses a webhook without `X-Webhook-Hmac` before its body is read;
    /// the HMAC itself needs the body.
    fn authenticate_head(
        &self,
        headers: &http::HeaderMap,
        _query: Option<&str>,
    ) -> Result<(), ProviderError> {
        if self.hmac_key.is_some() {
            signature_header(headers, SIGNATURE_HEADER)?;
        }
        Ok(())
    }

    fn authenticate_body(&self, request: &WebhookRequest<'_>) -> Result<(), ProviderError> {
        match &self.hmac_key {
            Some(key) => verify_signature(key.expose().as_bytes(), request.body, request.headers),
            None => Ok(()),
        }
    }

    fn parse_webhook(&self, request: &WebhookRequest<'_>) -> Result<ParsedWebhook, ProviderError> {
        let body = webhook_json(request.body)?;
        let event = non_empty(&body, "event").ok_or_else(|| ProviderError::missing("event"))?;
        if !MESSAGE_EVENTS.contains(&event) {
            return Ok(ParsedWebhook::ignored_event());
        }
        if let Some(session) = body.get("session").and_then(Value::as_str)
            && !constant_time_eq(session.as_bytes(), self.session.as_bytes())
        {
            return Err(ProviderError::BadPayload(format!(
                "`session` {session:?} is not this account's session"
            )));
        }
        let engine = non_empty(&body, "engine")
            .or_else(|| body.pointer("/environment/engine").and_then(Value::as_str));
        let me = body.pointer("/me/id").and_then(Value::as_str);
        let payload = body
            .get("payload")
            .ok_or_else(|| ProviderError::missing("payload"))?;
        Ok(ParsedWebhook::of_message(
            self.message_job(payload, "payload", engine, me)?,
        ))
    }

    /// `{"chatId", "messageId"}`: the message endpoint downloads the file
    /// again and answers the message, made into a job by the webhook
    /// parser itself (the same id as its webhook's).
    async fn backfill(&self, reference: &Value) -> Result<JobSpec, ProviderError> {
        json_object(reference)?;
        let chat_id =
            non_empty(reference, "chatId").ok_or_else(|| ProviderError::missing("chatId"))?;
        checked_id(chat_id, "chatId")?;
        let message_id =
            non_empty(reference, "messageId").ok_or_else(|| ProviderError::missing("messageId"))?;
        checked_id(message_id, "messageId")?;
        // `u32::MAX`: no patience, the operator sees the answer now.
        let message = self.message(chat_id, message_id, u32::MAX).await?;
        let job = self.message_job(&message, "answer", None, None)?;
        self.account.backfilled(job, "WAHA")
    }

    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let mut p: Payload = job.stored()?;
        let expected_sha256 = crate::meta::stored_sha256(p.sha256.as_deref())?;
        let fresh = match (&p.media_url, job.link_dead) {
            (Some(_), false) => None,
            (_, true) => {
                let why = "the file answered 401/403/404/410 (expired, or WAHA restarted)";
                Some(self.fresh_media(&job, &p.chat_id, "gone", why).await?)
            }
            (None, false) => {
                let why = p.media_missing.as_deref().unwrap_or("no media.url");
                Some(
                    self.fresh_media(&job, &p.chat_id, "not-downloaded", why)
                        .await?,
                )
            }
        };
        // A webhook without `media` named no type or file name: the fresh
        // answer does.
        let link = match &fresh {
            Some(media) => {
                p.mime_type = p.mime_type.or_else(|| opt_string(media, "mimetype"));
                p.file_name = p.file_name.or_else(|| opt_string(media, "filename"));
                non_empty(media, "url").unwrap_or_default().to_owned()
            }
            None => p.media_url.clone().unwrap_or_default(),
        };
        let url = url::Url::parse(&link).map_err(|e| {
            ProviderError::MediaUnavailable(format!("WAHA gave a media.url that is not a URL: {e}"))
        })?;
        Ok(Resolution::Fetch(ResolvedMedia {
            source: self.download(url),
            expected_sha256,
            encryption: None,
            details: MediaDetails {
                mime_type: p.mime_type,
                file_name: p.file_name,
                caption: p.caption,
                chat_id: Some(p.chat_id),
                sender: p.sender,
                direction: Some(p.direction),
            },
            size: None,
        }))
    }
}

#[cfg(test)]
mod tests;
