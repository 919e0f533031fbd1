//! What every adapter keeps of its account, whatever the provider: its
//! name, how long the provider keeps its files, its `[accounts.rules]`, and
//! the clock that dates webhook arrivals. Together they decide whether a
//! message is archived and make each job's id and deadline, so every
//! adapter makes its jobs here.

use std::sync::Arc;
use std::time::Duration;

use archiver_core::{AccountName, Clock, JobSpec, ProviderKind, SystemClock, UnixMillis, bounds};

use crate::config::AccountKeys;
use crate::rules::{Facts, Rules};
use crate::{Announced, ProviderError};

#[derive(Debug)]
pub(crate) struct Account {
    name: AccountName,
    kind: ProviderKind,
    retention: Duration,
    /// What the account archives.
    rules: Rules,
    /// Dates each webhook's arrival, which bounds its jobs' deadlines.
    clock: Arc<dyn Clock>,
}

impl Account {
    /// The account `keys` configure, for a `kind` adapter whose provider
    /// keeps files `default_retention` unless the account says otherwise;
    /// on the wall clock.
    pub(crate) fn new(
        kind: ProviderKind,
        keys: AccountKeys<'_>,
        default_retention: Duration,
    ) -> Self {
        Self {
            name: keys.name.clone(),
            kind,
            retention: keys.retention.unwrap_or(default_retention),
            rules: Rules::new(keys.rules),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same account on another clock.
    pub(crate) fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    pub(crate) fn name(&self) -> &AccountName {
        &self.name
    }

    #[cfg(test)]
    pub(crate) fn retention(&self) -> Duration {
        self.retention
    }

    pub(crate) fn now_ms(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    /// The id of the job for `key` (a media id, or a message id when the
    /// provider has no media ids).
    pub(crate) fn job_id(&self, key: &str) -> String {
        JobSpec::job_id(self.name.as_str(), key)
    }

    /// `rules.max_file_bytes`.
    pub(crate) fn max_file_bytes(&self) -> Option<u64> {
        self.rules.max_file_bytes()
    }

    /// The job for one media file, arriving now, unless the account's
    /// rules exclude a message with these `facts` ([`Announced::Excluded`],
    /// saying why). The job is keyed by its media id when the provider has
    /// one, else by its message id (PRODUCT.md section 2), due the
    /// account's retention after the earlier of the message's time and now
    /// ([`bounds::deadline`]). The ids were checked by the caller, which
    /// knows their field names ([`archiver_core::bounds::check_id`]).
    pub(crate) fn job(
        &self,
        message_id: &str,
        media_id: Option<&str>,
        message_at: UnixMillis,
        facts: Facts<'_>,
        payload: &impl serde::Serialize,
    ) -> Result<Announced, ProviderError> {
        if let Some(why) = self.rules.exclusion(&facts) {
            tracing::debug!(account = %self.name, message_id, why, "message excluded by the account's rules");
            return Ok(Announced::Excluded(why));
        }
        let retention = self.retention;
        let deadline = bounds::deadline(message_at, self.now_ms(), retention).ok_or_else(|| {
            ProviderError::BadJob(format!(
                "deadline out of range: retention {retention:?} after {message_at} ms"
            ))
        })?;
        Ok(Announced::Job(JobSpec {
            id: self.job_id(media_id.unwrap_or(message_id)),
            account: self.name.to_string(),
            provider: self.kind,
            message_id: message_id.to_owned(),
            media_id: media_id.map(str::to_owned),
            chat_id: facts.chat_id.map(str::to_owned),
            message_at,
            deadline,
            payload: serde_json::to_value(payload)
                .map_err(|e| ProviderError::BadJob(e.to_string()))?,
        }))
    }

    /// Counts one fresh copy asked of the gateway for a file it announced
    /// (`media_archiver_redownloads_total{account,reason}`): `reason` is
    /// `not-downloaded` (the webhook had no file) or `gone` (its file had
    /// expired or vanished by the time it was fetched). A growing `gone`
    /// count means downloads start after the gateway's file lifetime.
    pub(crate) fn count_redownload(&self, reason: &'static str) {
        metrics::counter!(
            "media_archiver_redownloads_total",
            "account" => self.name.to_string(),
            "reason" => reason
        )
        .increment(1);
    }

    /// The job a backfill reference made, refused when the reference is
    /// not a media message (`None`), the account's rules exclude it, or
    /// its deadline has passed: `provider` (its name in the message) no
    /// longer keeps the file, and the queue would dead-letter it at once.
    pub(crate) fn backfilled(
        &self,
        job: Option<Announced>,
        provider: &str,
    ) -> Result<JobSpec, ProviderError> {
        let job = match job {
            None => return Err(ProviderError::BadPayload("not a media message".into())),
            Some(Announced::Excluded(why)) => return Err(ProviderError::Excluded(why)),
            Some(Announced::Job(job)) => job,
        };
        if job.deadline <= self.now_ms() {
            return Err(ProviderError::MediaUnavailable(format!(
                "the message is older than the account's retention ({} days): {provider} no longer keeps its file",
                self.retention.as_secs() / 86_400
            )));
        }
        Ok(job)
    }
}
