//! `[storage]`: where the archive is, deserialized here because this crate
//! owns both backends (the binary only composes the sections).
//!
//! Users write `backend = "s3"` beside the fs `path`, with the S3 settings
//! in `[storage.s3]` (PRODUCT.md section 4); it is read into an enum with
//! the backend's own settings, so an S3 archive without its bucket section,
//! or a backend that does not exist, cannot be represented. The flat form
//! is read first, into [`StorageSection`], for two things an internally
//! tagged enum cannot do: `backend` defaults to `"fs"`, and the other
//! backend's keys stay accepted and unused, as they always were (a
//! `[storage.s3]` kept while trying `fs`, or the fs `path` left when
//! switching to S3, as the shipped examples suggest). A `[storage.s3]`
//! section is checked for unknown keys either way.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{Layout, S3Config, S3Settings};

/// `[storage]`, as written.
// One value per process, read once at startup: boxing the S3 variant would
// buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "StorageSection")]
pub enum StorageConfig {
    /// `backend = "fs"`: a local folder, [`FsStore`](crate::FsStore).
    Fs {
        /// `storage.path`: the archive's root folder.
        path: PathBuf,
    },
    /// `backend = "s3"`: a bucket, [`S3Store`](crate::S3Store).
    S3(S3Config),
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageSection::default()
            .try_into()
            .expect("the default [storage] section is complete")
    }
}

/// The `[storage]` section checked, its secrets resolved: which store to
/// open.
// One value per process (see `StorageConfig`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StorageSettings {
    /// Open [`FsStore`](crate::FsStore) on this folder.
    Fs {
        /// The archive's root folder.
        path: PathBuf,
    },
    /// Connect [`S3Store`](crate::S3Store) with these settings.
    S3(S3Settings),
}

impl StorageConfig {
    /// Resolves the secrets and checks the values; every problem is
    /// returned, each starting with its key path (`storage.s3: …`).
    pub fn validate(&self) -> Result<StorageSettings, Vec<String>> {
        match self {
            StorageConfig::Fs { path } => Ok(StorageSettings::Fs { path: path.clone() }),
            StorageConfig::S3(s3) => s3.validate().map(StorageSettings::S3).map_err(|problems| {
                problems
                    .into_iter()
                    .map(|p| format!("storage.s3: {p}"))
                    .collect()
            }),
        }
    }
}

impl StorageSettings {
    /// Where objects go in this store: below the S3 `prefix`; an fs archive
    /// has its own folder, so no prefix.
    pub fn layout(&self) -> Layout {
        match self {
            StorageSettings::Fs { .. } => Layout::default(),
            StorageSettings::S3(s3) => Layout::new(&s3.config().prefix),
        }
    }

    /// Lifetime of the presigned URLs of archived files (`presign_ttl`; an
    /// fs archive hands out none, and answers with the default).
    pub fn presign_ttl(&self) -> Duration {
        match self {
            StorageSettings::Fs { .. } => S3Config::default().presign_ttl,
            StorageSettings::S3(s3) => s3.config().presign_ttl,
        }
    }
}

/// `[storage]` as users write it: every key of every backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StorageSection {
    /// Which backend.
    backend: Backend,
    /// fs: the archive's root folder.
    path: PathBuf,
    /// s3: `[storage.s3]`; required.
    s3: Option<S3Config>,
}

/// The values of `backend`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    #[default]
    Fs,
    S3,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            path: "data/archive".into(),
            s3: None,
        }
    }
}

impl TryFrom<StorageSection> for StorageConfig {
    type Error = &'static str;

    fn try_from(section: StorageSection) -> Result<Self, Self::Error> {
        match section.backend {
            Backend::Fs => Ok(StorageConfig::Fs { path: section.path }),
            Backend::S3 => section.s3.map(StorageConfig::S3).ok_or(
                "s3: required when backend = \"s3\" (a [storage.s3] section with at least bucket)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<StorageConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_section_is_a_folder_in_data() {
        let settings = parse("{}").unwrap().validate().unwrap();
        assert!(
            matches!(&settings, StorageSettings::Fs { path } if path == &PathBuf::from("data/archive")),
            "{settings:?}"
        );
        assert_eq!(settings.layout(), Layout::default());
    }

    #[test]
    fn s3_takes_its_section_and_its_prefix_is_the_layouts() {
        let config = parse(
            r#"{"backend": "s3", "path": "left/from/fs", "s3": {"bucket": "media", "prefix": "prod", "presign_ttl": "10m"}}"#,
        )
        .unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.layout(), Layout::new("prod"));
        assert_eq!(settings.presign_ttl(), Duration::from_secs(600));
    }

    #[test]
    fn a_backend_that_does_not_exist_or_lacks_its_section_is_refused() {
        let unknown = parse(r#"{"backend": "ftp"}"#).unwrap_err();
        assert!(
            unknown.contains("unknown variant `ftp`, expected `fs` or `s3`"),
            "{unknown}"
        );
        let bare = parse(r#"{"backend": "s3"}"#).unwrap_err();
        assert!(
            bare.contains("s3: required when backend = \"s3\""),
            "{bare}"
        );
    }

    #[test]
    fn an_s3_section_is_checked_for_typos_even_beside_fs() {
        let typo = parse(r#"{"s3": {"bucket": "media", "bukket": "x"}}"#).unwrap_err();
        assert!(typo.contains("unknown field `bukket`"), "{typo}");
    }

    #[test]
    fn s3_problems_carry_the_section_path() {
        let config = parse(r#"{"backend": "s3", "s3": {"bucket": "x"}}"#).unwrap();
        let problems = config.validate().unwrap_err();
        assert!(
            problems[0].starts_with("storage.s3: bucket:"),
            "{problems:?}"
        );
    }
}
