//! Per-provider account configuration (`[[accounts]]` in the config file).
//!
//! One struct per provider, each with `deny_unknown_fields`, selected by the
//! `provider` key. The four keys every account has (`name`, `retention`,
//! `allowed_download_hosts`, `allow_unauthenticated_webhooks`) are repeated
//! in each struct because serde cannot combine a shared flattened struct
//! with unknown-key rejection; the rules behind them live here once
//! (`webhook_credential`, `download_hosts`).

use archiver_core::{Secret, SecretRef};
use media_fetch::HostPolicy;
use serde::Deserialize;

use crate::cloudapi::CloudApiConfig;
use crate::codechat::CodechatConfig;
use crate::evolution::EvolutionConfig;
use crate::greenapi::GreenApiConfig;
use crate::nxcloud::NxcloudConfig;
use crate::onprem::OnPremConfig;

/// One `[[accounts]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum AccountConfig {
    /// `provider = "greenapi"`.
    Greenapi(GreenApiConfig),
    /// `provider = "codechat"`.
    Codechat(CodechatConfig),
    /// `provider = "evolution"`.
    Evolution(EvolutionConfig),
    /// `provider = "nxcloud"`.
    Nxcloud(NxcloudConfig),
    /// `provider = "onprem"`.
    Onprem(OnPremConfig),
    /// `provider = "cloudapi"`.
    Cloudapi(CloudApiConfig),
}

impl AccountConfig {
    /// The account's name.
    pub fn name(&self) -> &archiver_core::AccountName {
        match self {
            AccountConfig::Greenapi(c) => &c.name,
            AccountConfig::Codechat(c) => &c.name,
            AccountConfig::Evolution(c) => &c.name,
            AccountConfig::Nxcloud(c) => &c.name,
            AccountConfig::Onprem(c) => &c.name,
            AccountConfig::Cloudapi(c) => &c.name,
        }
    }
}

/// An identifier written as a string or an integer (`id_instance = 1101000001`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum StringOrInt {
    Text(String),
    Int(u64),
}

impl std::fmt::Display for StringOrInt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StringOrInt::Text(s) => f.write_str(s),
            StringOrInt::Int(n) => write!(f, "{n}"),
        }
    }
}

/// The webhook credential `key` of an account: resolved when set; when
/// absent, a config error unless the account set
/// `allow_unauthenticated_webhooks = true`.
pub(crate) fn webhook_credential(
    key: &str,
    value: Option<&SecretRef>,
    allow_unauthenticated: bool,
    errors: &mut Vec<String>,
) -> Option<Secret> {
    match value {
        // `resolve` refuses an empty value: an empty token would accept
        // `Authorization: Bearer ` from anyone.
        Some(value) => match value.resolve() {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(format!("{key}: {e}"));
                None
            }
        },
        None if allow_unauthenticated => None,
        None => {
            errors.push(format!(
                "{key}: required (or set allow_unauthenticated_webhooks = true)"
            ));
            None
        }
    }
}

/// An account's download hosts: its own `allowed_download_hosts`, or the
/// provider's `defaults` when the key is absent or `[]`. An entry that
/// names no host (`""`, `"."`, `"*."`, `"*"`) is a config error naming its
/// index: left in, it would either match nothing or, worse, be read as
/// "no list" and allow every host.
pub(crate) fn download_hosts<'a>(
    allowed: Option<&'a Vec<String>>,
    defaults: impl IntoIterator<Item = &'a str>,
    errors: &mut Vec<String>,
) -> Vec<String> {
    match allowed {
        Some(list) if !list.is_empty() => {
            for (i, pattern) in list.iter().enumerate() {
                if let Err(why) = HostPolicy::check_pattern(pattern) {
                    errors.push(format!("allowed_download_hosts[{i}]: {pattern:?} {why}"));
                }
            }
            list.clone()
        }
        _ => defaults.into_iter().map(str::to_owned).collect(),
    }
}
