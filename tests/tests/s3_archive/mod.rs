//! Reading back what the daemon archived in Garage, for the end-to-end tests
//! of the Baileys-based gateways and NXCloud (`mod s3_archive;` in each).

#![allow(dead_code)] // each test binary uses a different part

use serde_json::Value;
use test_support::garage::Garage;

/// The bucket of one test's Garage.
pub(crate) struct Archive {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl Archive {
    pub(crate) async fn new(garage: &Garage) -> Self {
        let store = e2e::StoreUnderTest::garage(garage);
        Self {
            client: e2e::s3_client(&store).await,
            bucket: garage.bucket.clone(),
        }
    }

    /// Every key under `prefix`.
    pub(crate) async fn keys(&self, prefix: &str) -> Vec<String> {
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list objects");
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// An object's bytes.
    pub(crate) async fn get(&self, key: &str) -> Vec<u8> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        object.body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// The manifest of `message_id` on `account`.
    pub(crate) async fn manifest(&self, account: &str, message_id: &str) -> Value {
        let keys = self.keys(&format!("messages/{account}/")).await;
        let key = keys
            .iter()
            .find(|k| k.ends_with(&format!("/{message_id}.json")))
            .unwrap_or_else(|| panic!("no manifest for {message_id} in {keys:?}"));
        serde_json::from_slice(&self.get(key).await).unwrap()
    }

    /// Checks that `content` is archived under its hash with extension
    /// `ext`, that the manifest of `message_id` points at it, and returns
    /// the manifest.
    pub(crate) async fn assert_archived(
        &self,
        account: &str,
        message_id: &str,
        content: &[u8],
        ext: &str,
    ) -> Value {
        let hash = e2e::sha256_hex(content);
        let key = format!("blobs/sha256/{}/{hash}{ext}", &hash[..2]);
        let stored = self.get(&key).await;
        assert!(
            stored == content,
            "{key}: archived bytes differ from the plaintext"
        );
        let manifest = self.manifest(account, message_id).await;
        assert_eq!(manifest["sha256"], hash);
        assert_eq!(manifest["blob_key"], key);
        assert_eq!(manifest["size"], content.len());
        assert_eq!(manifest["message_id"], message_id);
        assert_eq!(manifest["account"], account);
        manifest
    }
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
