//! What every `ObjectStore` must do. Each case takes a [`Backend`]: the store
//! under test plus a way to read an object back outside the trait.

use std::path::Path;

use archiver_core::{Classify, ErrorClass, Sha256Digest, StagedFile};
use s3_uploader::{Layout, ObjectStore, PutOutcome, StoreError};
use sha2::{Digest, Sha256};

/// The store under test.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    fn store(&self) -> &dyn ObjectStore;
    /// Reads an object whole, bypassing the trait; `None` if absent.
    async fn read_object(&self, key: &str) -> Option<Vec<u8>>;
    /// Where staged files are written.
    fn spool(&self) -> &Path;
}

pub(crate) const MIB: usize = 1024 * 1024;

/// Deterministic, incompressible-looking bytes (xorshift64).
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub(crate) fn sha256(bytes: &[u8]) -> Sha256Digest {
    Sha256Digest::from_bytes(Sha256::digest(bytes).into())
}

/// Writes `bytes` to a fresh spool file and describes it truthfully.
pub(crate) fn stage(spool: &Path, bytes: &[u8]) -> StagedFile {
    let path = tempfile::Builder::new()
        .prefix("staged-")
        .tempfile_in(spool)
        .unwrap()
        .into_temp_path()
        .keep()
        .unwrap();
    std::fs::write(&path, bytes).unwrap();
    StagedFile {
        path,
        size: bytes.len() as u64,
        sha256: sha256(bytes),
    }
}

fn layout() -> Layout {
    Layout::new("archive")
}

pub(crate) async fn small_blob_round_trip(b: &dyn Backend) {
    let bytes = b"a small jpeg, honestly".to_vec();
    let file = stage(b.spool(), &bytes);
    let key = layout().blob_key(&file.sha256, Some("image/jpeg"));
    assert!(key.ends_with(".jpg"));
    let outcome = b
        .store()
        .put_blob(&key, &file, Some("image/jpeg"))
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Stored);
    assert_eq!(b.read_object(&key).await.as_deref(), Some(&bytes[..]));
    assert_eq!(b.store().get_small(&key).await.unwrap(), Some(bytes));
}

pub(crate) async fn empty_blob_round_trip(b: &dyn Backend) {
    let file = stage(b.spool(), b"");
    let key = layout().blob_key(&file.sha256, None);
    let outcome = b.store().put_blob(&key, &file, None).await.unwrap();
    assert_eq!(outcome, PutOutcome::Stored);
    assert_eq!(b.read_object(&key).await, Some(Vec::new()));
}

pub(crate) async fn same_key_again_is_already_present(b: &dyn Backend) {
    let bytes = pseudo_random(1000, 7);
    let first = stage(b.spool(), &bytes);
    let key = layout().blob_key(&first.sha256, Some("application/pdf"));
    assert_eq!(
        b.store().put_blob(&key, &first, None).await.unwrap(),
        PutOutcome::Stored
    );
    let again = stage(b.spool(), &bytes);
    assert_eq!(
        b.store().put_blob(&key, &again, None).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(b.read_object(&key).await, Some(bytes));
}

/// 20 MiB: more than two parts at the default 8 MiB part size.
pub(crate) async fn large_blob_is_stored_intact(b: &dyn Backend) {
    let bytes = pseudo_random(20 * MIB + 123, 42);
    let file = stage(b.spool(), &bytes);
    drop(bytes);
    let key = layout().blob_key(&file.sha256, Some("video/mp4"));
    assert_eq!(
        b.store()
            .put_blob(&key, &file, Some("video/mp4"))
            .await
            .unwrap(),
        PutOutcome::Stored
    );
    let back = b.read_object(&key).await.expect("object stored");
    assert_eq!(back.len() as u64, file.size);
    assert_eq!(sha256(&back), file.sha256);
}

pub(crate) async fn spool_that_does_not_match_its_hash_is_refused(b: &dyn Backend) {
    let mut file = stage(b.spool(), b"the bytes on disk");
    file.sha256 = sha256(b"the bytes the fetch step claims");
    let key = layout().blob_key(&file.sha256, None);
    let err = b.store().put_blob(&key, &file, None).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert_eq!(b.read_object(&key).await, None, "unverified object visible");
}

pub(crate) async fn large_spool_that_does_not_match_its_hash_is_refused(b: &dyn Backend) {
    let mut file = stage(b.spool(), &pseudo_random(12 * MIB, 3));
    file.sha256 = sha256(b"something else");
    let key = layout().blob_key(&file.sha256, None);
    let err = b.store().put_blob(&key, &file, None).await.unwrap_err();
    assert!(matches!(err, StoreError::SpoolMismatch { .. }), "{err}");
    assert_eq!(b.read_object(&key).await, None, "unverified object visible");
}

pub(crate) async fn spool_shorter_than_recorded_is_refused(b: &dyn Backend) {
    let bytes = pseudo_random(10 * MIB, 5);
    let mut file = stage(b.spool(), &bytes[..9 * MIB]);
    file.size = bytes.len() as u64;
    file.sha256 = sha256(&bytes);
    let key = layout().blob_key(&file.sha256, None);
    let err = b.store().put_blob(&key, &file, None).await.unwrap_err();
    assert!(!err.class().is_retryable(), "{err}");
    assert_eq!(b.read_object(&key).await, None);
}

pub(crate) async fn manifest_is_overwritten(b: &dyn Backend) {
    let key = layout().manifest_key("green-main", 1_767_227_400_000, "wamid.A+B/C==");
    assert_eq!(
        key,
        "archive/messages/green-main/2026/01/01/wamid.A%2BB%2FC==.json"
    );
    assert_eq!(b.store().get_small(&key).await.unwrap(), None);
    b.store().put_manifest(&key, br#"{"v":1}"#).await.unwrap();
    assert_eq!(
        b.store().get_small(&key).await.unwrap().as_deref(),
        Some(&br#"{"v":1}"#[..])
    );
    b.store()
        .put_manifest(&key, br#"{"v":2,"longer":true}"#)
        .await
        .unwrap();
    assert_eq!(
        b.store().get_small(&key).await.unwrap().as_deref(),
        Some(&br#"{"v":2,"longer":true}"#[..])
    );
}

pub(crate) async fn bad_keys_are_rejected(b: &dyn Backend) {
    let file = stage(b.spool(), b"x");
    for key in ["", "../escape", "/abs", "a//b", "a/./b"] {
        let err = b.store().put_blob(key, &file, None).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidKey { .. }),
            "{key:?}: {err}"
        );
        assert_eq!(err.class(), ErrorClass::Permanent);
        let err = b.store().put_manifest(key, b"{}").await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidKey { .. }),
            "{key:?}: {err}"
        );
        let err = b.store().get_small(key).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidKey { .. }),
            "{key:?}: {err}"
        );
    }
}

pub(crate) async fn ping_succeeds(b: &dyn Backend) {
    b.store().ping().await.unwrap();
    assert!(["fs", "s3"].contains(&b.store().backend_name()));
}
