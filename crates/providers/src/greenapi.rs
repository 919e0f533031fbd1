//! Green API (`provider = "greenapi"`), providers.md section 1.
//!
//! Webhooks: `incomingMessageReceived`, `outgoingMessageReceived` and
//! `outgoingAPIMessageReceived` with a file `typeMessage` become one job
//! each, keyed by `idMessage` (`incoming...` ones incoming, the others
//! outgoing; the media type from `typeMessage`, where Green API does not
//! tell a voice note from an audio file: both are `audio`); everything else
//! is ignored. Authentication is
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

use archiver_core::config_value::resolve_secret;
use archiver_core::{AccountName, Clock, ErrorClass, JobSpec, ProviderKind, Secret, SecretRef};
use media_fetch::{DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::account::Account;
use crate::api_client::{ApiClient, ApiResponse};
use crate::auth::HeadCredential;
use crate::config::{StringOrInt, account_config, http_url};
use crate::rules::Facts;
use crate::{
    Direction, JobRef, MediaDetails, MediaKind, MediaSource, ParsedWebhook, Provider,
    ProviderError, Resolution, ResolvedMedia, WebhookRequest, checked_id, endpoint, json_object,
    message_time, opt_string, webhook_json,
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
/// The one file webhook for messages the account received; the others are
/// its own (sent from the phone, or through the API).
const INCOMING_WEBHOOK: &str = "incomingMessageReceived";
const FILE_WEBHOOKS: [&str; 3] = [
    INCOMING_WEBHOOK,
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

account_config! {
    /// `[[accounts]]` keys for `provider = "greenapi"`. `retention`
    /// defaults to 14d, `allowed_download_hosts` to Green API's storage
    /// hosts.
    pub struct GreenApiConfig {
        /// The instance's `apiUrl` (default `https://api.green-api.com`).
        #[serde(default = "default_api_url")]
        api_url: String,
        /// The instance id (`idInstance`), a string or an integer.
        id_instance: StringOrInt,
        /// The instance token (`apiTokenInstance`).
        api_token: SecretRef,
        /// The `webhookUrlToken`; webhooks must carry `Authorization: Bearer
        /// <token>`. Required unless `allow_unauthenticated_webhooks = true`.
        #[serde(default)]
        webhook_token: Option<SecretRef>,
    }
}

fn default_api_url() -> String {
    "https://api.green-api.com".to_owned()
}

#[derive(Debug)]
pub(crate) struct GreenApi {
    account: Account,
    hosts: HostPolicy,
    api_url: url::Url,
    id_instance: String,
    api_token: Secret,
    webhook: HeadCredential,
    api: ApiClient,
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
    /// From `typeWebhook`; `None` for backfilled messages (and jobs stored
    /// before it was recorded).
    #[serde(default)]
    direction: Option<Direction>,
}

impl GreenApi {
    pub(crate) fn new(config: &GreenApiConfig, api: ApiClient) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let api_url = http_url("api_url", &config.api_url, &mut errors);
        let api_token = resolve_secret("api_token", Some(&config.api_token), &mut errors);
        let webhook_token = config.account().webhook_credential(
            "webhook_token",
            config.webhook_token.as_ref(),
            &mut errors,
        );
        let hosts = config.account().download_hosts(DEFAULT_HOSTS, &mut errors);
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
            account: Account::new(ProviderKind::Greenapi, config.account(), DEFAULT_RETENTION),
            hosts: HostPolicy::new(hosts),
            api_url,
            id_instance,
            api_token,
            webhook: webhook_token.map_or(HeadCredential::None, HeadCredential::Bearer),
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

    /// `{api_url}/waInstance{id}/{method}/{token}`.
    fn method_url(&self, method: &str) -> url::Url {
        endpoint(
            &self.api_url,
            [
                format!("waInstance{}", self.id_instance).as_str(),
                method,
                self.api_token.expose(),
            ],
        )
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
            .post(self.method_url(method))
            .json(&json!({ "chatId": chat_id, "idMessage": id_message }));
        let response = self.api.send(method, request).await?;
        if response.status == 200 {
            response.json(method)
        } else {
            Err(api_error(method, &response, attempt))
        }
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

#[async_trait::async_trait]
impl Provider for GreenApi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Greenapi
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
        let type_webhook =
            str_at(&body, &["typeWebhook"]).ok_or_else(|| ProviderError::missing("typeWebhook"))?;
        if !FILE_WEBHOOKS.contains(&type_webhook) {
            return Ok(ParsedWebhook::ignored_event());
        }
        let type_message = str_at(&body, &["messageData", "typeMessage"])
            .ok_or_else(|| ProviderError::missing("messageData.typeMessage"))?;
        if !FILE_MESSAGES.contains(&type_message) {
            return Ok(ParsedWebhook::ignored_event());
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
        let direction = if type_webhook == INCOMING_WEBHOOK {
            Direction::Incoming
        } else {
            Direction::Outgoing
        };
        let facts = Facts {
            direction: Some(direction),
            media_type: MediaKind::from_message_type(type_message, false),
            chat_id: Some(&chat_id),
        };
        let payload = Payload {
            chat_id: chat_id.clone(),
            type_message: type_message.to_owned(),
            download_url: opt_string(file, "downloadUrl"),
            mime_type: opt_string(file, "mimeType"),
            file_name: opt_string(file, "fileName"),
            caption: opt_string(file, "caption"),
            sender: opt_string(sender, "sender"),
            direction: Some(direction),
        };
        let job = self
            .account
            .job(id_message, None, message_at, facts, &payload)?;
        Ok(ParsedWebhook::of_message(Some(job)))
    }

    async fn backfill(&self, reference: &Value) -> Result<JobSpec, ProviderError> {
        json_object(reference)?;
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
            direction: None,
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
        let facts = Facts {
            direction: None,
            media_type: type_message
                .as_deref()
                .and_then(|t| MediaKind::from_message_type(t, false)),
            chat_id: Some(&payload.chat_id),
        };
        let job = self
            .account
            .job(&id_message, None, message_at, facts, &payload)?;
        self.account.backfilled(Some(job), "Green API")
    }

    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let mut p: Payload = job.stored()?;
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
                direction: p.direction,
            },
            size: None,
        }))
    }
}

#[cfg(test)]
mod tests;
