//! Each account's archive: the global `[storage]`, or the account's own
//! `[accounts.storage]` (PRODUCT.md section 10: a service provider gives
//! each customer its own bucket, prefix, credentials, encryption or Object
//! Lock).
//!
//! Stores are opened once per distinct configuration: accounts whose
//! settings differ only in `prefix` or `presign_ttl` share one store (one
//! S3 client, one pool of stream buffers), each with its own [`Layout`].
//! Blobs are content-addressed per archive: the same file sent to two
//! accounts with different stores is stored in both, as tenant isolation
//! requires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::{FsStore, Layout, ObjectStore, S3Store, StorageSettings, StoreError};

/// Where one account's files go: a store, the layout of keys in it (the
/// prefix), and how long its presigned URLs live.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Keys in it (`prefix` included).
    pub layout: Layout,
    /// Lifetime of the presigned URLs handed out for its files.
    pub presign_ttl: Duration,
    /// For logs and summaries: the backend and where (never credentials).
    pub description: String,
    /// The store's identity, stable across restarts (the backend, its
    /// endpoint and bucket, or its folder): archives on one store share it,
    /// whatever their prefix. The queue's blob reference index is per store.
    pub store_id: String,
    /// The store's Object Lock (mode and retention), when writes are locked:
    /// nothing in it can be deleted before the retention ends.
    pub object_lock: Option<String>,
}

/// Every account's [`Archive`]; see the module docs.
#[derive(Debug, Clone)]
pub struct Archives {
    /// Each distinct archive once; the first is the global `[storage]`.
    distinct: Vec<Archive>,
    /// Accounts with a store of their own, by name: index into `distinct`.
    own: HashMap<String, usize>,
}

impl Archives {
    /// Opens the global store and every account's own (`accounts`: name and
    /// settings of each account with `[accounts.storage]`). No request is
    /// made (S3 credentials are resolved on first use); the fs backend
    /// creates its folder.
    pub async fn open(
        global: &StorageSettings,
        accounts: &[(String, StorageSettings)],
    ) -> Result<Self, StoreError> {
        // Each distinct store with the settings it was opened for.
        let mut stores: Vec<(&StorageSettings, Arc<dyn ObjectStore>)> = Vec::new();
        let mut settings_of: Vec<&StorageSettings> = Vec::new();
        let mut archives = Self {
            distinct: Vec::new(),
            own: HashMap::new(),
        };
        for (account, settings) in
            std::iter::once((None, global)).chain(accounts.iter().map(|(a, s)| (Some(a), s)))
        {
            let index = match settings_of.iter().position(|s| same_archive(s, settings)) {
                Some(index) => index,
                None => {
                    let store = match stores.iter().find(|(s, _)| same_store(s, settings)) {
                        Some((_, store)) => store.clone(),
                        None => {
                            let store = open(settings).await?;
                            stores.push((settings, store.clone()));
                            store
                        }
                    };
                    archives.distinct.push(Archive {
                        store,
                        layout: settings.layout(),
                        presign_ttl: settings.presign_ttl(),
                        description: describe(settings),
                        store_id: store_id(settings),
                        object_lock: object_lock(settings),
                    });
                    settings_of.push(settings);
                    archives.distinct.len() - 1
                }
            };
            if let Some(account) = account {
                archives.own.insert(account.clone(), index);
            }
        }
        Ok(archives)
    }

    /// The archive of `account`: its own, or the global one.
    pub fn of(&self, account: &str) -> &Archive {
        let index = self.own.get(account).copied().unwrap_or(0);
        &self.distinct[index]
    }

    /// Each distinct archive once, the global one first: one store and
    /// layout, whatever the accounts on it and their presigned URLs'
    /// lifetime (a scrub of everything reads each object once).
    pub fn all(&self) -> Vec<&Archive> {
        let mut out: Vec<&Archive> = Vec::new();
        for archive in &self.distinct {
            let seen = out
                .iter()
                .any(|a| Arc::ptr_eq(&a.store, &archive.store) && a.layout == archive.layout);
            if !seen {
                out.push(archive);
            }
        }
        out
    }

    /// Each distinct store once (an S3 client or a folder), with an
    /// archive on it: what `/readyz` pings.
    pub fn stores(&self) -> Vec<&Archive> {
        let mut out: Vec<&Archive> = Vec::new();
        for archive in &self.distinct {
            if !out.iter().any(|a| Arc::ptr_eq(&a.store, &archive.store)) {
                out.push(archive);
            }
        }
        out
    }
}

impl From<Archive> for Archives {
    /// One archive for every account.
    fn from(archive: Archive) -> Self {
        Self {
            distinct: vec![archive],
            own: HashMap::new(),
        }
    }
}

/// Opens the store `settings` name (no request made).
async fn open(settings: &StorageSettings) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Ok(match settings {
        StorageSettings::S3(s3) => Arc::new(S3Store::connect(s3.clone()).await),
        StorageSettings::Fs { path } => Arc::new(FsStore::open(path)?),
    })
}

/// Whether two settings can share one store: the same folder, or every
/// S3 setting equal but the prefix and the presigned URLs' lifetime (which
/// the layout and the archive carry, not the store).
fn same_store(a: &StorageSettings, b: &StorageSettings) -> bool {
    match (a, b) {
        // `data/archive` and `./data/archive` are one folder.
        (StorageSettings::Fs { path: a }, StorageSettings::Fs { path: b }) => {
            let canonical = |p: &std::path::Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
            canonical(a) == canonical(b)
        }
        (StorageSettings::S3(a), StorageSettings::S3(b)) => {
            let (mut a, mut b) = (a.config().clone(), b.config().clone());
            a.prefix.clear();
            b.prefix.clear();
            a.presign_ttl = b.presign_ttl;
            a == b
        }
        _ => false,
    }
}

/// Whether two settings are the same archive: one store, one layout, one
/// presigned URL lifetime.
fn same_archive(a: &StorageSettings, b: &StorageSettings) -> bool {
    same_store(a, b) && a.layout() == b.layout() && a.presign_ttl() == b.presign_ttl()
}

/// A store's identity: what [`same_store`] compares but the credentials.
fn store_id(settings: &StorageSettings) -> String {
    match settings {
        StorageSettings::S3(s3) => {
            let s3 = s3.config();
            let endpoint = s3.endpoint.as_deref().unwrap_or("aws");
            format!("s3:{endpoint}/{}", s3.bucket)
        }
        StorageSettings::Fs { path } => {
            let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
            format!("fs:{}", path.display())
        }
    }
}

/// The Object Lock an S3 store writes with, as people say it.
fn object_lock(settings: &StorageSettings) -> Option<String> {
    let StorageSettings::S3(s3) = settings else {
        return None;
    };
    let s3 = s3.config();
    let mode = s3.object_lock_mode.as_deref()?;
    Some(format!(
        "Object Lock {mode} for {} days on bucket {}",
        s3.object_lock_days.unwrap_or_default(),
        s3.bucket
    ))
}

/// The backend and where, for logs and summaries (never credentials).
fn describe(settings: &StorageSettings) -> String {
    match settings {
        StorageSettings::S3(s3) => {
            let s3 = s3.config();
            format!("s3 bucket {} (prefix {:?})", s3.bucket, s3.prefix)
        }
        StorageSettings::Fs { path } => format!("fs {}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{S3Config, StorageConfig};

    fn s3(bucket: &str, prefix: &str) -> StorageSettings {
        StorageConfig::S3(S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            ..S3Config::default()
        })
        .validate()
        .unwrap()
    }

    #[tokio::test]
    async fn accounts_share_a_store_when_only_the_prefix_differs_and_get_their_own_otherwise() {
        let archives = Archives::open(
            &s3("media", ""),
            &[
                ("shop".into(), s3("media", "shop/")),
                ("bank".into(), s3("bank-media", "")),
                ("same-as-global".into(), s3("media", "")),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            archives.all().len(),
            3,
            "global, shop's prefix, bank's bucket"
        );
        assert_eq!(archives.stores().len(), 2, "one client per bucket");
        assert_eq!(archives.of("shop").layout, Layout::new("shop/"));
        assert_eq!(
            archives.of("bank").description,
            "s3 bucket bank-media (prefix \"\")"
        );
        assert_eq!(archives.of("unlisted").layout, Layout::default());
        assert!(Arc::ptr_eq(
            &archives.of("same-as-global").store,
            &archives.of("unlisted").store
        ));
        assert!(Arc::ptr_eq(
            &archives.of("shop").store,
            &archives.of("unlisted").store
        ));
        assert!(!Arc::ptr_eq(
            &archives.of("bank").store,
            &archives.of("unlisted").store
        ));
    }

    #[tokio::test]
    async fn fs_archives_are_one_per_folder() {
        let dir = tempfile::tempdir().unwrap();
        let fs = |name: &str| StorageSettings::Fs {
            path: dir.path().join(name),
        };
        let archives = Archives::open(
            &fs("all"),
            &[
                ("a".into(), fs("a")),
                ("b".into(), fs("all")),
                ("d".into(), fs("a/../all")),
            ],
        )
        .await
        .unwrap();
        assert_eq!(archives.all().len(), 2);
        assert!(Arc::ptr_eq(
            &archives.of("b").store,
            &archives.of("c").store
        ));
        assert!(dir.path().join("a").is_dir(), "opened (created)");
        assert!(
            Arc::ptr_eq(&archives.of("d").store, &archives.of("c").store),
            "one folder, two spellings"
        );
    }

    fn s3_with(config: S3Config) -> StorageSettings {
        StorageConfig::S3(S3Config {
            bucket: "media".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            ..config
        })
        .validate()
        .unwrap()
    }

    /// An archive that differs only in its URLs' lifetime is the same data:
    /// scrubbed once, pinged once, but presigning with its own lifetime.
    #[tokio::test]
    async fn a_different_presign_ttl_is_its_own_archive_but_the_same_data() {
        let archives = Archives::open(
            &s3_with(S3Config::default()),
            &[(
                "shop".into(),
                s3_with(S3Config {
                    presign_ttl: Duration::from_secs(600),
                    ..S3Config::default()
                }),
            )],
        )
        .await
        .unwrap();
        assert_eq!(archives.of("shop").presign_ttl, Duration::from_secs(600));
        assert_eq!(archives.of("other").presign_ttl, Duration::from_secs(3600));
        assert_eq!(archives.all().len(), 1);
        assert_eq!(archives.stores().len(), 1);
    }
}
