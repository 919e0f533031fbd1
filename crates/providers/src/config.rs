//! Per-provider account configuration (`[[accounts]]` in the config file).
//!
//! One struct per provider, each with `deny_unknown_fields`, selected by the
//! `provider` key. The keys every account has (`name`, `retention`,
//! `allowed_download_hosts`, `allow_unauthenticated_webhooks`, and the
//! `[accounts.rules]` table, see `rules.rs`) are declared
//! once, by [`account_config!`], which writes each provider's struct, and
//! their rules live on [`AccountKeys`] (`webhook_credential`,
//! `download_hosts`). A macro rather than a shared struct: serde's `flatten`
//! checks unknown keys only after required ones, so a misspelt required key
//! would be reported as missing instead of as the unknown key it is.

use std::time::Duration;

use crate::RulesConfig;
use archiver_core::config_value::resolve_secret;
use archiver_core::{AccountName, Secret, SecretRef};
use media_fetch::HostPolicy;
use serde::Deserialize;

use crate::cloudapi::CloudApiConfig;
use crate::codechat::CodechatConfig;
use crate::evolution::EvolutionConfig;
use crate::greenapi::GreenApiConfig;
use crate::nxcloud::NxcloudConfig;
use crate::onprem::OnPremConfig;
use crate::waha::WahaConfig;

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
    /// `provider = "waha"`.
    Waha(WahaConfig),
}

impl AccountConfig {
    /// The account's name.
    pub fn name(&self) -> &AccountName {
        self.keys().name
    }

    /// The keys every account has.
    pub(crate) fn keys(&self) -> AccountKeys<'_> {
        match self {
            AccountConfig::Greenapi(c) => c.account(),
            AccountConfig::Codechat(c) => c.account(),
            AccountConfig::Evolution(c) => c.account(),
            AccountConfig::Nxcloud(c) => c.account(),
            AccountConfig::Onprem(c) => c.account(),
            AccountConfig::Cloudapi(c) => c.account(),
            AccountConfig::Waha(c) => c.account(),
        }
    }
}

/// Declares one provider's `[[accounts]]` struct: the keys every
/// account has, then the provider's own (`pub(crate)`, in the order
/// given), with `deny_unknown_fields`; and its `account()`, those as
/// [`AccountKeys`]. The struct's doc says the provider's defaults for
/// `retention` and `allowed_download_hosts`.
macro_rules! account_config {
    (
        $(#[$meta:meta])*
        pub struct $config:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $config {
            /// Account name; the webhook URL is `/webhooks/{name}`.
            pub(crate) name: archiver_core::AccountName,
            /// How long after the message the file can still be fetched
            /// (default: the provider's, in the struct's doc).
            #[serde(
                default,
                deserialize_with = "archiver_core::config_value::opt_duration"
            )]
            pub(crate) retention: Option<std::time::Duration>,
            /// Hosts download links may point at; absent or `[]`: the
            /// provider's (in the struct's doc).
            #[serde(default)]
            pub(crate) allowed_download_hosts: Option<Vec<String>>,
            /// Accept webhooks without credentials when the account sets
            /// none. Off by default; `check-config` and the startup log
            /// warn when on.
            #[serde(default)]
            pub(crate) allow_unauthenticated_webhooks: bool,
            /// `[accounts.rules]`: what the account archives; default:
            /// everything.
            #[serde(default, deserialize_with = "crate::rules::rules_table")]
            pub(crate) rules: crate::RulesConfig,
            $( $(#[$field_meta])* pub(crate) $field: $ty, )*
        }

        impl $config {
            /// The keys every account has.
            pub(crate) fn account(&self) -> $crate::config::AccountKeys<'_> {
                $crate::config::AccountKeys {
                    name: &self.name,
                    retention: self.retention,
                    allowed_download_hosts: self.allowed_download_hosts.as_deref(),
                    allow_unauthenticated_webhooks: self.allow_unauthenticated_webhooks,
                    rules: &self.rules,
                }
            }
        }
    };
}
pub(crate) use account_config;

/// The keys every `[[accounts]]` entry has, as one provider's config holds
/// them, and the rules behind them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccountKeys<'a> {
    pub(crate) name: &'a AccountName,
    pub(crate) retention: Option<Duration>,
    pub(crate) allowed_download_hosts: Option<&'a [String]>,
    pub(crate) allow_unauthenticated_webhooks: bool,
    pub(crate) rules: &'a RulesConfig,
}

impl AccountKeys<'_> {
    /// The webhook credential `key` of the account: resolved when set;
    /// when absent, a config error unless the account set
    /// `allow_unauthenticated_webhooks = true`.
    pub(crate) fn webhook_credential(
        &self,
        key: &str,
        value: Option<&SecretRef>,
        errors: &mut Vec<String>,
    ) -> Option<Secret> {
        match value {
            // `resolve` refuses an empty value: an empty token would accept
            // `Authorization: Bearer ` from anyone.
            Some(value) => resolve_secret(key, Some(value), errors),
            None if self.allow_unauthenticated_webhooks => None,
            None => {
                errors.push(format!(
                    "{key}: required (or set allow_unauthenticated_webhooks = true)"
                ));
                None
            }
        }
    }

    /// The account's download hosts: its own `allowed_download_hosts`, or
    /// the provider's `defaults` when the key is absent or `[]`. An entry
    /// that names no host (`""`, `"."`, `"*."`, `"*"`) is a config error
    /// naming its index: left in, it would either match nothing or, worse,
    /// be read as "no list" and allow every host.
    pub(crate) fn download_hosts<'d>(
        &self,
        defaults: impl IntoIterator<Item = &'d str>,
        errors: &mut Vec<String>,
    ) -> Vec<String> {
        match self.allowed_download_hosts {
            Some(list) if !list.is_empty() => {
                for (i, pattern) in list.iter().enumerate() {
                    if let Err(why) = HostPolicy::check_pattern(pattern) {
                        errors.push(format!("allowed_download_hosts[{i}]: {pattern:?} {why}"));
                    }
                }
                list.to_vec()
            }
            _ => defaults.into_iter().map(str::to_owned).collect(),
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

/// An API base URL from the config: `http` or `https` (so it has a host
/// and takes path segments), or `None` with `{key}: why` in `errors`.
pub(crate) fn http_url(key: &str, text: &str, errors: &mut Vec<String>) -> Option<url::Url> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
        Ok(_) => {
            errors.push(format!("{key}: must be an http(s) URL"));
            None
        }
        Err(e) => {
            errors.push(format!("{key}: {e}"));
            None
        }
    }
}

/// Checks that `value` of `key` can be one segment of an API path
/// (`instance`, `session`): not empty, no `/`, `?` or `#`. A problem goes
/// to `errors` as `{key} "value" is not a path segment`.
pub(crate) fn path_segment(key: &str, value: &str, errors: &mut Vec<String>) {
    if value.is_empty() || value.contains(['/', '?', '#']) {
        errors.push(format!("{key} {value:?} is not a path segment"));
    }
}
