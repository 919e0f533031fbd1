//! CodeChat API v2 (`provider = "codechat"`), providers.md sections 2 and 3,
//! and `shared/spec/sources/001_…` (directly-download).
//!
//! Webhooks: `messages.upsert` whose `data.messageType` is a media type
//! (`imageMessage`, `videoMessage`, `audioMessage`, `documentMessage`,
//! `stickerMessage`, `ptvMessage`, `documentWithCaptionMessage`) become one
//! job each, keyed by `data.keyId`; everything else is ignored. The v2
//! webhook body is not public; this follows v1's shape (`{event, instance,
//! data:{keyId, keyRemoteJid, messageType, content, messageTimestamp}}`),
//! which v2's client types repeat. CodeChat signs nothing, so webhooks carry
//! the account's `webhook_token` as `Authorization: Bearer …` or `?token=…`
//! (required unless `allow_unauthenticated_webhooks = true`), checked from
//! the request head before the body is read.
//!
//! Bytes, `mode = "direct"` (default): the encrypted blob from `cdn_url +
//! directPath`, decrypted and verified here (`whatsapp-enc+plain`), so the
//! gateway is not in the download path. When the CDN answers 403/404/410 the
//! blob is gone, and CodeChat (whose session can ask the sender's phone to
//! upload it again) is asked instead. `mode = "provider"`: always
//! `POST {api_url}/api/v2/instance/{instance_id}/media/directly-download`
//! with the JWT, which streams the decrypted file; it is checked against
//! `fileSha256` (`provider-sha256`).

use std::sync::Arc;
use std::time::Duration;

use archiver_core::config_value::opt_duration;
use archiver_core::{AccountName, Clock, JobSpec, ProviderKind, Secret, SecretRef, SystemClock};
use media_fetch::{DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::require_bearer_or_query_token;
use crate::baileys::{self, Mode, Stub, opt_string};
use crate::config::{StringOrInt, webhook_credential};
use crate::{
    JobRef, MediaSource, ParsedWebhook, Provider, ProviderError, Resolution, ResolvedMedia,
    WebhookRequest, checked_id, message_time, new_job,
};

const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);
/// `timeout` of directly-download, in ms: how long CodeChat may take to fetch
/// and decrypt before it answers. Its default is 10 minutes; a minute is
/// plenty for one file and keeps a stuck call from holding a worker.
const PROVIDER_TIMEOUT_MS: u64 = 60_000;

/// `[[accounts]]` keys for `provider = "codechat"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodechatConfig {
    /// Account name; the webhook URL is `/webhooks/{name}`.
    pub(crate) name: AccountName,
    /// How long after the message the file can still be fetched (default 14d).
    #[serde(default, deserialize_with = "opt_duration")]
    pub(crate) retention: Option<Duration>,
    /// Hosts CDN links may point at (default `*.whatsapp.net`); the host of
    /// `cdn_url` is always allowed.
    #[serde(default)]
    pub(crate) allowed_download_hosts: Option<Vec<String>>,
    /// The CodeChat server, e.g. `https://api.yumer.com.br`.
    pub(crate) api_url: String,
    /// The instance id in `/api/v2/instance/{instance_id}/...`.
    pub(crate) instance_id: StringOrInt,
    /// The instance's JWT, sent as `Authorization: Bearer`.
    pub(crate) api_token: SecretRef,
    /// Webhooks must carry it as `Authorization: Bearer …` or `?token=…`.
    /// Required unless `allow_unauthenticated_webhooks = true`.
    #[serde(default)]
    pub(crate) webhook_token: Option<SecretRef>,
    /// Accept webhooks without credentials when `webhook_token` is absent.
    /// Off by default; `check-config` and the startup log warn when on.
    #[serde(default)]
    pub(crate) allow_unauthenticated_webhooks: bool,
    /// The WhatsApp CDN (default `https://mmg.whatsapp.net`).
    #[serde(default = "default_cdn_url")]
    pub(crate) cdn_url: String,
    /// `"direct"` (CDN + local decryption, the default) or `"provider"`.
    #[serde(default)]
    pub(crate) mode: Mode,
}

fn default_cdn_url() -> String {
    baileys::DEFAULT_CDN_URL.to_owned()
}

#[derive(Debug)]
pub(crate) struct Codechat {
    account: AccountName,
    retention: Duration,
    cdn_hosts: HostPolicy,
    api_hosts: HostPolicy,
    api_url: url::Url,
    cdn_url: String,
    instance_id: String,
    api_token: Secret,
    webhook_token: Option<Secret>,
    mode: Mode,
    /// Dates each webhook's arrival, which bounds its jobs' deadlines.
    clock: Arc<dyn Clock>,
}

/// What a CodeChat job stores.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    stub: Stub,
    chat_id: Option<String>,
    sender: Option<String>,
}

impl Codechat {
    pub(crate) fn new(config: &CodechatConfig) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let api_url = baileys::parse_url("api_url", &config.api_url, &mut errors);
        let cdn = baileys::parse_url("cdn_url", &config.cdn_url, &mut errors);
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
        let instance_id = config.instance_id.to_string();
        if instance_id.is_empty() || instance_id.contains(['/', '?', '#']) {
            errors.push(format!("instance_id {instance_id:?} is not a path segment"));
        }
        let cdn_hosts = baileys::cdn_hosts(
            config.allowed_download_hosts.as_ref(),
            cdn.as_ref(),
            &mut errors,
        );
        let (Some(api_url), Some(api_token), true) = (api_url, api_token, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(Self {
            account: config.name.clone(),
            retention: config.retention.unwrap_or(DEFAULT_RETENTION),
            cdn_hosts,
            api_hosts: HostPolicy::new(api_url.host_str()),
            api_url,
            cdn_url: config.cdn_url.clone(),
            instance_id,
            api_token,
            webhook_token,
            mode: config.mode,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same adapter on another clock.
    pub(crate) fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// `POST {api_url}/api/v2/instance/{id}/media/directly-download?timeout=…`
    /// with the stub; the answer is the decrypted file.
    fn directly_download(&self, stub: &Stub) -> Result<DownloadRequest, ProviderError> {
        let mut url = self.api_url.clone();
        url.path_segments_mut()
            .map_err(|_| ProviderError::BadJob("api_url cannot be a base URL".into()))?
            .pop_if_empty()
            .extend([
                "api",
                "v2",
                "instance",
                &self.instance_id,
                "media",
                "directly-download",
            ]);
        url.query_pairs_mut()
            .append_pair("timeout", &PROVIDER_TIMEOUT_MS.to_string());
        let body = json!({
            "contentType": stub.content_type(),
            "content": {
                "url": stub.url,
                "mimetype": stub.mimetype,
                "mediaKey": stub.media_key,
                "directPath": stub.direct_path,
            },
        });
        let mut request = DownloadRequest::get(url)
            .with_header(
                http::header::AUTHORIZATION,
                Secret::new(format!("Bearer {}", self.api_token.expose())),
            )
            .with_header(http::header::CONTENT_TYPE, Secret::new("application/json"))
            .with_header(
                http::header::ACCEPT,
                Secret::new("application/octet-stream"),
            );
        request.method = http::Method::POST;
        request.body = Some(body.to_string().into());
        Ok(request)
    }

    /// One message record (a webhook's `data`, or a backfill reference at
    /// `at`): a job, or `None` when it carries no media. `owner_jid`, from
    /// the webhook's `instance`, is the sender of the account's own
    /// messages.
    fn message_job(
        &self,
        data: &Value,
        at: &str,
        owner_jid: Option<&str>,
    ) -> Result<Option<JobSpec>, ProviderError> {
        let field = |key: &str| format!("{at}.{key}");
        let message_type = data
            .get("messageType")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::missing(&field("messageType")))?;
        if !baileys::MEDIA_MESSAGES.contains(&message_type) {
            return Ok(None);
        }
        let key_id = data
            .get("keyId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ProviderError::missing(&field("keyId")))?;
        checked_id(key_id, &field("keyId"))?;
        let message_at = message_time(data.get("messageTimestamp"), &field("messageTimestamp"))?;
        let content = data
            .get("content")
            .ok_or_else(|| ProviderError::missing(&field("content")))?;
        let (message_type, content, content_at) =
            match baileys::unwrap_document_with_caption(message_type, content) {
                (name, inner) if name != message_type => {
                    (name, inner, field("content.message.documentMessage"))
                }
                (name, c) => (name, c, field("content")),
            };
        let stub = Stub::parse(message_type, content, &content_at, true)?;
        let chat_id = opt_string(data, "keyRemoteJid");
        if let Some(chat_id) = &chat_id {
            checked_id(chat_id, &field("keyRemoteJid"))?;
        }
        let from_me = data.get("keyFromMe").and_then(Value::as_bool) == Some(true);
        let sender = if from_me {
            owner_jid.map(str::to_owned)
        } else {
            opt_string(data, "keyParticipant").or_else(|| chat_id.clone())
        };
        let payload = Payload {
            stub,
            chat_id,
            sender,
        };
        new_job(
            &self.account,
            ProviderKind::Codechat,
            key_id,
            None,
            message_at,
            self.clock.now_ms(),
            self.retention,
            &payload,
        )
        .map(Some)
    }
}

#[async_trait::async_trait]
impl Provider for Codechat {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codechat
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
        query: Option<&str>,
    ) -> Result<(), ProviderError> {
        match &self.webhook_token {
            Some(token) => require_bearer_or_query_token(headers, query, token),
            None => Ok(()),
        }
    }

    fn parse_webhook(&self, request: &WebhookRequest<'_>) -> Result<ParsedWebhook, ProviderError> {
        let body: Value = serde_json::from_slice(request.body)
            .map_err(|e| ProviderError::BadPayload(format!("malformed JSON: {e}")))?;
        if !body.is_object() {
            return Err(ProviderError::BadPayload("expected a JSON object".into()));
        }
        let event = body
            .get("event")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::missing("event"))?;
        let ignored = ParsedWebhook {
            ignored: 1,
            ..ParsedWebhook::default()
        };
        if !baileys::is_upsert(event) {
            return Ok(ignored);
        }
        let data = body
            .get("data")
            .filter(|d| d.is_object())
            .ok_or_else(|| ProviderError::missing("data"))?;
        let owner_jid = body.pointer("/instance/ownerJid").and_then(Value::as_str);
        Ok(match self.message_job(data, "data", owner_jid)? {
            Some(job) => ParsedWebhook {
                jobs: vec![job],
                ..ParsedWebhook::default()
            },
            None => ignored,
        })
    }

    /// A message record in the shape of a `messages.upsert` webhook's
    /// `data` (`keyId`, `keyRemoteJid`, `messageType`, `content`,
    /// `messageTimestamp`, ...), made into a job by the webhook parser
    /// itself. The sender of a message sent from the account's own phone
    /// is not in the record (the webhook names it in `instance`), so the
    /// manifest leaves it out.
    async fn backfill(&self, reference: &Value) -> Result<JobSpec, ProviderError> {
        if !reference.is_object() {
            return Err(ProviderError::BadPayload("expected a JSON object".into()));
        }
        let job = self
            .message_job(reference, "reference", None)?
            .ok_or_else(|| ProviderError::BadPayload("not a media message".into()))?;
        crate::backfill::within_retention(job, self.retention, self.clock.now_ms(), "CodeChat")
    }

    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let p: Payload = serde_json::from_value(job.payload.clone())
            .map_err(|e| ProviderError::BadJob(e.to_string()))?;
        let details = p.stub.details(p.chat_id.clone(), p.sender.clone());
        if self.mode == Mode::Direct && !job.link_dead {
            return Ok(Resolution::Fetch(p.stub.direct(
                &self.cdn_url,
                &self.cdn_hosts,
                details,
            )?));
        }
        if job.link_dead {
            tracing::info!(
                message_id = job.message_id,
                "CDN blob gone; asking CodeChat for the file"
            );
        }
        Ok(Resolution::Fetch(ResolvedMedia {
            source: MediaSource::download(self.directly_download(&p.stub)?, self.api_hosts.clone()),
            expected_sha256: Some(p.stub.file_sha256),
            encryption: None,
            details,
        }))
    }
}

#[cfg(test)]
mod tests;
