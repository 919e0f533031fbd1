//! The binary's answer to the receiver's [`MediaIndex`]: a done job's
//! manifest, read from the archive, plus a presigned URL where the store
//! has URLs.

use std::sync::Arc;
use std::time::Duration;

use retry_queue::JobRecord;
use s3_uploader::{Layout, Manifest, ObjectStore};
use webhook_receiver::{ArchivedMedia, MediaIndex};

/// Reads manifests at the layout's keys; presigns blob URLs for `ttl`.
#[derive(Debug)]
pub(crate) struct ArchiveIndex {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) layout: Layout,
    /// `storage.s3.presign_ttl` (validated: at most 7 days).
    pub(crate) presign_ttl: Duration,
}

#[async_trait::async_trait]
impl MediaIndex for ArchiveIndex {
    async fn archived(&self, job: &JobRecord) -> Result<Option<ArchivedMedia>, String> {
        let manifest_key = self
            .layout
            .manifest_key(&job.account, job.message_at, &job.message_id);
        let Some(bytes) = self
            .store
            .get_small(&manifest_key)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest {manifest_key} is unreadable: {e}"))?;
        let url = self
            .store
            .presign_get(&manifest.blob_key, self.presign_ttl)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(ArchivedMedia {
            blob_key: manifest.blob_key,
            manifest_key,
            sha256: manifest.sha256.to_hex(),
            size: manifest.size,
            mime_type: manifest.mime_type,
            verified: manifest.verification.checked_against_provider(),
            verification: manifest.verification.as_str().to_owned(),
            url,
        }))
    }
}
