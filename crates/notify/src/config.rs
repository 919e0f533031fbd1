//! One `[[notify]]` entry, as written and as checked.

use std::collections::BTreeSet;
use std::time::Duration;

use archiver_core::SecretRef;
use archiver_core::config_value::{duration, verdict};
use retry_queue::{NotifyEvent, Route};
use serde::Deserialize;
use url::Url;

use crate::sign::SigningKey;

/// One `[[notify]]` entry as written (PRODUCT.md section 11).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The target's name: in each delivery's `webhook-id`, the metrics'
    /// `target` label and the admin API.
    pub name: String,
    /// Where deliveries are POSTed (http or https; private addresses are
    /// allowed: this is the operator's own app).
    pub url: String,
    /// `whsec_` + base64, as Standard Webhooks secrets are written.
    pub secret: SecretRef,
    /// Which events; both by default.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Only these accounts' jobs; empty (the default): every account.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// How long one POST may take, answer included.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// How long a delivery is retried before it is dead.
    #[serde(default = "default_max_age", deserialize_with = "duration")]
    pub max_age: Duration,
    /// Put a presigned GET URL of the blob in `media.archived` (S3 stores
    /// only; valid for the account's `presign_ttl`, at most 7 days).
    #[serde(default)]
    pub include_url: bool,
}

fn all_events() -> Vec<String> {
    NotifyEvent::ALL
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_age() -> Duration {
    Duration::from_secs(3 * 24 * 3600)
}

/// The longest `timeout`: a claim is held for the timeout and a margin, so
/// a longer one would hold deliveries of a crashed sender for as long.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest `max_age`: a delivery's deadline must stay far from the
/// end of time (and a year-old event is no use to an app).
const MAX_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A checked `[[notify]]` entry, its secret decoded. `Debug` shows the
/// URL's scheme and host only: its path or query may carry a token.
#[derive(Clone)]
pub struct Target {
    /// `name`.
    pub name: String,
    /// `url`.
    pub url: Url,
    /// The decoded secret.
    pub key: SigningKey,
    /// `events`, deduplicated.
    pub events: BTreeSet<NotifyEvent>,
    /// `accounts`; empty: every account.
    pub accounts: BTreeSet<String>,
    /// `timeout`.
    pub timeout: Duration,
    /// `max_age`.
    pub max_age: Duration,
    /// `include_url`.
    pub include_url: bool,
}

impl NotifyConfig {
    /// Checks the entry against the configured account names and resolves
    /// its secret; every problem is prefixed `notify[{index}] ({name})`.
    pub fn validate(&self, index: usize, accounts: &[&str]) -> Result<Target, Vec<String>> {
        let label = format!("notify[{index}] ({})", self.name);
        let mut problems = Vec::new();
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            problems.push(format!(
                "{label}: name must be 1-64 letters, digits, '-' or '_' (it is part of every webhook-id and metric label)"
            ));
        }
        let url = match Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
            Ok(_) => {
                problems.push(format!("{label}: url must be an http:// or https:// URL"));
                None
            }
            Err(e) => {
                problems.push(format!("{label}: url does not parse: {e}"));
                None
            }
        };
        let key = match self.secret.resolve() {
            Ok(secret) => SigningKey::from_secret(secret.expose())
                .map_err(|e| problems.push(format!("{label}: secret: {e}")))
                .ok(),
            Err(e) => {
                problems.push(format!("{label}: secret: {e}"));
                None
            }
        };
        let mut events = BTreeSet::new();
        for name in &self.events {
            match NotifyEvent::parse(name) {
                Some(event) => {
                    events.insert(event);
                }
                None => problems.push(format!(
                    "{label}: events: unknown event {name:?} (expected media.archived or media.dead)"
                )),
            }
        }
        if self.events.is_empty() {
            problems.push(format!(
                "{label}: events is empty (leave it out for both events)"
            ));
        }
        for account in &self.accounts {
            if !accounts.contains(&account.as_str()) {
                problems.push(format!(
                    "{label}: accounts: no [[accounts]] entry is named {account:?}"
                ));
            }
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            problems.push(format!(
                "{label}: timeout must be above 0 and at most {}s",
                MAX_TIMEOUT.as_secs()
            ));
        }
        if self.max_age.is_zero() || self.max_age > MAX_MAX_AGE {
            problems.push(format!("{label}: max_age must be above 0 and at most 365d"));
        }
        let (Some(url), Some(key)) = (url, key) else {
            return Err(problems);
        };
        verdict(
            problems,
            Target {
                name: self.name.clone(),
                url,
                key,
                events,
                accounts: self.accounts.iter().cloned().collect(),
                timeout: self.timeout,
                max_age: self.max_age,
                include_url: self.include_url,
            },
        )
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field(
                "url",
                &format_args!(
                    "{}://{}/...",
                    self.url.scheme(),
                    self.url.host_str().unwrap_or("?")
                ),
            )
            .field("events", &self.events)
            .field("accounts", &self.accounts)
            .field("timeout", &self.timeout)
            .field("max_age", &self.max_age)
            .field("include_url", &self.include_url)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The outbox routes that make this target's deliveries.
    pub fn routes(&self) -> Vec<Route> {
        let accounts: Vec<Option<String>> = if self.accounts.is_empty() {
            vec![None]
        } else {
            self.accounts.iter().cloned().map(Some).collect()
        };
        self.events
            .iter()
            .flat_map(|&event| {
                accounts.iter().map(move |account| Route {
                    target: self.name.clone(),
                    event,
                    account: account.clone(),
                    max_age: self.max_age,
                })
            })
            .collect()
    }
}

/// Checks every `[[notify]]` entry; target names are unique.
pub fn validate_all(
    entries: &[NotifyConfig],
    accounts: &[&str],
) -> Result<Vec<Target>, Vec<String>> {
    let mut problems = Vec::new();
    let mut targets = Vec::new();
    let mut names = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        if !names.insert(entry.name.as_str()) {
            problems.push(format!(
                "notify[{i}] ({}): the name is used twice",
                entry.name
            ));
        }
        match entry.validate(i, accounts) {
            Ok(target) => targets.push(target),
            Err(found) => problems.extend(found),
        }
    }
    verdict(problems, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn entry(toml_text: &str) -> NotifyConfig {
        toml::from_str(toml_text).expect("reads")
    }

    #[test]
    fn defaults_are_both_events_every_account_10s_and_3_days() {
        let target = entry(&format!(
            "name = \"crm\"\nurl = \"https://crm.internal/hooks\"\nsecret = \"{SECRET}\""
        ))
        .validate(0, &["shop"])
        .unwrap();
        assert_eq!(
            target.events,
            BTreeSet::from([NotifyEvent::Archived, NotifyEvent::Dead])
        );
        assert!(target.accounts.is_empty());
        assert_eq!(target.timeout, Duration::from_secs(10));
        assert_eq!(target.max_age, Duration::from_secs(3 * 86_400));
        assert!(!target.include_url);
        let shown = format!("{target:?}");
        assert!(shown.contains("https://crm.internal/..."), "{shown}");
        assert!(
            !shown.contains("/hooks"),
            "a URL's path may carry a token: {shown}"
        );
        let routes = target.routes();
        assert_eq!(routes.len(), 2);
        assert!(
            routes
                .iter()
                .all(|r| r.account.is_none() && r.target == "crm")
        );
    }

    #[test]
    fn routes_are_one_per_event_and_account() {
        let target = entry(&format!(
            "name = \"crm\"\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"{SECRET}\"\n\
             events = [\"media.dead\"]\naccounts = [\"a\", \"b\"]\nmax_age = \"1h\""
        ))
        .validate(0, &["a", "b"])
        .unwrap();
        let routes = target.routes();
        assert_eq!(
            routes
                .iter()
                .map(|r| (r.event, r.account.as_deref(), r.max_age.as_secs()))
                .collect::<Vec<_>>(),
            [
                (NotifyEvent::Dead, Some("a"), 3600),
                (NotifyEvent::Dead, Some("b"), 3600)
            ]
        );
    }

    #[test]
    fn every_problem_is_named_at_once_and_no_secret_is_printed() {
        let problems = entry(
            "name = \"c r m\"\nurl = \"ftp://x\"\nsecret = \"not-a-whsec-secret\"\n\
             events = [\"media.lost\"]\naccounts = [\"ghost\"]\ntimeout = \"0s\"",
        )
        .validate(2, &["shop"])
        .unwrap_err();
        let text = problems.join("\n");
        for expected in [
            "notify[2] (c r m): name",
            "url must be an http:// or https:// URL",
            "secret: must start with \"whsec_\"",
            "unknown event \"media.lost\"",
            "no [[accounts]] entry is named \"ghost\"",
            "timeout must be above 0",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert!(!text.contains("not-a-whsec-secret"), "{text}");
    }

    #[test]
    fn names_are_unique() {
        let one = entry(&format!(
            "name = \"crm\"\nurl = \"https://a/\"\nsecret = \"{SECRET}\""
        ));
        let problems = validate_all(&[one.clone(), one], &[]).unwrap_err();
        assert_eq!(problems, ["notify[1] (crm): the name is used twice"]);
    }
}
