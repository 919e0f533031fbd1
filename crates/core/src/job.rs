use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;

/// Who sent a message, seen from the account: what `[accounts.rules]`
/// `directions` select and manifests record (PRODUCT.md section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From someone else.
    Incoming,
    /// From the account's own phone or API.
    Outgoing,
}

impl Direction {
    /// The config and manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }
}

/// The provider behind an account; also the `provider` config value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Green API (WhatsApp HTTP API).
    Greenapi,
    /// CodeChat API v2 (Baileys based).
    Codechat,
    /// Evolution API v2 (Baileys based).
    Evolution,
    /// WhatsApp Business On-Premises API.
    Onprem,
    /// Meta WhatsApp Cloud API.
    Cloudapi,
    /// NXCloud WhatsApp API.
    Nxcloud,
    /// WAHA (WhatsApp HTTP API, devlikeapro/waha), any engine.
    Waha,
}

impl ProviderKind {
    /// The config and storage spelling (`greenapi`, `cloudapi`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Greenapi => "greenapi",
            ProviderKind::Codechat => "codechat",
            ProviderKind::Evolution => "evolution",
            ProviderKind::Onprem => "onprem",
            ProviderKind::Cloudapi => "cloudapi",
            ProviderKind::Nxcloud => "nxcloud",
            ProviderKind::Waha => "waha",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown provider {s:?}"))
    }
}

/// A job's place in its life cycle (PRODUCT.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Ready to run at `next_attempt_at`.
    Pending,
    /// Held by a worker until its lease expires.
    Leased,
    /// Parked until an external event (On-Prem store callback) or a timeout.
    Waiting,
    /// Archived and verified.
    Done,
    /// Given up on, with a reason.
    Dead,
    /// Its message was erased before it was archived (PRODUCT.md section
    /// 10): terminal, never retried, and a redelivery of it is ignored.
    Erased,
}

impl JobState {
    /// Every state, in life-cycle order.
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Leased,
        JobState::Waiting,
        JobState::Done,
        JobState::Dead,
        JobState::Erased,
    ];

    /// The API and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Leased => "leased",
            JobState::Waiting => "waiting",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Erased => "erased",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!("unknown job state {s:?} (pending, leased, waiting, done, dead, erased)")
            })
    }
}

/// An account name: `[a-z0-9-]{1,64}`. It appears in URLs and storage keys,
/// so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AccountName(String);

/// The reason a string is not an [`AccountName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("account name {0:?} must be 1 to 64 characters of a-z, 0-9 and -")]
pub struct InvalidAccountName(pub String);

impl AccountName {
    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, InvalidAccountName> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidAccountName(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccountName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AccountName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A job as a provider adapter describes it from a webhook, before the queue
/// has seen it.
///
/// `payload` is the adapter's own reference to the media (URLs, ids, hashes,
/// keys); the queue stores it verbatim and the same adapter reads it back in
/// the worker. Nothing outside the adapter interprets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// `{account}:{media id or message id}` (PRODUCT.md section 2).
    pub id: String,
    /// The account the webhook arrived on.
    pub account: String,
    /// The account's provider.
    pub provider: ProviderKind,
    /// The message id; the manifest is named after it.
    pub message_id: String,
    /// The provider's media id, for providers that have one.
    pub media_id: Option<String>,
    /// The chat the message belongs to, when the provider says (an
    /// erasure by chat finds the message's job by it).
    pub chat_id: Option<String>,
    /// The message's own timestamp.
    pub message_at: UnixMillis,
    /// When the provider forgets the file: the earlier of `message_at` and
    /// the webhook's arrival, plus retention ([`crate::bounds::deadline`]).
    pub deadline: UnixMillis,
    /// The adapter's reference to the media.
    pub payload: serde_json::Value,
}

impl JobSpec {
    /// The id of the job for `key` (media id or message id) on `account`.
    pub fn job_id(account: &str, key: &str) -> String {
        format!("{account}:{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_url_and_key_safe() {
        assert!(AccountName::new("green-main").is_ok());
        assert!(AccountName::new("a").is_ok());
        for bad in ["", "Green", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(AccountName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn states_and_providers_round_trip_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        assert_eq!(
            "cloudapi".parse::<ProviderKind>().unwrap(),
            ProviderKind::Cloudapi
        );
        assert!("whatsapp".parse::<ProviderKind>().is_err());
    }
}
