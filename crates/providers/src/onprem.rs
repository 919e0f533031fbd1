//! WhatsApp Business On-Premises API (`provider = "onprem"`), providers.md
//! section 4 and `shared/spec/sources/002_…`.
//!
//! Webhooks: `messages[]` whose `type` is `image`, `document`, `audio`,
//! `video`, `voice` or `sticker` become one job each, keyed by the media id
//! (`messages[].<type>.id`); the manifest is named after `messages[].id`.
//! Store callbacks (`media_items[]`) arriving on the same route wake the job
//! of the media they name. Texts, statuses and other notifications are
//! ignored. The API signs nothing, so webhooks carry the account's
//! `webhook_token` as `Authorization: Bearer …` or `?token=…` (On-Prem's
//! `webhooks.url` setting can only hold a URL), checked from the request
//! head before the body is read; required unless the account sets
//! `allow_unauthenticated_webhooks = true`.
//!
//! Bytes live on the Coreapp. When the webhook carried `file` (auto-download
//! on) they are already there: `GET /v1/media/{id}`. Otherwise the worker
//! asks the asynchronous store (`GET /v1/media/{id}/download`) and parks the
//! job; the store callback wakes it with a note (recorded as the job's last
//! error) that the next attempt reads:
//!
//! | last error / situation                   | next attempt                         |
//! |------------------------------------------|--------------------------------------|
//! | the link died (`GET /v1/media/{id}` 4xx) | re-login, ask the store, park        |
//! | [`STORE_DONE_NOTE`]                      | `GET /v1/media/{id}`                 |
//! | [`STORE_ERROR_NOTE`]…                    | fail: "Media not found" permanent after [`STORE_FAILURE_PATIENCE`], else transient |
//! | auto-downloaded (`file` present)         | `GET /v1/media/{id}`                 |
//! | anything else (first attempt, a park that timed out, an earlier failure) | ask the store, park |
//!
//! API calls use a bearer token from `POST /v1/users/login` (Basic auth),
//! cached until shortly before its `expires_after` and renewed at once when
//! the API answers 401. The sha256 of the webhook (hex in every example;
//! base64 accepted) is what the bytes are checked against.

use std::sync::Arc;
use std::time::{Duration, Instant};

use archiver_core::config_value::{opt_duration, resolve_secret};
use archiver_core::{AccountName, Clock, ErrorClass, JobSpec, ProviderKind, Secret, SecretRef};
use media_fetch::{DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::account::Account;
use crate::api_client::{ApiClient, ApiResponse};
use crate::auth::HeadCredential;
use crate::config::{account_config, http_url};
use crate::meta;
use crate::rules::Facts;
use crate::{
    Announced, Direction, JobRef, MediaDetails, MediaSource, ParsedWebhook, Provider,
    ProviderError, Resolution, ResolvedMedia, Wake, WebhookRequest, endpoint, non_empty,
    webhook_json,
};

const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);
const DEFAULT_STORE_CALLBACK_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The `type`s (and object keys) of inbound media messages.
const MEDIA_TYPES: [&str; 6] = ["image", "document", "audio", "video", "voice", "sticker"];
/// The wake note of a successful store callback; the next attempt fetches.
pub(crate) const STORE_DONE_NOTE: &str = "On-Prem store callback: media downloaded";
/// How the wake note of a failed store callback starts.
pub(crate) const STORE_ERROR_NOTE: &str = "On-Prem store callback error";
/// The store's "Media not found in the datastore." is retried (the store is
/// asked once more) when seen before this attempt, permanent from it on
/// (providers.md: "retry once at most").
pub(crate) const STORE_FAILURE_PATIENCE: u32 = 3;
const MEDIA_NOT_FOUND: &str = "Media not found in the datastore";
/// "Resource not found": the Coreapp does not know the media id.
const CODE_NOT_FOUND: i64 = 1006;
/// A token is renewed this long before its `expires_after`.
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Lifetime assumed when the login answer has no readable `expires_after`.
const TOKEN_FALLBACK_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Wrong username or password is an operator's fix: retried this slowly.
const CREDENTIALS_RETRY: Duration = Duration::from_secs(5 * 60);

account_config! {
    /// `[[accounts]]` keys for `provider = "onprem"`. `retention` defaults
    /// to 14d (WhatsApp's server-side retention), `allowed_download_hosts`
    /// to the host of `api_url`, which serves `GET /v1/media/{id}` itself.
    pub struct OnPremConfig {
        /// The WhatsApp Business API client (Webapp) base URL, e.g.
        /// `https://whatsapp.example.com:9090`; `/v1/...` is appended.
        api_url: String,
        /// The API user that logs in (`POST /v1/users/login`, Basic auth).
        username: String,
        /// That user's password (after the first-login password change).
        password: SecretRef,
        /// Webhooks must carry `Authorization: Bearer <token>` or `?token=<token>`
        /// (put the latter into On-Prem's `webhooks.url`). Required unless
        /// `allow_unauthenticated_webhooks = true`.
        #[serde(default)]
        webhook_token: Option<SecretRef>,
        /// How long a job waits for the store callback before the store is asked
        /// again (default 10m).
        #[serde(default, deserialize_with = "opt_duration")]
        store_callback_timeout: Option<Duration>,
    }
}

#[derive(Debug)]
pub(crate) struct OnPrem {
    account: Account,
    hosts: HostPolicy,
    api_url: url::Url,
    username: String,
    password: Secret,
    webhook: HeadCredential,
    store_callback_timeout: Duration,
    api: ApiClient,
    /// The bearer token shared by every job of the account. Held across a
    /// login so that concurrent jobs wait for one login instead of each
    /// starting its own.
    token: tokio::sync::Mutex<Option<Token>>,
}

#[derive(Debug)]
struct Token {
    value: Secret,
    renew_at: Instant,
}

/// What an On-Prem job stores.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    media_type: String,
    mime_type: Option<String>,
    /// The webhook's sha256, decoded and written as hex.
    sha256: Option<String>,
    caption: Option<String>,
    file_name: Option<String>,
    chat_id: Option<String>,
    sender: Option<String>,
    /// The webhook carried `file`: the Coreapp already has the bytes.
    auto_downloaded: bool,
}

impl OnPrem {
    pub(crate) fn new(config: &OnPremConfig, api: ApiClient) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let api_url = http_url("api_url", &config.api_url, &mut errors);
        if config.username.is_empty() {
            errors.push("username: must not be empty".to_owned());
        }
        let password = resolve_secret("password", Some(&config.password), &mut errors);
        let webhook_token = config.account().webhook_credential(
            "webhook_token",
            config.webhook_token.as_ref(),
            &mut errors,
        );
        // Default: the host of `api_url`, which serves the media itself
        // (and is reached on a private address too: `with_gateway_api`).
        let hosts = config
            .account()
            .download_hosts(api_url.as_ref().and_then(url::Url::host_str), &mut errors);
        if config.store_callback_timeout == Some(Duration::ZERO) {
            errors.push("store_callback_timeout: must be longer than 0s".to_owned());
        }
        let (Some(api_url), Some(password), true) = (api_url, password, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(Self {
            account: Account::new(ProviderKind::Onprem, config.account(), DEFAULT_RETENTION),
            hosts: HostPolicy::new(hosts).with_gateway_api(&api_url),
            api_url,
            username: config.username.clone(),
            password,
            webhook: webhook_token.map_or(HeadCredential::None, HeadCredential::BearerOrQuery),
            store_callback_timeout: config
                .store_callback_timeout
                .unwrap_or(DEFAULT_STORE_CALLBACK_TIMEOUT),
            api,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The same adapter on another clock.
    pub(crate) fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self {
            account: self.account.with_clock(clock),
            ..self
        }
    }

    /// `{api_url}/v1/{segments...}`, each segment percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> url::Url {
        endpoint(
            &self.api_url,
            std::iter::once("v1").chain(segments.iter().copied()),
        )
    }

    /// A valid bearer token: the cached one, or a fresh login.
    async fn token(&self) -> Result<Secret, ProviderError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        *cached = None;
        let token = self.login().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// Drops the cached token if it is still `rejected` (another job may
    /// have logged in again already), or unconditionally for `None`.
    async fn forget_token(&self, rejected: Option<&Secret>) {
        let mut cached = self.token.lock().await;
        if rejected.is_none() || cached.as_ref().map(|t| &t.value) == rejected {
            *cached = None;
        }
    }

    async fn login(&self) -> Result<Token, ProviderError> {
        const API: &str = "login";
        let request = self
            .api
            .post(self.endpoint(&["users", "login"]))
            .basic_auth(&self.username, Some(self.password.expose()))
            .json(&serde_json::json!({}));
        let response = self.api.send(API, request).await?;
        match response.status {
            200 => {
                let (token, expires_after) =
                    parse_login(&response.json(API)?).ok_or_else(|| {
                        ProviderError::Unreachable {
                            api: API,
                            detail: "answer has no users[0].token".into(),
                        }
                    })?;
                let lifetime = expires_after
                    .and_then(|at| lifetime_until(&at, chrono::Utc::now()))
                    .unwrap_or(TOKEN_FALLBACK_LIFETIME);
                tracing::debug!(account = %self.account.name(), ?lifetime, "logged in to the On-Prem API");
                Ok(Token {
                    value: token,
                    renew_at: Instant::now() + lifetime.saturating_sub(TOKEN_RENEW_MARGIN),
                })
            }
            401 | 403 => Err(ProviderError::Api {
                api: API,
                status: response.status,
                detail: format!(
                    "the On-Prem API refused the account's username and password; fix `username`/`password` (retried after {} minutes at the earliest)",
                    CREDENTIALS_RETRY.as_secs() / 60
                ),
                class: ErrorClass::RetryAfter(CREDENTIALS_RETRY),
            }),
            _ => Err(api_error(API, &response, 0)),
        }
    }

    /// A GET with the bearer token; on 401 logs in again and tries once more.
    async fn authorized_get(
        &self,
        api: &'static str,
        url: url::Url,
    ) -> Result<ApiResponse, ProviderError> {
        let token = self.token().await?;
        let send = |token: &Secret| {
            self.api
                .send(api, self.api.get(url.clone()).bearer_auth(token.expose()))
        };
        let response = send(&token).await?;
        if response.status != 401 {
            return Ok(response);
        }
        tracing::info!(account = %self.account.name(), api, "On-Prem API token rejected; logging in again");
        self.forget_token(Some(&token)).await;
        let token = self.token().await?;
        send(&token).await
    }

    /// Asks the asynchronous store for the media and parks the job until
    /// the store callback (or the timeout).
    async fn request_store(
        &self,
        media_id: &str,
        attempt: u32,
    ) -> Result<Resolution, ProviderError> {
        const API: &str = "media store request";
        let response = self
            .authorized_get(API, self.endpoint(&["media", media_id, "download"]))
            .await?;
        let body = response.json(API).ok();
        let codes = body.as_ref().map(error_codes).unwrap_or_default();
        if (200..300).contains(&response.status) && codes.is_empty() {
            return Ok(Resolution::Park {
                timeout: self.store_callback_timeout,
                reason: format!(
                    "asked the On-Prem store for media {media_id}; waiting for its callback (at most {}s)",
                    self.store_callback_timeout.as_secs()
                ),
            });
        }
        Err(api_error(API, &response, attempt))
    }

    /// `GET /v1/media/{id}` with the bearer token, checked against the
    /// webhook's sha256.
    async fn fetch(&self, media_id: &str, p: Payload) -> Result<Resolution, ProviderError> {
        let token = self.token().await?;
        let request = DownloadRequest::get(self.endpoint(&["media", media_id])).with_header(
            http::header::AUTHORIZATION,
            Secret::new(format!("Bearer {}", token.expose())),
        );
        let expected_sha256 = meta::stored_sha256(p.sha256.as_deref())?;
        Ok(Resolution::Fetch(ResolvedMedia {
            source: MediaSource::download(request, self.hosts.clone()),
            expected_sha256,
            encryption: None,
            details: MediaDetails {
                mime_type: p.mime_type,
                file_name: p.file_name,
                caption: p.caption,
                chat_id: p.chat_id,
                sender: p.sender,
                direction: Some(Direction::Incoming),
            },
            size: None,
        }))
    }

    fn message_job(&self, i: usize, m: &Value) -> Result<Option<Announced>, ProviderError> {
        let Some(msg) = meta::media_message(&format!("messages[{i}]"), m, &MEDIA_TYPES)? else {
            return Ok(None);
        };
        let (media_id, message_id, message_at) = (msg.media_id, msg.message_id, msg.message_at);
        if let Some(group_id) = non_empty(m, "group_id") {
            crate::checked_id(group_id, &format!("messages[{i}].group_id"))?;
        }
        let chat_id = non_empty(m, "group_id")
            .map(str::to_owned)
            .or_else(|| msg.sender.clone());
        let facts = Facts {
            direction: Some(Direction::Incoming),
            media_type: msg.media_kind(),
            chat_id: chat_id.as_deref(),
        };
        let payload = Payload {
            media_type: msg.kind.to_owned(),
            mime_type: msg.mime_type,
            sha256: msg.sha256,
            caption: msg.caption,
            file_name: msg.file_name,
            chat_id: chat_id.clone(),
            sender: msg.sender,
            auto_downloaded: non_empty(msg.media, "file").is_some(),
        };
        self.account
            .job(message_id, Some(media_id), message_at, facts, &payload)
            .map(Some)
    }

    /// One `media_items[]` entry of a store callback: the wake it asks for,
    /// or `None` for an item that reports no outcome.
    fn store_callback(&self, i: usize, item: &Value) -> Result<Option<Wake>, ProviderError> {
        let field = |rest: &str| format!("media_items[{i}].{rest}");
        if !item.is_object() {
            return Err(ProviderError::missing(&format!("media_items[{i}]")));
        }
        let kind = match item.get("type").and_then(Value::as_str) {
            Some(kind) => kind,
            None => MEDIA_TYPES
                .into_iter()
                .find(|k| item.get(*k).is_some_and(Value::is_object))
                .ok_or_else(|| ProviderError::missing(&field("type")))?,
        };
        let media = item.get(kind).filter(|v| v.is_object());
        let media_id = media
            .and_then(|m| non_empty(m, "id"))
            .or_else(|| non_empty(item, "id"))
            .ok_or_else(|| ProviderError::missing(&field(&format!("{kind}.id"))))?;
        crate::checked_id(media_id, &field(&format!("{kind}.id")))?;
        let errors = item
            .get("errors")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty());
        let note = match errors {
            Some(errors) => Some(format!("{STORE_ERROR_NOTE}: {}", describe_errors(errors))),
            None => match media.and_then(|m| m.get("status")).and_then(Value::as_str) {
                Some("downloaded") => Some(STORE_DONE_NOTE.to_owned()),
                _ => return Ok(None),
            },
        };
        Ok(Some(Wake {
            job_id: self.account.job_id(media_id),
            note,
        }))
    }
}

/// `users[0].token` and `users[0].expires_after` of a login answer.
fn parse_login(body: &Value) -> Option<(Secret, Option<String>)> {
    let user = body.get("users")?.as_array()?.first()?;
    let token = user.get("token")?.as_str().filter(|t| !t.is_empty())?;
    let expires = user
        .get("expires_after")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((Secret::new(token), expires))
}

/// How long until `expires_after` (`2018-03-01 15:29:26+00:00`, or RFC 3339).
fn lifetime_until(expires_after: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_str(expires_after.trim(), "%Y-%m-%d %H:%M:%S%:z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(expires_after.trim()))
        .ok()?;
    (at.with_timezone(&chrono::Utc) - now).to_std().ok()
}

/// The `errors[].code` values of an On-Prem answer.
fn error_codes(body: &Value) -> Vec<i64> {
    body.get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.get("code").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default()
}

/// `errors[]` as one line: `code 400 (Parameter not valid): Media not found…`.
fn describe_errors(errors: &[Value]) -> String {
    let text = errors
        .iter()
        .map(|e| {
            let code = e.get("code").map(Value::to_string).unwrap_or_default();
            let title = e.get("title").and_then(Value::as_str).unwrap_or("");
            let details = e.get("details").and_then(Value::as_str).unwrap_or("");
            format!("code {code} ({title}): {details}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Classifies an On-Prem API error answer (providers.md section 4 (f)).
pub(crate) fn api_error(api: &'static str, response: &ApiResponse, attempt: u32) -> ProviderError {
    let body = response.json(api).ok();
    let codes = body.as_ref().map(error_codes).unwrap_or_default();
    let detail = match body
        .as_ref()
        .and_then(|b| b.get("errors"))
        .and_then(Value::as_array)
    {
        Some(errors) if !errors.is_empty() => describe_errors(errors),
        _ => response.detail(),
    };
    let class = classify(
        response.status,
        &codes,
        &detail,
        response.retry_after,
        attempt,
    );
    ProviderError::Api {
        api,
        status: response.status,
        detail,
        class,
    }
}

/// The retry class of an On-Prem error: its HTTP status, `errors[].code`
/// values and text, the answer's `Retry-After`, and which attempt saw it.
pub(crate) fn classify(
    status: u16,
    codes: &[i64],
    detail: &str,
    retry_after: Option<Duration>,
    attempt: u32,
) -> ErrorClass {
    if codes.contains(&CODE_NOT_FOUND) {
        // The Coreapp does not know this media id: asking again cannot help.
        return ErrorClass::Permanent;
    }
    if detail.contains(MEDIA_NOT_FOUND) {
        return if attempt < STORE_FAILURE_PATIENCE {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
    }
    match status {
        // Reached only after a fresh login was refused too.
        401 | 403 => ErrorClass::RetryAfter(CREDENTIALS_RETRY),
        // 429, 5xx and the other codes (1014 internal error, 1015 too many
        // requests, ...) are undocumented beyond their names: the file is
        // worth another try within its 14 days.
        _ => retry_after.map_or(ErrorClass::Transient, ErrorClass::RetryAfter),
    }
}

/// The failure a store-callback error note stands for.
fn store_failed(note: &str, attempt: u32) -> ProviderError {
    let detail = note
        .strip_prefix(STORE_ERROR_NOTE)
        .map(|d| d.trim_start_matches(':').trim())
        .unwrap_or(note)
        .to_owned();
    let class = classify(400, &[], &detail, None, attempt);
    let detail = match class {
        ErrorClass::Permanent => format!("{detail} (the store failed again; giving up)"),
        _ => format!("{detail} (the store will be asked again)"),
    };
    ProviderError::Api {
        api: "media store callback",
        status: 400,
        detail,
        class,
    }
}

#[async_trait::async_trait]
impl Provider for OnPrem {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Onprem
    }

    /// A Meta-shaped reference (`crate::backfill::meta_message`), made into
    /// a job by the webhook parser itself.
    async fn backfill(&self, reference: &Value) -> Result<JobSpec, ProviderError> {
        let message = crate::backfill::meta_message(reference)?;
        let job = self.message_job(0, &message)?;
        self.account.backfilled(job, "the On-Premises API")
    }

    fn account(&self) -> &AccountName {
        self.account.name()
    }

    fn max_file_bytes(&self) -> Option<u64> {
        self.account.max_file_bytes()
    }

    fn webhook_auth_configured(&self) -> bool {
        self.webhook.is_required()
    }

    fn authenticate_head(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<(), ProviderError> {
        self.webhook.check(headers, query)
    }

    fn parse_webhook(&self, request: &WebhookRequest<'_>) -> Result<ParsedWebhook, ProviderError> {
        let body = webhook_json(request.body)?;
        let list = |key: &str| -> Result<Option<&Vec<Value>>, ProviderError> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_array()
                    .map(Some)
                    .ok_or_else(|| ProviderError::missing(key)),
            }
        };
        let mut parsed = ParsedWebhook::default();
        let messages = list("messages")?;
        let statuses = list("statuses")?;
        let media_items = list("media_items")?;
        for (i, m) in messages.into_iter().flatten().enumerate() {
            parsed.add(self.message_job(i, m)?);
        }
        parsed.ignored += statuses.map_or(0, Vec::len);
        for (i, item) in media_items.into_iter().flatten().enumerate() {
            match self.store_callback(i, item)? {
                Some(wake) => parsed.wakes.push(wake),
                None => parsed.ignored += 1,
            }
        }
        if messages.is_none() && statuses.is_none() && media_items.is_none() {
            if body.get("errors").is_some() {
                // A system error notification: nothing to archive.
                parsed.ignored += 1;
            } else {
                return Err(ProviderError::BadPayload(
                    "expected `messages`, `statuses` or `media_items`".into(),
                ));
            }
        }
        Ok(parsed)
    }

    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let p: Payload = job.stored()?;
        let media_id = job.required_media_id()?;
        if job.link_dead {
            // `GET /v1/media/{id}` refused the token or no longer has the
            // file: log in afresh and have the store fetch it again.
            self.forget_token(None).await;
            return self.request_store(media_id, job.attempt).await;
        }
        match job.last_error {
            Some(note) if note.starts_with(STORE_DONE_NOTE) => self.fetch(media_id, p).await,
            Some(note) if note.starts_with(STORE_ERROR_NOTE) => {
                Err(store_failed(note, job.attempt))
            }
            _ if p.auto_downloaded => self.fetch(media_id, p).await,
            _ => self.request_store(media_id, job.attempt).await,
        }
    }
}

#[cfg(test)]
mod tests;
