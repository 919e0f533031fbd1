//! The suite against [`FsStore`], plus what only a local folder can show.

use std::path::Path;

use s3_uploader::{FsStore, Layout, ObjectStore, PutOutcome};

use crate::suite::{self, Backend};

pub(crate) struct FsBackend {
    store: FsStore,
    root: tempfile::TempDir,
    spool: tempfile::TempDir,
}

#[async_trait::async_trait]
impl Backend for FsBackend {
    fn store(&self) -> &dyn ObjectStore {
        &self.store
    }

    async fn read_object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.path().join(key)).ok()
    }

    fn spool(&self) -> &Path {
        self.spool.path()
    }

    async fn overwrite_object(&self, key: &str, bytes: &[u8]) {
        std::fs::write(self.root.path().join(key), bytes).unwrap();
    }
}

async fn fs_backend() -> Option<FsBackend> {
    let root = tempfile::tempdir().unwrap();
    // The spool beside the archive, on the same filesystem, as in production.
    let spool = tempfile::tempdir_in(root.path().parent().unwrap()).unwrap();
    Some(FsBackend {
        store: FsStore::open(root.path()).unwrap(),
        root,
        spool,
    })
}

crate::conformance_tests!(fs_backend);

#[tokio::test]
async fn same_filesystem_put_moves_the_spool_file_and_leaves_no_temp_files() {
    let b = fs_backend().await.unwrap();
    let file = suite::stage(b.spool(), b"moved, not copied");
    let key = Layout::default().blob_key(&file.sha256, Some("text/plain"));
    assert_eq!(
        b.store.put_blob(&key, &file, None).await.unwrap(),
        PutOutcome::Stored
    );
    assert!(
        !file.location().exists(),
        "same-filesystem put renames the staged file"
    );
    assert_eq!(
        std::fs::read(b.root.path().join(&key)).unwrap(),
        b"moved, not copied"
    );
    b.store.put_manifest("m/x.json", b"{}").await.unwrap();
    b.store.ping().await.unwrap();
    let leftovers = std::fs::read_dir(b.root.path().join(".tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn tmp_dir_is_reserved() {
    let b = fs_backend().await.unwrap();
    assert!(b.store.put_manifest(".tmp/x", b"{}").await.is_err());
}

#[tokio::test]
async fn ping_fails_when_the_root_is_gone() {
    let b = fs_backend().await.unwrap();
    std::fs::remove_dir_all(b.root.path()).unwrap();
    assert!(b.store.ping().await.is_err());
}

#[tokio::test]
async fn streams_that_end_refused_dropped_or_stored_leave_no_temp_files() {
    let b = fs_backend().await.unwrap();
    let temp_files = || {
        std::fs::read_dir(b.root.path().join(".tmp"))
            .unwrap()
            .count()
    };
    let bytes = suite::pseudo_random(3 * suite::MIB, 71);
    let key = Layout::default().blob_key(&suite::sha256(&bytes), None);

    let mut refused = suite::begin(&b, &key, suite::sha256(b"other")).await;
    suite::write_chunked(&mut refused, &bytes).await;
    refused.finish().await.unwrap();
    let mut dropped = suite::begin(&b, &key, suite::sha256(&bytes)).await;
    suite::write_chunked(&mut dropped, &bytes[..suite::MIB]).await;
    assert_eq!(temp_files(), 1, "the stream writes into .tmp");
    drop(dropped);
    assert_eq!(temp_files(), 0);

    let mut stored = suite::begin(&b, &key, suite::sha256(&bytes)).await;
    suite::write_chunked(&mut stored, &bytes).await;
    stored.finish().await.unwrap();
    assert_eq!(temp_files(), 0, "renamed into place");
    assert_eq!(std::fs::read(b.root.path().join(&key)).unwrap(), bytes);
}
