//! The binary's answer to the receiver's [`MediaIndex`] and the notifier's
//! [`EventData`]: a done job's manifest, read from the archive, plus a
//! presigned URL where the store has URLs.
//!
//! A message may have more than one manifest: the first at
//! `{message_id}.json`, and one per other file under `{message_id}.d/`
//! (`s3_uploader::put_message_manifest`). A job's is the one naming its
//! media id (jobs of one message differ by media id), else the first; the
//! receiver lists each job's, so `GET /api/v1/media` shows them all.

use media_notify::EventData;
use retry_queue::{JobRecord, JobState};
use s3_uploader::{Archive, Archives, Manifest};
use webhook_receiver::{ArchivedMedia, MediaIndex};

/// Reads a job's manifests in its account's archive, at the layout's
/// keys; presigns blob URLs for the archive's `presign_ttl`.
#[derive(Debug)]
pub(crate) struct ArchiveIndex {
    pub(crate) archives: Archives,
}

#[async_trait::async_trait]
impl MediaIndex for ArchiveIndex {
    async fn archived(&self, job: &JobRecord) -> Result<Option<ArchivedMedia>, String> {
        let Some((manifest_key, manifest)) = self.manifest_of(job).await? else {
            return Ok(None);
        };
        let url = self.presigned(job, &manifest).await?;
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

/// The `data` of the events to the user's app (PRODUCT.md section 11): a
/// done job's manifest as stored plus `manifest_key` (and `url`), a dead
/// job as the admin API shows it.
#[async_trait::async_trait]
impl EventData for ArchiveIndex {
    async fn archived(
        &self,
        job: &JobRecord,
        include_url: bool,
    ) -> Result<Option<serde_json::Value>, String> {
        let Some((manifest_key, manifest)) = self.manifest_of(job).await? else {
            return Ok(None);
        };
        let url = if include_url {
            self.presigned(job, &manifest).await?
        } else {
            None
        };
        let mut data = serde_json::to_value(&manifest).map_err(|e| e.to_string())?;
        if let Some(fields) = data.as_object_mut() {
            fields.insert("manifest_key".into(), manifest_key.into());
            if let Some(url) = url {
                fields.insert("url".into(), url.into());
            }
        }
        Ok(Some(data))
    }

    fn dead(&self, job: &JobRecord, reason: Option<&str>) -> serde_json::Value {
        // As it died: it may have been retried since the event was committed.
        let mut data = webhook_receiver::job_json(job);
        if let Some(fields) = data.as_object_mut() {
            fields.insert("state".into(), JobState::Dead.as_str().into());
            fields.insert("last_error".into(), reason.into());
        }
        data
    }
}

impl ArchiveIndex {
    /// The job's manifest and its key: of the message's manifests, the one
    /// naming the job's media id (jobs of one message differ by it), else
    /// the first.
    async fn manifest_of(&self, job: &JobRecord) -> Result<Option<(String, Manifest)>, String> {
        let mut found = self.manifests_of(job).await?;
        if found.is_empty() {
            return Ok(None);
        }
        let this_job = job
            .media_id
            .as_ref()
            .and_then(|id| {
                found
                    .iter()
                    .position(|(_, m)| m.media_id.as_ref() == Some(id))
            })
            .unwrap_or(0);
        Ok(Some(found.swap_remove(this_job)))
    }

    /// A presigned GET URL of the manifest's blob, for the account's
    /// `presign_ttl` (`None` where the store has no URLs).
    async fn presigned(
        &self,
        job: &JobRecord,
        manifest: &Manifest,
    ) -> Result<Option<String>, String> {
        let archive = self.archives.of(&job.account);
        archive
            .store
            .presign_get(&manifest.blob_key, archive.presign_ttl)
            .await
            .map_err(|e| e.to_string())
    }

    /// The message's manifests with their keys: the first one, then those
    /// written beside it for other bytes, in key order.
    async fn manifests_of(&self, job: &JobRecord) -> Result<Vec<(String, Manifest)>, String> {
        use futures_util::TryStreamExt as _;
        let (account, at, id) = (&job.account, job.message_at, &job.message_id);
        let Archive { store, layout, .. } = self.archives.of(account);
        let mut keys = vec![layout.manifest_key(account, at, id)];
        let others = layout.other_manifests_prefix(account, at, id);
        let mut pages = store.list(&others, s3_uploader::MAX_LIST_PAGE);
        while let Some(page) = pages.try_next().await.map_err(|e| e.to_string())? {
            keys.extend(page.into_iter().map(|o| o.key));
        }
        let mut out = Vec::new();
        for key in keys {
            let Some(bytes) = store.get_small(&key).await.map_err(|e| e.to_string())? else {
                continue;
            };
            let manifest: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| format!("manifest {key} is unreadable: {e}"))?;
            out.push((key, manifest));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archiver_core::{JobState, ProviderKind};
    use s3_uploader::{FsStore, Layout, ObjectStore, Verification, put_message_manifest};
    use std::sync::Arc;
    use std::time::Duration;

    const AT: i64 = 1_767_227_400_000;

    fn job(media_id: &str) -> JobRecord {
        JobRecord {
            id: format!("evo:{media_id}"),
            account: "evo".into(),
            provider: ProviderKind::Evolution,
            state: JobState::Done,
            attempts: 1,
            deadline: i64::MAX,
            next_attempt_at: 0,
            last_error: None,
            created_at: 0,
            updated_at: 0,
            message_id: "m1".into(),
            media_id: Some(media_id.into()),
            message_at: AT,
            payload: serde_json::Value::Null,
        }
    }

    /// A manifest of `media_id` for a file whose sha256 is `[byte; 32]`.
    fn manifest(layout: &Layout, media_id: &str, byte: u8) -> Manifest {
        let sha256 = archiver_core::Sha256Digest::from_bytes([byte; 32]);
        Manifest {
            provider: "evolution".into(),
            account: "evo".into(),
            chat_id: None,
            message_id: "m1".into(),
            media_id: Some(media_id.into()),
            sender: None,
            direction: None,
            message_timestamp: "2026-01-01T00:30:00Z".into(),
            mime_type: None,
            file_name: None,
            caption: None,
            size: 1,
            sha256,
            blob_key: layout.blob_key(&sha256, None),
            provider_sha256: None,
            verification: Verification::ComputedOnly,
            archived_at: "2026-01-01T00:31:00Z".into(),
        }
    }

    #[tokio::test]
    async fn each_job_of_a_message_finds_its_own_manifest_when_the_bytes_differ() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::default();
        let store: Arc<dyn ObjectStore> = Arc::new(FsStore::open(root.path()).unwrap());
        let index = ArchiveIndex {
            archives: Archives::from(Archive {
                store: store.clone(),
                layout: layout.clone(),
                presign_ttl: Duration::from_secs(60),
                description: "fs (test)".into(),
                store_id: "fs:test".into(),
                object_lock: None,
            }),
        };
        let (first, second) = (
            manifest(&layout, "media-1", 1),
            manifest(&layout, "media-2", 2),
        );
        for m in [&first, &second] {
            put_message_manifest(store.as_ref(), &layout, m, AT)
                .await
                .unwrap();
        }

        let one = MediaIndex::archived(&index, &job("media-1"))
            .await
            .unwrap()
            .unwrap();
        let two = MediaIndex::archived(&index, &job("media-2"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one.sha256, first.sha256.to_hex());
        assert_eq!(one.manifest_key, layout.manifest_key("evo", AT, "m1"));
        assert_eq!(two.sha256, second.sha256.to_hex());
        assert_eq!(
            two.manifest_key,
            layout.other_manifest_key("evo", AT, "m1", &second.sha256)
        );
    }
}
