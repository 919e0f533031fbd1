//! Evolution API v2 (`provider = "evolution"`), providers.md sections 2
//! ("Evolution API (v2) for comparison") and 3.
//!
//! Webhooks: `messages.upsert` (`{event, instance, data:{key, message,
//! messageType, messageTimestamp}}`) whose `data.message` holds a media
//! message (`imageMessage`, `videoMessage`, `audioMessage`,
//! `documentMessage`, `stickerMessage`, `ptvMessage`) become one job each,
//! keyed by `data.key.id`; everything else is ignored. Evolution serializes
//! byte fields as index-keyed objects (`{"0":63,...}`); every encoding is
//! accepted. A webhook for another instance (`instance` differs from the
//! account's) is refused.
//!
//! Authentication: with `webhook_jwt_secret` set, the HS256 JWT Evolution
//! sends as `Authorization: Bearer` when the instance's webhook headers carry
//! `jwt_key` (signature and `exp` checked); otherwise `webhook_token`
//! (`Authorization: Bearer …` or `?token=…`). One of the two is required
//! unless `allow_unauthenticated_webhooks = true`. Both travel in the
//! request head, so they are checked before the body is read.
//!
//! Bytes, in order of preference:
//! 1. `data.message.base64` (Evolution's `webhook_base64`): the file itself,
//!    checked against `fileSha256`; nothing is downloaded.
//! 2. `mode = "direct"` (default): the encrypted blob from `cdn_url +
//!    directPath`, decrypted and verified here (`whatsapp-enc+plain`).
//! 3. When the CDN answers 403/404/410, or with `mode = "provider"`:
//!    `POST {api_url}/chat/getBase64FromMediaMessage/{instance}` (`apikey`
//!    header) with the whole message, so Evolution can ask the sender's
//!    phone to upload it again; its `base64` is checked against `fileSha256`.
//!    That answer holds the whole file in JSON; the fetcher decodes it while
//!    it streams into the spool ([`media_fetch::Answer::Base64JsonField`]),
//!    so memory does not grow with the file.

use std::sync::Arc;
use std::time::Duration;

use archiver_core::config_value::resolve_secret;
use archiver_core::{AccountName, Clock, ProviderKind, Secret, SecretRef};
use bytes::Bytes;
use media_fetch::{Answer, DownloadRequest, HostPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::account::Account;
use crate::auth::{HeadCredential, constant_time_eq};
use crate::baileys::{self, Mode, Stub};
use crate::config::{account_config, http_url, path_segment};
use crate::rules::Facts;
use crate::{
    Announced, Direction, JobRef, MediaSource, ParsedWebhook, Provider, ProviderError, Resolution,
    ResolvedMedia, WebhookRequest, checked_id, endpoint, invalid, json_object, message_time,
    opt_string, webhook_json,
};

const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);
const GET_BASE64: &str = "getBase64FromMediaMessage";

account_config! {
    /// `[[accounts]]` keys for `provider = "evolution"`. `retention`
    /// defaults to 14d, `allowed_download_hosts` (where CDN links may point)
    /// to `*.whatsapp.net`; the host of `cdn_url` is always allowed.
    pub struct EvolutionConfig {
        /// The Evolution API server, e.g. `https://evolution.example.com`.
        api_url: String,
        /// The instance name (`/chat/getBase64FromMediaMessage/{instance}`).
        instance: String,
        /// The global or instance API key, sent as the `apikey` header.
        api_key: SecretRef,
        /// The instance's webhook `jwt_key`: webhooks must carry an HS256 JWT
        /// signed with it. Takes precedence over `webhook_token`.
        #[serde(default)]
        webhook_jwt_secret: Option<SecretRef>,
        /// Otherwise webhooks must carry this as `Authorization: Bearer …` (an
        /// instance webhook header) or `?token=…`.
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
pub(crate) struct Evolution {
    account: Account,
    cdn_hosts: HostPolicy,
    api_url: url::Url,
    cdn_url: String,
    instance: String,
    api_key: Secret,
    webhook: HeadCredential,
    mode: Mode,
}

/// What an Evolution job stores.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    stub: Stub,
    /// `data.key`, verbatim, for getBase64FromMediaMessage.
    key: Value,
    /// `{<type>Message: {...}}`, verbatim, for getBase64FromMediaMessage.
    message: Value,
    /// `data.message.base64`: the file itself, when the webhook carried it.
    inline_base64: Option<String>,
    chat_id: Option<String>,
    sender: Option<String>,
    /// From `key.fromMe`, when the message says.
    #[serde(default)]
    direction: Option<Direction>,
}

impl Evolution {
    pub(crate) fn new(config: &EvolutionConfig) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let api_url = http_url("api_url", &config.api_url, &mut errors);
        let cdn = http_url("cdn_url", &config.cdn_url, &mut errors);
        let api_key = resolve_secret("api_key", Some(&config.api_key), &mut errors);
        let jwt = resolve_secret(
            "webhook_jwt_secret",
            config.webhook_jwt_secret.as_ref(),
            &mut errors,
        );
        let token = resolve_secret("webhook_token", config.webhook_token.as_ref(), &mut errors);
        if config.webhook_jwt_secret.is_none()
            && config.webhook_token.is_none()
            && !config.allow_unauthenticated_webhooks
        {
            errors.push(
                "webhook_jwt_secret: required (or webhook_token, or set allow_unauthenticated_webhooks = true)"
                    .into(),
            );
        }
        path_segment("instance", &config.instance, &mut errors);
        let cdn_hosts = baileys::cdn_hosts(config.account(), cdn.as_ref(), &mut errors);
        let (Some(api_url), Some(api_key), true) = (api_url, api_key, errors.is_empty()) else {
            return Err(errors);
        };
        let webhook = match (jwt, token) {
            (Some(secret), _) => HeadCredential::Jwt(secret),
            (None, Some(token)) => HeadCredential::BearerOrQuery(token),
            (None, None) => HeadCredential::None,
        };
        Ok(Self {
            account: Account::new(ProviderKind::Evolution, config.account(), DEFAULT_RETENTION),
            cdn_hosts,
            api_url,
            cdn_url: config.cdn_url.clone(),
            instance: config.instance.clone(),
            api_key,
            webhook,
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

    /// One media message of the webhook (`data`, or an element of it).
    fn message_job(
        &self,
        body: &Value,
        data: &Value,
        at: &str,
    ) -> Result<Option<Announced>, ProviderError> {
        let field = |key: &str| format!("{at}.{key}");
        let Some(message) = data.get("message").filter(|m| m.is_object()) else {
            return Ok(None);
        };
        let message_type = data.get("messageType").and_then(Value::as_str);
        let Some((name, content)) = baileys::find_media(message, message_type)
            .or_else(|| baileys::find_media(message, None))
        else {
            return Ok(None);
        };
        let key = data
            .get("key")
            .filter(|k| k.is_object())
            .ok_or_else(|| ProviderError::missing(&field("key")))?;
        let id = key
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ProviderError::missing(&field("key.id")))?;
        checked_id(id, &field("key.id"))?;
        let message_at = message_time(data.get("messageTimestamp"), &field("messageTimestamp"))?;
        let inline_base64 = match message.get("base64") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if baileys::decode_file_base64(s).is_some() => Some(s.clone()),
            Some(_) => return Err(invalid(&field("message.base64"), "not base64")),
        };
        let stub = Stub::parse(
            name,
            content,
            &format!("{at}.message.{name}"),
            inline_base64.is_none(),
        )?;
        let chat_id = opt_string(key, "remoteJid");
        if let Some(chat_id) = &chat_id {
            checked_id(chat_id, &field("key.remoteJid"))?;
        }
        let direction = baileys::direction(key.get("fromMe"));
        let sender = if direction == Some(Direction::Outgoing) {
            opt_string(body, "sender")
        } else {
            opt_string(key, "participant").or_else(|| chat_id.clone())
        };
        let facts = Facts {
            direction,
            media_type: stub.kind(),
            chat_id: chat_id.as_deref(),
        };
        let payload = Payload {
            stub,
            key: key.clone(),
            message: json!({ name: content }),
            inline_base64,
            chat_id: chat_id.clone(),
            sender,
            direction,
        };
        self.account
            .job(id, None, message_at, facts, &payload)
            .map(Some)
    }

    /// `POST /chat/getBase64FromMediaMessage/{instance}`: the decrypted file
    /// as base64 inside a JSON answer, which the fetcher decodes while it
    /// streams into the spool. Only the host of `api_url` is allowed, and it
    /// is the operator's own: reachable on a private network like the rest
    /// of Evolution's API ([`HostPolicy::gateway_api`]).
    fn get_base64(&self, p: &Payload) -> MediaSource {
        let url = endpoint(&self.api_url, ["chat", GET_BASE64, &self.instance]);
        let body = json!({
            "message": { "key": p.key, "message": p.message },
            "convertToMp4": false,
        });
        let mut request = DownloadRequest::get(url)
            .with_header(
                http::HeaderName::from_static("apikey"),
                self.api_key.clone(),
            )
            .with_header(http::header::CONTENT_TYPE, Secret::new("application/json"));
        request.method = http::Method::POST;
        request.body = Some(body.to_string().into());
        request.answer = Answer::Base64JsonField("base64");
        MediaSource::download(request, HostPolicy::gateway_api(&self.api_url))
    }
}

#[async_trait::async_trait]
impl Provider for Evolution {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Evolution
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
        if let Some(instance) = body.get("instance").and_then(Value::as_str)
            && !constant_time_eq(instance.as_bytes(), self.instance.as_bytes())
        {
            return Err(ProviderError::BadPayload(format!(
                "`instance` {instance:?} is not this account's instance"
            )));
        }
        let data = body
            .get("data")
            .ok_or_else(|| ProviderError::missing("data"))?;
        let items: Vec<(&Value, String)> = match data {
            Value::Object(_) => vec![(data, "data".to_owned())],
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, d)| (d, format!("data[{i}]")))
                .collect(),
            _ => return Err(ProviderError::missing("data")),
        };
        let mut parsed = ParsedWebhook::default();
        for (item, at) in items {
            parsed.add(self.message_job(&body, item, &at)?);
        }
        Ok(parsed)
    }

    /// A message record in the shape of a `messages.upsert` webhook's
    /// `data` (`key`, `message`, `messageType`, `messageTimestamp`, ...),
    /// made into a job by the webhook parser itself. The sender of a
    /// message sent from the account's own phone is not in the record (the
    /// webhook names it in `sender`), so the manifest leaves it out.
    async fn backfill(&self, reference: &Value) -> Result<archiver_core::JobSpec, ProviderError> {
        json_object(reference)?;
        let job = self.message_job(&Value::Null, reference, "reference")?;
        self.account.backfilled(job, "Evolution API")
    }

    async fn resolve(&self, job: JobRef<'_>) -> Result<Resolution, ProviderError> {
        let p: Payload = job.stored()?;
        let details = p
            .stub
            .details(p.chat_id.clone(), p.sender.clone(), p.direction);
        if let Some(text) = &p.inline_base64 {
            let bytes = baileys::decode_file_base64(text)
                .ok_or_else(|| ProviderError::BadJob("stored base64 does not decode".into()))?;
            return Ok(Resolution::Fetch(ResolvedMedia {
                source: MediaSource::Inline(Bytes::from(bytes)),
                expected_sha256: Some(p.stub.file_sha256),
                encryption: None,
                details,
                size: p.stub.file_length,
            }));
        }
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
                "CDN blob gone; asking Evolution for the file"
            );
        }
        Ok(Resolution::Fetch(ResolvedMedia {
            source: self.get_base64(&p),
            expected_sha256: Some(p.stub.file_sha256),
            encryption: None,
            details,
            size: p.stub.file_length,
        }))
    }
}

#[cfg(test)]
mod tests;
