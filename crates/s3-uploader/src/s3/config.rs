//! `[storage.s3]`: the settings as written ([`S3Config`]), and checked with
//! their keys resolved ([`S3Settings`]), the only form
//! [`S3Store::connect`](super::S3Store::connect) takes, so a store is never
//! built on settings nobody checked.
//!
//! The limits come from S3 itself (part sizes, part count, presigned URL
//! lifetime): a value outside them would fail on the first large upload or
//! presign, long after startup, so it is refused here instead.

use std::time::Duration;

use archiver_core::config_value::{duration, resolve_secret, verdict};
use archiver_core::{Secret, SecretRef};
use serde::Deserialize;

use crate::MAX_PRESIGN_TTL;

pub(super) const MIB: u64 = 1024 * 1024;
/// S3's smallest part (except the last).
const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest part.
const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// The most parts of one upload in flight: 32 x 64 KiB of read buffers.
const MAX_PARALLEL_PARTS: usize = 32;
/// Most `stream_buffers` (with 8 MiB parts, 2 GiB of buffers).
const MAX_STREAM_BUFFERS: usize = 256;

/// `[storage.s3]`, as written in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Bucket name; required.
    pub bucket: String,
    /// Region (default `us-east-1`; S3-compatible stores usually accept it).
    pub region: String,
    /// Endpoint URL of an S3-compatible store (`http://127.0.0.1:3900`);
    /// `None` for AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`{endpoint}/{bucket}/{key}`), which most
    /// S3-compatible stores need.
    pub force_path_style: bool,
    /// Key prefix of the storage layout (`"prod/"`); see
    /// [`Layout`](crate::Layout).
    pub prefix: String,
    /// Static credentials; when both are unset the standard AWS credential
    /// chain is used (environment, profile, web identity, ECS, IMDS).
    pub access_key_id: Option<SecretRef>,
    /// See `access_key_id`.
    pub secret_access_key: Option<SecretRef>,
    /// `"AES256"` or `"aws:kms"`.
    pub server_side_encryption: Option<String>,
    /// KMS key for `aws:kms` (bucket default key otherwise).
    pub kms_key_id: Option<String>,
    /// Storage class of blobs (`STANDARD_IA`, `GLACIER_IR`, ...). Manifests
    /// always stay in the bucket's default class, so that they can be read
    /// back without a restore.
    pub storage_class: Option<String>,
    /// `"GOVERNANCE"` or `"COMPLIANCE"`: every blob and manifest is written
    /// with this object-lock retention (the bucket must have object lock
    /// enabled).
    pub object_lock_mode: Option<String>,
    /// Retention in days, from the time of writing; required with `object_lock_mode`.
    pub object_lock_days: Option<u32>,
    /// Lifetime of the presigned URLs handed out for archived files (above
    /// 0, at most 7 days: the S3 limit).
    #[serde(deserialize_with = "duration")]
    pub presign_ttl: Duration,
    /// Multipart threshold and part size (default 8 MiB, at least 5 MiB).
    /// Files up to this size are sent in one PutObject. Raised automatically
    /// for files that would need more than 10,000 parts.
    pub part_size: u64,
    /// Parts of one multipart upload sent at once (default 4, 1 to 32).
    /// Memory per upload is a 64 KiB read buffer per part in flight,
    /// whatever `part_size`.
    pub max_parallel_parts: usize,
    /// Part buffers shared by every stream-through upload (default 4, 0 to
    /// 256; 0 turns stream-through off). Memory: at most this many times
    /// `part_size`, whatever the number of uploads; an upload that finds
    /// none free stages its file in the spool instead.
    pub stream_buffers: usize,
    /// Send each part of a stream-through upload whose download announced
    /// its length straight into its request, with the part's sha256 after
    /// the bytes as an aws-chunked trailer, instead of through a `part_size`
    /// buffer (default false). Memory per upload is then a few hundred KiB
    /// whatever `part_size`, and the upload gives its stream buffer back
    /// as soon as the length is known (it needs one to start). The
    /// price: a part that fails is not sent again on its own (the attempt
    /// fails and the job is retried, download included), and the store
    /// decodes the chunked bodies (Garage 2.5 spends about 40% more CPU per
    /// byte on them; BENCHMARKS.md). Only for a store that decodes
    /// aws-chunked bodies with trailers.
    pub pipe_parts: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: None,
            force_path_style: false,
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            server_side_encryption: None,
            kms_key_id: None,
            storage_class: None,
            object_lock_mode: None,
            object_lock_days: None,
            presign_ttl: Duration::from_secs(3600),
            part_size: 8 * MIB,
            max_parallel_parts: 4,
            stream_buffers: 4,
            pipe_parts: false,
        }
    }
}

/// [`S3Config`] checked, with its static credentials resolved. Made only by
/// [`S3Config::validate`].
#[derive(Debug, Clone)]
pub struct S3Settings {
    config: S3Config,
    credentials: Option<StaticCredentials>,
}

/// `access_key_id` and `secret_access_key`, resolved; they come together.
#[derive(Debug, Clone)]
pub(super) struct StaticCredentials {
    pub(super) access_key_id: Secret,
    pub(super) secret_access_key: Secret,
}

impl S3Settings {
    /// The settings as written (the credentials as references, never values).
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The settings and the resolved credentials (`None`: the AWS chain).
    pub(super) fn into_parts(self) -> (S3Config, Option<StaticCredentials>) {
        (self.config, self.credentials)
    }
}

impl S3Config {
    /// Checks every value and resolves the credentials, without I/O beyond
    /// reading them. Every problem is returned, each starting with its key
    /// (`bucket: …`) and never quoting a secret.
    pub fn validate(&self) -> Result<S3Settings, Vec<String>> {
        let mut problems = Vec::new();
        let access_key_id =
            resolve_secret("access_key_id", self.access_key_id.as_ref(), &mut problems);
        let secret_access_key = resolve_secret(
            "secret_access_key",
            self.secret_access_key.as_ref(),
            &mut problems,
        );
        self.check_values(&mut problems);
        let credentials = match (access_key_id, secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) => Some(StaticCredentials {
                access_key_id,
                secret_access_key,
            }),
            _ => None,
        };
        verdict(
            problems,
            S3Settings {
                config: self.clone(),
                credentials,
            },
        )
    }

    /// Everything but the secrets' values.
    fn check_values(&self, problems: &mut Vec<String>) {
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if self.bucket.is_empty() {
            problems.push("bucket: required".into());
        } else if !bucket_ok {
            problems.push(format!(
                "bucket: {:?} is not a bucket name (3-63 characters of a-z, 0-9, '-', '.', '_')",
                self.bucket
            ));
        }
        if self.region.trim().is_empty() {
            problems.push("region: must not be empty".into());
        }
        if let Some(ep) = &self.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            problems.push(format!(
                "endpoint: {ep:?} must start with http:// or https://"
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            problems.push(
                "access_key_id, secret_access_key: give both, or neither to use the AWS credential chain"
                    .into(),
            );
        }
        match self.server_side_encryption.as_deref() {
            None | Some("AES256") => {
                if self.kms_key_id.is_some() {
                    problems
                        .push("kms_key_id: requires server_side_encryption = \"aws:kms\"".into());
                }
            }
            Some("aws:kms") => {}
            Some(other) => problems.push(format!(
                "server_side_encryption: {other:?} is not \"AES256\" or \"aws:kms\""
            )),
        }
        if self
            .storage_class
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            problems.push("storage_class: must not be empty when set".into());
        }
        match (self.object_lock_mode.as_deref(), self.object_lock_days) {
            (None, None) => {}
            (Some("GOVERNANCE" | "COMPLIANCE"), Some(days)) if days > 0 => {}
            (Some("GOVERNANCE" | "COMPLIANCE"), Some(_)) => {
                problems.push("object_lock_days: must be at least 1".into())
            }
            (Some(m @ ("GOVERNANCE" | "COMPLIANCE")), None) => problems.push(format!(
                "object_lock_days: required with object_lock_mode = {m:?}"
            )),
            (Some(other), _) => problems.push(format!(
                "object_lock_mode: {other:?} is not \"GOVERNANCE\" or \"COMPLIANCE\""
            )),
            (None, Some(_)) => {
                problems.push("object_lock_mode: required with object_lock_days".into())
            }
        }
        if self.presign_ttl.is_zero() {
            problems.push("presign_ttl: must be above 0".into());
        } else if self.presign_ttl > MAX_PRESIGN_TTL {
            problems.push("presign_ttl: at most 7d (the S3 limit)".into());
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            problems.push(format!(
                "part_size: {} is outside 5 MiB ({MIN_PART_SIZE}) ..= 5 GiB ({MAX_PART_SIZE})",
                self.part_size
            ));
        }
        if !(1..=MAX_PARALLEL_PARTS).contains(&self.max_parallel_parts) {
            problems.push(format!(
                "max_parallel_parts: {} is outside 1 ..= {MAX_PARALLEL_PARTS}",
                self.max_parallel_parts
            ));
        }
        if self.stream_buffers > MAX_STREAM_BUFFERS {
            problems.push(format!(
                "stream_buffers: {} is outside 0 ..= {MAX_STREAM_BUFFERS}",
                self.stream_buffers
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(bucket: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            ..S3Config::default()
        }
    }

    #[test]
    fn defaults_are_valid_once_a_bucket_is_named() {
        let settings = named("media").validate().unwrap();
        let cfg = settings.config();
        assert_eq!(cfg.part_size, 8 * MIB);
        assert_eq!(cfg.max_parallel_parts, 4);
        assert_eq!(cfg.region, "us-east-1");
        assert_eq!(cfg.presign_ttl, Duration::from_secs(3600));
        assert!(settings.credentials.is_none(), "the AWS credential chain");
        assert_eq!(
            S3Config::default().validate().unwrap_err(),
            ["bucket: required"]
        );
    }

    #[test]
    fn validation_lists_every_problem_and_never_a_secret() {
        let cfg = S3Config {
            bucket: "Bad/Bucket".into(),
            region: " ".into(),
            endpoint: Some("localhost:3900".into()),
            secret_access_key: Some(SecretRef::Literal("s3cr3t-value".into())),
            server_side_encryption: Some("aes".into()),
            kms_key_id: Some("k".into()),
            storage_class: Some("".into()),
            object_lock_mode: Some("GOVERNANCE".into()),
            object_lock_days: None,
            presign_ttl: Duration::from_secs(8 * 24 * 3600),
            part_size: 4 * MIB,
            max_parallel_parts: 0,
            ..S3Config::default()
        };
        let problems = cfg.validate().unwrap_err();
        for key in [
            "bucket:",
            "region:",
            "endpoint:",
            "access_key_id, secret_access_key:",
            "server_side_encryption:",
            "storage_class:",
            "object_lock_days:",
            "presign_ttl: at most 7d",
            "part_size:",
            "max_parallel_parts:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} not in {problems:#?}"
            );
        }
        assert!(!problems.join(" ").contains("s3cr3t"));
        let kms = S3Config {
            kms_key_id: Some("k".into()),
            ..named("media")
        };
        assert_eq!(
            kms.validate().unwrap_err().len(),
            1,
            "kms_key_id without aws:kms"
        );
        let lock = S3Config {
            object_lock_days: Some(30),
            ..named("media")
        };
        assert_eq!(lock.validate().unwrap_err().len(), 1, "days without mode");
        let forever = S3Config {
            object_lock_mode: Some("FOREVER".into()),
            object_lock_days: Some(30),
            ..named("media")
        };
        assert!(
            forever.validate().unwrap_err()[0].starts_with("object_lock_mode: \"FOREVER\""),
            "an unknown lock mode"
        );
        let instant = S3Config {
            presign_ttl: Duration::ZERO,
            ..named("media")
        };
        assert_eq!(
            instant.validate().unwrap_err(),
            ["presign_ttl: must be above 0"]
        );
    }

    #[test]
    fn credentials_are_resolved_once_here_and_never_shown() {
        let cfg = S3Config {
            access_key_id: Some(SecretRef::Literal("GK-id".into())),
            secret_access_key: Some(SecretRef::Literal("s3cr3t-value".into())),
            ..named("media")
        };
        let settings = cfg.validate().unwrap();
        let keys = settings.credentials.as_ref().unwrap();
        assert_eq!(keys.access_key_id.expose(), "GK-id");
        assert_eq!(keys.secret_access_key.expose(), "s3cr3t-value");
        assert!(!format!("{settings:?}").contains("s3cr3t"));

        let unset = S3Config {
            access_key_id: Some(SecretRef::Env {
                env: "MEDIA_ARCHIVER_TEST_UNSET_S3_KEY".into(),
            }),
            ..cfg
        };
        let problems = unset.validate().unwrap_err();
        assert!(
            problems[0].starts_with("access_key_id: ")
                && problems[0].contains("MEDIA_ARCHIVER_TEST_UNSET_S3_KEY"),
            "{problems:?}"
        );
    }
}
