//! Reading back what the daemon archived, the same calls whether the store
//! is a folder or an S3 bucket: keys, objects, manifests, and the check
//! that a file was archived whole under its hash with a manifest pointing
//! at it (storage layout: `blobs/sha256/{h[0..2]}/{h}{ext}` and
//! `messages/{account}/YYYY/MM/DD/{message_id}.json`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::StoreUnderTest;
use crate::sha256_hex;

/// The archive of a daemon under test (cheap to clone: a path, or an S3
/// client and a bucket name).
#[derive(Debug, Clone)]
pub struct Archive {
    store: Store,
}

#[derive(Debug, Clone)]
enum Store {
    Fs(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
}

/// The key of the blob holding `content` when its type's extension is
/// `ext` (`".jpg"`, or `""`).
pub fn blob_key(content: &[u8], ext: &str) -> String {
    let hash = sha256_hex(content);
    format!("blobs/sha256/{}/{hash}{ext}", &hash[..2])
}

impl Archive {
    /// The archive a daemon started with [`crate::config()`]`(store, ..)`
    /// in `workdir` writes to: `workdir/data/archive`, or the bucket.
    pub fn of(store: &StoreUnderTest, workdir: &Path) -> Self {
        match store {
            StoreUnderTest::Fs => Self::fs(&workdir.join("data/archive")),
            StoreUnderTest::S3 {
                endpoint,
                bucket,
                access_key_id,
                secret_access_key,
            } => {
                let credentials = aws_sdk_s3::config::Credentials::new(
                    access_key_id,
                    secret_access_key,
                    None,
                    None,
                    "e2e",
                );
                let config = aws_sdk_s3::config::Builder::new()
                    .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                    .region(aws_sdk_s3::config::Region::new("us-east-1"))
                    .endpoint_url(endpoint)
                    .force_path_style(true)
                    .credentials_provider(credentials)
                    .build();
                Archive {
                    store: Store::S3 {
                        client: aws_sdk_s3::Client::from_conf(config),
                        bucket: bucket.clone(),
                    },
                }
            }
        }
    }

    /// A folder archive at `root` (a `storage.path` of a test's choosing).
    pub fn fs(root: &Path) -> Self {
        Archive {
            store: Store::Fs(root.to_owned()),
        }
    }

    /// Every key under `prefix`, or why they could not be listed.
    pub async fn try_keys(&self, prefix: &str) -> Result<Vec<String>, String> {
        match &self.store {
            Store::Fs(root) => Ok(test_support::files_under(root)
                .iter()
                .filter_map(|path| path.strip_prefix(root).ok())
                .map(|relative| relative.to_string_lossy().replace('\\', "/"))
                .filter(|key| key.starts_with(prefix))
                .collect()),
            Store::S3 { client, bucket } => {
                let mut keys = Vec::new();
                let mut token = None;
                loop {
                    let page = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(prefix)
                        .set_continuation_token(token)
                        .send()
                        .await
                        .map_err(|e| format!("list {prefix}: {e:?}"))?;
                    keys.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key())
                            .map(str::to_owned),
                    );
                    match page.next_continuation_token() {
                        Some(next) if page.is_truncated() == Some(true) => {
                            token = Some(next.to_owned());
                        }
                        _ => return Ok(keys),
                    }
                }
            }
        }
    }

    /// Every key under `prefix`; panics when they cannot be listed.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        self.try_keys(prefix)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An object's bytes, or why it could not be read.
    pub async fn try_get(&self, key: &str) -> Result<Vec<u8>, String> {
        match &self.store {
            Store::Fs(root) => std::fs::read(root.join(key)).map_err(|e| format!("{key}: {e}")),
            Store::S3 { client, bucket } => {
                let object = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| format!("{key}: {e:?}"))?;
                let body = object
                    .body
                    .collect()
                    .await
                    .map_err(|e| format!("{key}: {e}"))?;
                Ok(body.into_bytes().to_vec())
            }
        }
    }

    /// An object's bytes; panics naming the key when it cannot be read.
    pub async fn get(&self, key: &str) -> Vec<u8> {
        self.try_get(key).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// An object's user metadata (`x-amz-meta-*`); S3 only.
    pub async fn user_metadata(&self, key: &str) -> HashMap<String, String> {
        let Store::S3 { client, bucket } = &self.store else {
            panic!("a folder archive keeps no object metadata");
        };
        let head = client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        head.metadata().cloned().unwrap_or_default()
    }

    /// Writes `bytes` at `key`, behind the daemon's back (rot, tampering).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        match &self.store {
            Store::Fs(root) => {
                std::fs::write(root.join(key), bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
            }
            Store::S3 { client, bucket } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(bytes.into())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{key}: {e:?}"));
            }
        }
    }

    /// Deletes `key`, behind the daemon's back.
    pub async fn remove(&self, key: &str) {
        match &self.store {
            Store::Fs(root) => {
                std::fs::remove_file(root.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
            }
            Store::S3 { client, bucket } => {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{key}: {e:?}"));
            }
        }
    }

    /// The manifest archived for `message_id` of `account`, if any.
    pub async fn manifest(&self, account: &str, message_id: &str) -> Option<Value> {
        let name = format!("/{}.json", key_segment(message_id));
        let keys = self.keys(&format!("messages/{account}/")).await;
        let key = keys.iter().find(|k| k.ends_with(&name))?;
        let manifest = self.get(key).await;
        Some(serde_json::from_slice(&manifest).unwrap_or_else(|e| panic!("{key}: {e}")))
    }

    /// Checks that `content` is archived under its hash with extension
    /// `ext`, byte for byte, and that the manifest of `message_id` on
    /// `account` points at it with its hash and size; returns the manifest
    /// for the provider-specific checks.
    pub async fn assert_archived(
        &self,
        account: &str,
        message_id: &str,
        content: &[u8],
        ext: &str,
    ) -> Value {
        let key = blob_key(content, ext);
        let stored = self.get(&key).await;
        assert!(
            stored == content,
            "{key}: archived bytes differ from the provider's"
        );
        let manifest = self
            .manifest(account, message_id)
            .await
            .unwrap_or_else(|| panic!("no manifest for {message_id} of {account}"));
        assert_eq!(manifest["sha256"], sha256_hex(content), "{manifest}");
        assert_eq!(manifest["blob_key"], key, "{manifest}");
        assert_eq!(manifest["size"], content.len(), "{manifest}");
        assert_eq!(manifest["message_id"], message_id, "{manifest}");
        assert_eq!(manifest["account"], account, "{manifest}");
        manifest
    }
}

/// An id as the storage layout writes it in a key (PRODUCT.md section 5,
/// the `s3-uploader` layout): every byte outside `[A-Za-z0-9._=-]` as
/// `%XX`, so that `false_1@c.us_3EB0` is `false_1%40c.us_3EB0`. Written
/// here again, independently, to check the durable format.
fn key_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
