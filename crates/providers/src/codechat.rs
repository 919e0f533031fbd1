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

use archiver_core::config_value::resolve_secret;
use archiver_core::{AccountName, Clock, JobSpec, ProviderKind, Secret, SecretRef};
use media_fetch::{DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::account::Account;
use crate::auth::HeadCredential;
use crate::baileys::{self, Mode, Stub};
use crate::config::{StringOrInt, account_config, http_url, path_segment};
use crate::rules::Facts;
use crate::{
    Announced, Direction, JobRef, MediaSource, ParsedWebhook, Provider, ProviderError, Resolution,
    ResolvedMedia, WebhookRequest, checked_id, endpoint, json_object, message_time, opt_string,
    webhook_json,
};

const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);
/// `timeout` of directly-download, in ms: how long CodeChat may take to fetch
/// and decrypt before it answers. Its default is 10 minutes; a minute is
/// plenty for one file and keeps a stuck call from holding a worker.
const PROVIDER_TIMEOUT_MS: u64 = 60_000;

account_config! {
    /// `[[accounts]]` keys for `provider = "codechat"`. `retention`
    /// defaults to 14d, `allowed_download_hosts` (where CDN links may point)
    /// to `*.whatsapp.net`; the host of `cdn_url` is always allowed.
    pub struct CodechatConfig {
        /// The CodeChat server, e.g. `https://api.yumer.com.br`.
        api_url: String,
        /// The instance id in `/api/v2/instance/{instance_id}/...`.
        instance_id: StringOrInt,
        /// The instance's JWT, sent as `Authorization: Bearer`.
        api_token: SecretRef,
        /// Webhooks must carry it as `Authorization: Bearer …` or `?token=…`.
        /// Required unless `allow_unauthenticated_webhooks = true`.
        #[serde(default)]
        webhook_token: Option<SecretRef>,
        /// The WhatsApp CDN (default `https://mmg.whatsapp.net`).
        #[serde(default = "baileys::default_cdn_url")]
        cdn_url: String,
        /// `"direct"` (CDN + local decryption, the default) or `"provider"`.
        #[serde(default)]
        mode: Mode,
    }
}

#[derive(Debug)]
pub(crate) struct Codechat {
    account: Account,
    cdn_hosts: HostPolicy,
    api_hosts: HostPolicy,
    api_url: url::Url,
    cdn_url: String,
    instance_id: String,
    api_token: Secret,
    webhook: HeadCredential,
    mode: Mode,
}

/// What a CodeChat job stores.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    stub: Stub,
    chat_id: Option<String>,
    sender: Option<String>,
    /// From `keyFromMe`, when the record says.
    #[serde(default)]
    direction: Option<Direction>,
}

impl Codechat {
    pub(crate) fn new(config: &CodechatConfig) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let api_url = http_url("api_url", &config.api_url, &mut errors);
        let cdn = http_url("cdn_url", &config.cdn_url, &mut errors);
        let api_token = resolve_secret("api_token", Some(&config.api_token), &mut errors);
        let webhook_token = config.account().webhook_credential(
            "webhook_token",
            config.webhook_token.as_ref(),
            &mut errors,
        );
        let instance_id = config.instance_id.to_string();
        path_segment("instance_id", &instance_id, &mut errors);
        let cdn_hosts = baileys::cdn_hosts(config.account(), cdn.as_ref(), &mut errors);
        let (Some(api_url), Some(api_token), true) = (api_url, api_token, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(Self {
            account: Account::new(ProviderKind::Codechat, config.account(), DEFAULT_RETENTION),
            cdn_hosts,
            api_hosts: HostPolicy::gateway_api(&api_url),
            api_url,
            cdn_url: config.cdn_url.clone(),
            instance_id,
            api_token,
            webhook: webhook_token.map_or(HeadCredential::None, HeadCredential::BearerOrQuery),
            mode: config.mode,
        })
    }

    /// The same adapter on another clock.
    pub(crate) fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self {
            account: self.account.with_clock(clock),
            ..self
        }
    }

    /// `POST {api_url}/api/v2/instance/{id}/media/directly-download?timeout=…`
    /// with the stub; the answer is the decrypted file.
    fn directly_download(&self, stub: &Stub) -> DownloadRequest {
        let mut url = endpoint(
            &self.api_url,
            [
                "api",
                "v2",
                "instance",
                &self.instance_id,
                "media",
                "directly-download",
            ],
        );
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
        request
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
    ) -> Result<Option<Announced>, ProviderError> {
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
        let direction = baileys::direction(data.get("keyFromMe"));
        let sender = if direction == Some(Direction::Outgoing) {
            owner_jid.map(str::to_owned)
        } else {
            opt_string(data, "keyParticipant").or_else(|| chat_id.clone())
        };
        let facts = Facts {
            direction,
            media_type: stub.kind(),
            chat_id: chat_id.as_deref(),
        };
        let job = self.account.job(
            key_id,
            None,
            message_at,
            facts,
            &Payload {
                stub,
                chat_id: chat_id.clone(),
                sender,
                direction,
            },
        )?;
        Ok(Some(job))
    }
}

#[async_trait::async_trait]
impl Provider for Codechat {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codechat
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
        if !baileys::is_upsert(&body)? {
            return Ok(ParsedWebhook::ignored_event());
        }
        let data = body
            .get("data")
            .filter(|d| d.is_object())
            .ok_or_else(|| ProviderError::missing("data"))?;
        let owner_jid = body.pointer("/instance/ownerJid").and_then(Value::as_str);
        Ok(ParsedWebhook::of_message(
            self.message_job(data, "data", owner_jid)?,
        ))
    }

    /// A message record in the shape of a `messages.upsert` webhook's
    /// `data` (`keyId`, `keyRemoteJid`, `messageType`, `content`,
    /// `messageTimestamp`, ...), made into a job by the webhook parser
    /// itself. The sender of a message sent from the account's own phone
    /// is not in the record (the webhook names it in `instance`), so the
    /// manifest leaves it out.
    async fn backfill(&self, reference: &Value) -> Result<JobSpec, ProviderError> {
        json_object(reference)?;
        let job = self.message_job(reference, "reference", None)?;
        self.account.backfilled(job, "CodeChat")
    }

    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let p: Payload = job.stored()?;
        let details = p
            .stub
            .details(p.chat_id.clone(), p.sender.clone(), p.direction);
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
            source: MediaSource::download(self.directly_download(&p.stub), self.api_hosts.clone()),
            expected_sha256: Some(p.stub.file_sha256),
            encryption: None,
            details,
            size: p.stub.file_length,
        }))
    }
}

#[cfg(test)]
mod tests;
