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

crate::conformance_tests!(
    fs_backend;
    small_blob_round_trip,
    empty_blob_round_trip,
    same_key_again_is_already_present,
    large_blob_is_stored_intact,
    spool_that_does_not_match_its_hash_is_refused,
    large_spool_that_does_not_match_its_hash_is_refused,
    spool_shorter_than_recorded_is_refused,
    manifest_is_overwritten,
    bad_keys_are_rejected,
    a_manifest_for_other_bytes_goes_beside_never_over,
    a_key_segment_too_long_for_a_file_name_is_permanent,
    ping_succeeds,
    listing_pages_through_a_prefix_in_key_order,
    read_hashed_and_size_of_measure_stored_objects,
    read_hashed_sees_bytes_changed_behind_the_store,
    presign_get_downloads_the_object_or_is_none,
);

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
        !file.path.exists(),
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
