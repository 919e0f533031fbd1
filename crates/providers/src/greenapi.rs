//! Green API (`provider = "greenapi"`), providers.md section 1.
//!
//! Webhooks: `incomingMessageReceived`, `outgoingMessageReceived` and
//! `outgoingAPIMessageReceived` with a file `typeMessage` become one job
//! each, keyed by `idMessage`; everything else is ignored. Authentication is
//! `Authorization: Bearer <webhookUrlToken>`, checked from the request head
//! before the body is read; `webhook_token` is required unless the account
//! sets `allow_unauthenticated_webhooks = true`.
//!
//! Bytes: GET `downloadUrl`. When it is missing, or answered 403/404/410 in
//! this attempt, `downloadFile` gives a fresh link; `getMessage` fills in
//! details the webhook lacked. Green API vouches for no hash, so the archive
//! records `computed-only`. The API token sits in URL paths, so URLs of API
//! calls never appear in errors or logs.
//!
//! Backfill: a reference is `{"chatId", "idMessage", "timestamp"?}` (Unix
//! seconds), and may carry the other fields of a `getMessage` or journal
//! item (`typeMessage`, `downloadUrl`, `mimeType`, `fileName`, `caption`,
//! `senderId`); unknown fields are ignored, so journal exports
//! (`lastIncomingMessages`, `getChatHistory`) can be fed as they are, one
//! item per line. Without `timestamp`, `getMessage` supplies it (and the
//! details); with it, no call is made and the worker asks later.

use std::sync::Arc;
use std::time::Duration;

use archiver_core::config_value::opt_duration;
use archiver_core::{
    AccountName, Clock, ErrorClass, JobSpec, ProviderKind, Secret, SecretRef, SystemClock,
    UnixMillis,
};
use media_fetch::{DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api_client::{ApiClient, ApiResponse};
use crate::auth::require_bearer;
use crate::config::{StringOrInt, download_hosts, webhook_credential};
use crate::{
    JobRef, MediaDetails, MediaSource, ParsedWebhook, Provider, ProviderError, Resolution,
    ResolvedMedia, WebhookRequest, checked_id, message_time, new_job,
};

const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);
/// Where `downloadUrl` points (providers.md section 1): Yandex Object
/// Storage (`sw-media*.storage.yandexcloud.net`; only its storage
/// subdomains, not every Yandex Cloud service's) and Green API's own hosts.
const DEFAULT_HOSTS: [&str; 3] = [
    "*.storage.yandexcloud.net",
    "*.green-api.com",
    "*.greenapi.com",
];
const FILE_WEBHOOKS: [&str; 3] = [
    "incomingMessageReceived",
    "outgoingMessageReceived",
    "outgoingAPIMessageReceived",
];
const FILE_MESSAGES: [&str; 5] = [
    "imageMessage",
    "videoMessage",
    "documentMessage",
    "audioMessage",
    "stickerMessage",
];
/// Green API's marker for a file over 100 MB that it did not fetch.
const TOO_LARGE_MARKER: &str = "{{SWE002}}";
/// "Message not found" on getMessage may mean the message is still queued at
/// Green API; retried this many attempts before it counts as permanent.
const NOT_FOUND_PATIENCE: u32 = 4;
/// "Internal error when downloading file" means WhatsApp no longer has the
/// file; retried this many attempts in case it was a passing fault.
const INTERNAL_ERROR_PATIENCE: u32 = 2;

/// `[[accounts]]` keys for `provider = "greenapi"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreenApiConfig {
    /// Account name; the webhook URL is `/webhooks/{name}`.
    pub(crate) name: AccountName,
    /// How long after the message the file can still be fetched (default 14d).
    #[serde(default, deserialize_with = "opt_duration")]
    pub(crate) retention: Option<Duration>,
    /// Hosts download links may point at (default: Green API's storage hosts).
    #[serde(default)]
    pub(crate) allowed_download_hosts: Option<Vec<String>>,
    /// The instance's `apiUrl` (default `https://api.green-api.com`).
    #[serde(default = "default_api_url")]
    pub(crate) api_url: String,
    /// The instance id (`idInstance`), a string or an integer.
    pub(crate) id_instance: StringOrInt,
    /// The instance token (`apiTokenInstance`).
    pub(crate) api_token: SecretRef,
    /// The `webhookUrlToken`; webhooks must carry `Authorization: Bearer
    /// <token>`. Required unless `allow_unauthenticated_webhooks = true`.
    #[serde(default)]
    pub(crate) webhook_token: Option<SecretRef>,
    /// Accept webhooks without credentials when `webhook_token` is absent.
    /// Off by default; `check-config` and the startup log warn when on.
    #[serde(default)]
    pub(crate) allow_unauthenticated_webhooks: bool,
}

fn default_api_url() -> String {
    "https://api.green-api.com".to_owned()
}

#[derive(Debug)]
pub(crate) struct GreenApi {
    account: AccountName,
    retention: Duration,
    hosts: HostPolicy,
    api_url: url::Url,
    id_instance: String,
    api_token: Secret,
    webhook_token: Option<Secret>,
    api: ApiClient,
    /// Dates each webhook's arrival, which bounds its jobs' deadlines.
    clock: Arc<dyn Clock>,
}

/// What a Green API job stores: enough to download again or ask for a fresh link.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    chat_id: String,
    type_message: String,
    download_url: Option<String>,
    mime_type: Option<String>,
    file_name: Option<String>,
    caption: Option<String>,
    sender: Option<String>,
}

impl GreenApi {
    pub(crate) fn new(config: &GreenApiConfig, api: ApiClient) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let api_url = url::Url::parse(&config.api_url)
            .map_err(|e| errors.push(format!("api_url: {e}")))
            .ok();
        let api_token = config
            .api_token
            .resolve()
            .map_err(|e| errors.push(format!("api_token: {e}")))
            .ok();
        let webhook_token = webhook_credential(
            "webhook_token",
            config.webhook_token.as_ref(),
            config.allow_unauthenticated_webhooks,
            &mut errors,
        );
        let hosts = download_hosts(
            config.allowed_download_hosts.as_ref(),
            DEFAULT_HOSTS,
            &mut errors,
        );
        let id_instance = config.id_instance.to_string();
        if id_instance.is_empty() || !id_instance.bytes().all(|b| b.is_ascii_alphanumeric()) {
            errors.push(format!(
                "id_instance {id_instance:?} must be letters and digits"
            ));
        }
        let (Some(api_url), Some(api_token), true) = (api_url, api_token, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(Self {
            account: config.name.clone(),
            retention: config.retention.unwrap_or(DEFAULT_RETENTION),
            hosts: HostPolicy::new(hosts),
            api_url,
            id_instance,
            api_token,
            webhook_token,
            api,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same adapter on another clock.
    pub(crate) fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// `{api_url}/waInstance{id}/{method}/{token}`.
    fn method_url(&self, method: &str) -> Result<url::Url, ProviderError> {
        let mut url = self.api_url.clone();
        url.path_segments_mut()
            .map_err(|_| ProviderError::BadJob("api_url cannot be a base URL".into()))?
            .pop_if_empty()
            .push(&format!("waInstance{}", self.id_instance))
            .push(method)
            .push(self.api_token.expose());
        Ok(url)
    }

    async fn call(
        &self,
        method: &'static str,
        chat_id: &str,
        id_message: &str,
        attempt: u32,
    ) -> Result<Value, ProviderError> {
        let request = self
            .api
            .post(self.method_url(method)?)
            .json(&json!({ "chatId": chat_id, "idMessage": id_message }));
        let response = self.api.send(method, request).await?;
        if response.status == 200 {
            response.json(method)
        } else {
            Err(api_error(method, &response, attempt))
        }
    }
}

impl GreenApi {
    /// The job for message `id_message` sent at `message_at`: keyed by
    /// message id, due within the account's retention.
    fn job(
        &self,
        id_message: &str,
        message_at: UnixMillis,
        payload: Payload,
    ) -> Result<JobSpec, ProviderError> {
        new_job(
            &self.account,
            ProviderKind::Greenapi,
            id_message,
            None,
            message_at,
            self.clock.now_ms(),
            self.retention,
            &payload,
        )
    }
}

/// Classifies a Green API error answer (providers.md section 1 (f)).
pub(crate) fn api_error(api: &'static str, response: &ApiResponse, attempt: u32) -> ProviderError {
    let detail = response.detail();
    let class = classify(response.status, &detail, response.retry_after, attempt);
    ProviderError::Api {
        api,
        status: response.status,
        detail,
        class,
    }
}

fn classify(status: u16, detail: &str, retry_after: Option<Duration>, attempt: u32) -> ErrorClass {
    let retry_if = |patience: u32| {
        if attempt < patience {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        }
    };
    match status {
        429 => retry_after.map_or(ErrorClass::Transient, ErrorClass::RetryAfter),
        400 if detail.contains("instance in starting process") => ErrorClass::Transient,
        400 if detail.contains("Message not found by id")
            || detail.contains("chatId not found") =>
        {
            retry_if(NOT_FOUND_PATIENCE)
        }
        500 if detail.contains("Internal error when downloading file") => {
            retry_if(INTERNAL_ERROR_PATIENCE)
        }
        500..=599 => ErrorClass::Transient,
        // 400 validation / no file in the message, 401/403 bad token or
        // instance, 466 quota: retrying cannot help.
        _ => ErrorClass::Permanent,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn opt_string(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[async_trait::async_trait]
impl Provider for GreenApi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Greenapi
    }

    fn account(&self) -> &AccountName {
        &self.account
    }

    fn webhook_auth_configured(&self) -> bool {
        self.webhook_token.is_some()
    }

    fn authenticate_head(
        &self,
        headers: &http::HeaderMap,
        _query: Option<&str>,
    ) -> Result<(), ProviderError> {
        match &self.webhook_token {
            Some(token) => require_bearer(headers, token),
            None => Ok(()),
        }
    }

    fn parse_webhook(&self, request: &WebhookRequest<'_>) -> Result<ParsedWebhook, ProviderError> {
        let body: Value = serde_json::from_slice(request.body)
            .map_err(|e| ProviderError::BadPayload(format!("malformed JSON: {e}")))?;
        if !body.is_object() {
            return Err(ProviderError::BadPayload("expected a JSON object".into()));
        }
        let type_webhook =
            str_at(&body, &["typeWebhook"]).ok_or_else(|| ProviderError::missing("typeWebhook"))?;
        if !FILE_WEBHOOKS.contains(&type_webhook) {
            return Ok(ParsedWebhook {
                ignored: 1,
                ..ParsedWebhook::default()
            });
        }
        let type_message = str_at(&body, &["messageData", "typeMessage"])
            .ok_or_else(|| ProviderError::missing("messageData.typeMessage"))?;
        if !FILE_MESSAGES.contains(&type_message) {
            return Ok(ParsedWebhook {
                ignored: 1,
                ..ParsedWebhook::default()
            });
        }
        if let Some(id) = body.pointer("/instanceData/idInstance") {
            let id = match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if id != self.id_instance {
                return Err(ProviderError::BadPayload(format!(
                    "instanceData.idInstance {id} is not this account's id_instance"
                )));
            }
        }
        let id_message = str_at(&body, &["idMessage"])
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ProviderError::missing("idMessage"))?;
        checked_id(id_message, "idMessage")?;
        let message_at = message_time(body.get("timestamp"), "timestamp")?;
        let sender = body
            .get("senderData")
            .ok_or_else(|| ProviderError::missing("senderData"))?;
        let chat_id = opt_string(sender, "chatId")
            .ok_or_else(|| ProviderError::missing("senderData.chatId"))?;
        checked_id(&chat_id, "senderData.chatId")?;
        let file = body
            .pointer("/messageData/fileMessageData")
            .filter(|f| f.is_object())
            .ok_or_else(|| ProviderError::missing("messageData.fileMessageData"))?;
        let payload = Payload {
            chat_id,
            type_message: type_message.to_owned(),
            download_url: opt_string(file, "downloadUrl"),
            mime_type: opt_string(file, "mimeType"),
            file_name: opt_string(file, "fileName"),
            caption: opt_string(file, "caption"),
            sender: opt_string(sender, "sender"),
        };
        let job = self.job(id_message, message_at, payload)?;
        Ok(ParsedWebhook {
            jobs: vec![job],
            ..ParsedWebhook::default()
        })
    }

    async fn backfill(&self, reference: &Value) -> Result<JobSpec, ProviderError> {
        if !reference.is_object() {
            return Err(ProviderError::BadPayload("expected a JSON object".into()));
        }
        let chat_id =
            opt_string(reference, "chatId").ok_or_else(|| ProviderError::missing("chatId"))?;
        checked_id(&chat_id, "chatId")?;
        let id_message = opt_string(reference, "idMessage")
            .ok_or_else(|| ProviderError::missing("idMessage"))?;
        checked_id(&id_message, "idMessage")?;
        let mut type_message = opt_string(reference, "typeMessage");
        let mut payload = Payload {
            chat_id,
            type_message: String::new(),
            download_url: opt_string(reference, "downloadUrl"),
            mime_type: opt_string(reference, "mimeType"),
            file_name: opt_string(reference, "fileName"),
            caption: opt_string(reference, "caption"),
            sender: opt_string(reference, "senderId"),
        };
        let timestamp = match reference.get("timestamp") {
            Some(t) => Some(message_time(Some(t), "timestamp")?),
            None => None,
        };
        let message_at = match timestamp {
            Some(t) => t,
            None => {
                // The message's date names its manifest and bounds its
                // deadline: ask for it. `u32::MAX`: no patience for a
                // message that is not found, the operator sees it now.
                let message = self
                    .call("getMessage", &payload.chat_id, &id_message, u32::MAX)
                    .await?;
                type_message = type_message.or_else(|| opt_string(&message, "typeMessage"));
                payload.mime_type = payload
                    .mime_type
                    .or_else(|| opt_string(&message, "mimeType"));
                payload.file_name = payload
                    .file_name
                    .or_else(|| opt_string(&message, "fileName"));
                payload.caption = payload.caption.or_else(|| opt_string(&message, "caption"));
                payload.download_url = payload
                    .download_url
                    .or_else(|| opt_string(&message, "downloadUrl"));
                payload.sender = payload.sender.or_else(|| opt_string(&message, "senderId"));
                message_time(message.get("timestamp"), "timestamp").map_err(|e| {
                    ProviderError::Unreachable {
                        api: "getMessage",
                        detail: format!("answer's timestamp is unusable: {e}"),
                    }
                })?
            }
        };
        if let Some(t) = &type_message {
            if !FILE_MESSAGES.contains(&t.as_str()) {
                return Err(ProviderError::BadPayload(format!(
                    "typeMessage {t:?} carries no file"
                )));
            }
            payload.type_message = t.clone();
        }
        let job = self.job(&id_message, message_at, payload)?;
        crate::backfill::within_retention(job, self.retention, self.clock.now_ms(), "Green API")
    }

    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let mut p: Payload = serde_json::from_value(job.payload.clone())
            .map_err(|e| ProviderError::BadJob(e.to_string()))?;
        if p.download_url.as_deref() == Some(TOO_LARGE_MARKER) {
            return Err(ProviderError::MediaUnavailable(
                "Green API did not fetch this file: it is over 100 MB ({{SWE002}}); only the phone has it".into(),
            ));
        }
        if p.mime_type.is_none() {
            let message = self
                .call("getMessage", &p.chat_id, job.message_id, job.attempt)
                .await?;
            p.mime_type = p.mime_type.or_else(|| opt_string(&message, "mimeType"));
            p.file_name = p.file_name.or_else(|| opt_string(&message, "fileName"));
            p.caption = p.caption.or_else(|| opt_string(&message, "caption"));
            p.download_url = p
                .download_url
                .or_else(|| opt_string(&message, "downloadUrl"));
        }
        let link = match p.download_url.take() {
            Some(url) if !job.link_dead && url != TOO_LARGE_MARKER => url,
            _ => {
                let fresh = self
                    .call("downloadFile", &p.chat_id, job.message_id, job.attempt)
                    .await?;
                opt_string(&fresh, "downloadUrl").ok_or_else(|| ProviderError::Unreachable {
                    api: "downloadFile",
                    detail: "answer has no downloadUrl".into(),
                })?
            }
        };
        if link == TOO_LARGE_MARKER {
            return Err(ProviderError::MediaUnavailable(
                "Green API did not fetch this file: it is over 100 MB ({{SWE002}}); only the phone has it".into(),
            ));
        }
        let url = url::Url::parse(&link).map_err(|e| {
            ProviderError::MediaUnavailable(format!(
                "Green API gave a download link that is not a URL: {e}"
            ))
        })?;
        Ok(Resolution::Fetch(ResolvedMedia {
            source: MediaSource::download(DownloadRequest::get(url), self.hosts.clone()),
            expected_sha256: None,
            encryption: None,
            details: MediaDetails {
                mime_type: p.mime_type,
                file_name: p.file_name,
                caption: p.caption,
                chat_id: Some(p.chat_id),
                sender: p.sender,
            },
        }))
    }
}

#[cfg(test)]
mod tests;
