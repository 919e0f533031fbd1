//! Per-provider account configuration (`[[accounts]]` in the config file).
//!
//! One struct per provider, each with `deny_unknown_fields`, selected by the
//! `provider` key. The three keys every account has (`name`, `retention`,
//! `allowed_download_hosts`) are repeated in each struct because serde cannot
//! combine a shared flattened struct with unknown-key rejection.

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
