//! What every `ObjectStore` must do. Each case takes a [`Backend`]: the store
//! under test plus a way to read an object back outside the trait.

use std::path::Path;

use std::time::Duration;

use archiver_core::{Classify, ErrorClass, Sha256Digest, StagedBody, StagedFile};
use futures_util::StreamExt as _;
use s3_uploader::{
    Layout, Manifest, ObjectDigest, ObjectInfo, ObjectStore, PutOutcome, StoreError, Verification,
    put_message_manifest,
};
use sha2::{Digest, Sha256};

/// The store under test.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    fn store(&self) -> &dyn ObjectStore;
    /// Reads an object whole, bypassing the trait; `None` if absent.
    async fn read_object(&self, key: &str) -> Option<Vec<u8>>;
    /// Where staged files are written.
    fn spool(&self) -> &Path;
    /// Replaces an object's bytes behind the store's back (bit rot, a
    /// careless operator), bypassing the trait.
    async fn overwrite_object(&self, key: &str, bytes: &[u8]);
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
        body: StagedBody::Spool(path),
        size: bytes.len() as u64,
        sha256: sha256(bytes),
    }
}

/// `bytes` staged in memory, as the fetch step leaves a small download.
pub(crate) fn stage_in_memory(bytes: &[u8]) -> StagedFile {
    StagedFile {
        body: StagedBody::Memory(bytes::Bytes::copy_from_slice(bytes)),
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

pub(crate) async fn blob_staged_in_memory_round_trip(b: &dyn Backend) {
    let bytes = pseudo_random(300 * 1024, 11);
    let file = stage_in_memory(&bytes);
    let key = layout().blob_key(&file.sha256, Some("image/jpeg"));
    let outcome = b
        .store()
        .put_blob(&key, &file, Some("image/jpeg"))
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Stored);
    assert_eq!(b.read_object(&key).await, Some(bytes.clone()));
    // The same content again, from memory or from a spool file: nothing
    // changes.
    b.store().put_blob(&key, &file, None).await.unwrap();
    b.store()
        .put_blob(&key, &stage(b.spool(), &bytes), None)
        .await
        .unwrap();
    assert_eq!(b.read_object(&key).await, Some(bytes));
}

pub(crate) async fn memory_bytes_that_are_not_their_recorded_size_are_refused(b: &dyn Backend) {
    let mut file = stage_in_memory(b"nine byte");
    file.size = 10;
    let key = layout().blob_key(&file.sha256, None);
    let err = b.store().put_blob(&key, &file, None).await.unwrap_err();
    assert!(matches!(err, StoreError::SpoolMismatch { .. }), "{err}");
    assert_eq!(b.read_object(&key).await, None, "nothing became visible");
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

fn manifest_of(file: &StagedFile, media_id: &str) -> Manifest {
    Manifest {
        provider: "evolution".into(),
        account: "evo".into(),
        chat_id: None,
        message_id: "wamid.A+B/C==".into(),
        media_id: Some(media_id.into()),
        sender: None,
        direction: None,
        message_timestamp: "2026-01-01T00:30:00Z".into(),
        mime_type: None,
        file_name: None,
        caption: None,
        size: file.size,
        sha256: file.sha256,
        blob_key: layout().blob_key(&file.sha256, None),
        provider_sha256: None,
        verification: Verification::ComputedOnly,
        archived_at: "2026-01-01T00:31:00Z".into(),
    }
}

pub(crate) async fn a_manifest_for_other_bytes_goes_beside_never_over(b: &dyn Backend) {
    let at = 1_767_227_400_000;
    let (first, second) = (stage(b.spool(), b"first"), stage(b.spool(), b"second"));
    let l = layout();
    let put = |m: Manifest| async move {
        put_message_manifest(b.store(), &layout(), &m, at)
            .await
            .unwrap()
    };
    let primary = put(manifest_of(&first, "media-1")).await;
    assert_eq!(primary, l.manifest_key("evo", at, "wamid.A+B/C=="));

    // The same bytes again (a retry, a redelivery): the same key.
    assert_eq!(put(manifest_of(&first, "media-1")).await, primary);

    // Other bytes for the same message: beside, under a name derived from
    // the message id and the new sha256.
    let other = put(manifest_of(&second, "media-2")).await;
    assert_eq!(
        other,
        l.other_manifest_key("evo", at, "wamid.A+B/C==", &second.sha256)
    );
    assert_eq!(
        other,
        format!(
            "archive/messages/evo/2026/01/01/wamid.A%2BB%2FC==.d/{}.json",
            second.sha256.to_hex()
        )
    );
    let read = |key: String| async move {
        let bytes = b.read_object(&key).await.expect("manifest written");
        serde_json::from_slice::<Manifest>(&bytes).unwrap()
    };
    assert_eq!(
        read(primary.clone()).await.sha256,
        first.sha256,
        "first kept"
    );
    assert_eq!(read(other.clone()).await.sha256, second.sha256);
    // And again: still beside, still the same name.
    assert_eq!(put(manifest_of(&second, "media-2")).await, other);
    assert_eq!(read(primary).await.sha256, first.sha256);

    // Both are found by listing the message's keys.
    let listed: Vec<String> = b
        .store()
        .list(&l.other_manifests_prefix("evo", at, "wamid.A+B/C=="), 100)
        .map(|page| page.unwrap())
        .concat()
        .await
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, vec![other]);
}

pub(crate) async fn a_key_segment_too_long_for_a_file_name_is_permanent(b: &dyn Backend) {
    // Percent-encoding makes 90 `/` into 270 bytes: more than a file name
    // can hold on ext4, XFS or btrfs.
    let message_id = "/".repeat(90);
    let key = layout().manifest_key("evo", 0, &message_id);
    let err = b.store().put_manifest(&key, b"{}").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
    let file = stage(b.spool(), b"x");
    let key = format!("{}/blob", "k".repeat(256));
    let err = b.store().put_blob(&key, &file, None).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
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

/// Every page of a listing, each checked against `page_size`.
async fn list_all(b: &dyn Backend, prefix: &str, page_size: usize) -> Vec<ObjectInfo> {
    let mut pages = b.store().list(prefix, page_size);
    let mut all = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("list {prefix:?}: {e}"));
        assert!(!page.is_empty(), "empty page listing {prefix:?}");
        let max = page_size.clamp(1, s3_uploader::MAX_LIST_PAGE);
        assert!(page.len() <= max, "page of {} > {max}", page.len());
        all.extend(page);
    }
    all
}

fn keys(objects: &[ObjectInfo]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

/// Listing streams pages of at most `page_size` objects in bytewise key
/// order (a directory sorts as its name plus `/`, as S3 sorts keys), and
/// only the keys under the prefix, which need not end at a `/`.
pub(crate) async fn listing_pages_through_a_prefix_in_key_order(b: &dyn Backend) {
    let mut blobs = Vec::new();
    for i in 0..7u64 {
        let bytes = pseudo_random(100 + i as usize * 10, 100 + i);
        let file = stage(b.spool(), &bytes);
        let key = layout().blob_key(&file.sha256, Some("image/jpeg"));
        b.store().put_blob(&key, &file, None).await.unwrap();
        blobs.push(ObjectInfo {
            key,
            size: bytes.len() as u64,
        });
    }
    blobs.sort_by(|a, b| a.key.cmp(&b.key));
    let day = 1_767_227_400_000;
    let manifests: Vec<String> = ["m1", "m10", "m2"]
        .iter()
        .map(|m| layout().manifest_key("acc", day, m))
        .collect();
    for key in &manifests {
        b.store().put_manifest(key, b"{}").await.unwrap();
    }
    // Outside the prefix, one of them sorting before it ('-' < '/').
    b.store()
        .put_manifest("archive-sibling.json", b"{}")
        .await
        .unwrap();
    b.store()
        .put_manifest("zzz/outside.json", b"{}")
        .await
        .unwrap();

    let listed = list_all(b, "archive/blobs/", 3).await;
    assert_eq!(listed, blobs, "blobs, in key order, with sizes");
    let mut pages = b.store().list("archive/blobs/", 3);
    let mut page_count = 0;
    while let Some(page) = pages.next().await {
        page.unwrap();
        page_count += 1;
    }
    assert_eq!(page_count, 3, "7 objects in pages of 3");

    let everything = list_all(b, "", 1000).await;
    let mut expected: Vec<String> = blobs.iter().map(|o| o.key.clone()).collect();
    expected.extend(manifests.iter().cloned());
    expected.push("archive-sibling.json".into());
    expected.push("zzz/outside.json".into());
    expected.sort();
    assert_eq!(keys(&everything), expected, "the whole store, in key order");
    assert_eq!(
        keys(&everything)[0],
        "archive-sibling.json",
        "keys sort bytewise, not folders first"
    );

    let m1 = layout().manifest_key("acc", day, "m1");
    let partial = m1.trim_end_matches(".json");
    assert_eq!(
        keys(&list_all(b, partial, 10).await),
        [m1.clone(), layout().manifest_key("acc", day, "m10")],
        "a prefix that ends inside a name"
    );
    assert!(list_all(b, "archive/nothing/", 10).await.is_empty());
    assert_eq!(
        list_all(b, "archive/messages/", 0).await.len(),
        3,
        "a page size of 0 is taken as 1"
    );

    let mut bad = b.store().list("/abs", 10);
    let err = bad.next().await.expect("an error item").unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
}

/// `read_hashed` streams an object of any size and measures it; `size_of`
/// answers without reading; both say `None` for a missing key.
pub(crate) async fn read_hashed_and_size_of_measure_stored_objects(b: &dyn Backend) {
    let bytes = pseudo_random(20 * MIB + 7, 77);
    let file = stage(b.spool(), &bytes);
    let key = layout().blob_key(&file.sha256, Some("video/mp4"));
    b.store().put_blob(&key, &file, None).await.unwrap();
    assert_eq!(
        b.store().read_hashed(&key).await.unwrap(),
        Some(ObjectDigest {
            size: bytes.len() as u64,
            sha256: sha256(&bytes),
        })
    );
    assert_eq!(
        b.store().size_of(&key).await.unwrap(),
        Some(bytes.len() as u64)
    );
    drop(bytes);

    let empty = stage(b.spool(), b"");
    let key = layout().blob_key(&empty.sha256, None);
    b.store().put_blob(&key, &empty, None).await.unwrap();
    assert_eq!(
        b.store().read_hashed(&key).await.unwrap(),
        Some(ObjectDigest {
            size: 0,
            sha256: sha256(b""),
        })
    );

    let manifest = layout().manifest_key("acc", 0, "m");
    b.store()
        .put_manifest(&manifest, b"{\"a\":1}")
        .await
        .unwrap();
    assert_eq!(
        b.store()
            .read_hashed(&manifest)
            .await
            .unwrap()
            .map(|d| d.sha256),
        Some(sha256(b"{\"a\":1}"))
    );

    let missing = layout().blob_key(&sha256(b"never stored"), None);
    assert_eq!(b.store().read_hashed(&missing).await.unwrap(), None);
    assert_eq!(b.store().size_of(&missing).await.unwrap(), None);
    for bad in ["", "../x", "/abs"] {
        assert!(matches!(
            b.store().read_hashed(bad).await,
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            b.store().size_of(bad).await,
            Err(StoreError::InvalidKey { .. })
        ));
    }
}

/// Bytes changed behind the store's back are what `read_hashed` reports:
/// a scrub sees the damage.
pub(crate) async fn read_hashed_sees_bytes_changed_behind_the_store(b: &dyn Backend) {
    let bytes = pseudo_random(64 * 1024, 5);
    let file = stage(b.spool(), &bytes);
    let key = layout().blob_key(&file.sha256, Some("application/pdf"));
    b.store().put_blob(&key, &file, None).await.unwrap();
    let mut rotten = bytes.clone();
    rotten[1000] ^= 0x01;
    b.overwrite_object(&key, &rotten).await;
    let measured = b.store().read_hashed(&key).await.unwrap().unwrap();
    assert_eq!(measured.size, bytes.len() as u64);
    assert_eq!(measured.sha256, sha256(&rotten));
    assert_ne!(measured.sha256, file.sha256);
}

/// `presign_get` gives a URL that downloads exactly the object without
/// credentials on backends that have URLs (s3), and `None` on those that
/// do not (fs).
pub(crate) async fn presign_get_downloads_the_object_or_is_none(b: &dyn Backend) {
    let file = stage(b.spool(), b"presigned bytes");
    let key = layout().blob_key(&file.sha256, Some("text/plain"));
    b.store()
        .put_blob(&key, &file, Some("text/plain"))
        .await
        .unwrap();
    let url = b
        .store()
        .presign_get(&key, Duration::from_secs(300))
        .await
        .unwrap();
    match b.store().backend_name() {
        "fs" => assert_eq!(url, None),
        _ => {
            let url = url.expect("s3 presigns");
            assert!(url.contains("X-Amz-Signature="), "not presigned");
            let (status, body) = http_get(&url).await;
            assert_eq!(status, 200);
            assert_eq!(body, b"presigned bytes");
        }
    }
    assert!(matches!(
        b.store().presign_get("../x", Duration::from_secs(60)).await,
        Err(StoreError::InvalidKey { .. })
    ));
}

/// A plain HTTP/1.1 GET without credentials: status and body.
pub(crate) async fn http_get(url: &str) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;

    let url: hyper::Uri = url.parse().unwrap();
    let authority = url.authority().unwrap().clone();
    let tcp = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(url.path_and_query().unwrap().as_str())
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

// --- Stream-through (`begin_blob`) ------------------------------------------

/// The most bytes any stream in these cases may have.
const STREAM_CAP: u64 = 64 * MIB as u64;

/// Starts a stream-through upload of a blob whose bytes hash to `sha256`;
/// every backend under test streams.
pub(crate) async fn begin(
    b: &dyn Backend,
    key: &str,
    sha256: Sha256Digest,
) -> Box<dyn s3_uploader::BlobUpload> {
    b.store()
        .begin_blob(key, sha256, STREAM_CAP, Some("video/mp4"))
        .await
        .unwrap()
        .expect("the backend streams")
}

/// Starts a stream-through upload as the fetch step does, telling it the
/// download's length first when `announced` (the response had a
/// `Content-Length`; on S3 a file of several parts is then piped into its
/// part requests instead of buffered).
pub(crate) async fn begin_announced(
    b: &dyn Backend,
    key: &str,
    sha256: Sha256Digest,
    announced: Option<u64>,
) -> Box<dyn s3_uploader::BlobUpload> {
    let mut upload = begin(b, key, sha256).await;
    if let Some(length) = announced {
        upload.expect_length(length);
    }
    upload
}

/// Writes `bytes` in uneven chunks, as a network delivers them (none lines
/// up with a part boundary).
pub(crate) async fn write_chunked(upload: &mut Box<dyn s3_uploader::BlobUpload>, bytes: &[u8]) {
    let sizes = [16 * 1024 + 7, 1, 300 * 1024 + 11, 64 * 1024];
    let mut rest = bytes;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        upload
            .write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
        rest = tail;
    }
}

/// 20 MiB and a few bytes streamed: several parts at the default 8 MiB,
/// with the length announced and without.
pub(crate) async fn streamed_blob_round_trip(b: &dyn Backend) {
    for (seed, announce) in [(61, false), (67, true)] {
        let bytes = pseudo_random(20 * MIB + 123, seed);
        let key = layout().blob_key(&sha256(&bytes), Some("video/mp4"));
        let announced = announce.then_some(bytes.len() as u64);
        let mut upload = begin_announced(b, &key, sha256(&bytes), announced).await;
        write_chunked(&mut upload, &bytes).await;
        assert_eq!(b.read_object(&key).await, None, "visible before finish");
        let done = upload.finish().await.unwrap();
        assert_eq!(
            done,
            s3_uploader::Streamed::Archived {
                size: bytes.len() as u64,
                outcome: PutOutcome::Stored
            }
        );
        assert_eq!(
            b.store().read_hashed(&key).await.unwrap(),
            Some(ObjectDigest {
                size: bytes.len() as u64,
                sha256: sha256(&bytes)
            }),
            "announced: {announce}"
        );
    }
}

/// A download that ends before its announced length is not stored, even
/// when what came hashes to the key (the provider vouched for the prefix),
/// and one that goes past it is refused at the first byte too many.
pub(crate) async fn a_stream_that_is_not_its_announced_length_is_not_stored(b: &dyn Backend) {
    let bytes = pseudo_random(20 * MIB, 68);
    let key = layout().blob_key(&sha256(&bytes), None);
    let mut short = begin_announced(b, &key, sha256(&bytes), Some(24 * MIB as u64)).await;
    write_chunked(&mut short, &bytes).await;
    let error = short.finish().await.map(|_| ()).unwrap_err();
    assert!(error.to_string().contains("announced"), "{error}");
    assert_eq!(b.read_object(&key).await, None, "a cut-off file is visible");

    let mut long = begin_announced(b, &key, sha256(&bytes), Some(16 * MIB as u64)).await;
    let mut chunks = bytes.chunks(MIB);
    for chunk in chunks.by_ref().take(16) {
        long.write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let one_too_many = bytes::Bytes::copy_from_slice(chunks.next().unwrap());
    let error = long.write(one_too_many).await.unwrap_err();
    assert!(error.to_string().contains("announced"), "{error}");
    // Once a write failed, the upload is broken: finishing it fails.
    let finished = long.finish().await;
    assert!(finished.is_err(), "{finished:?}");
    assert_eq!(b.read_object(&key).await, None);
}

/// At most one part: stored whole at the end (one request on S3).
pub(crate) async fn small_streamed_blob_round_trip(b: &dyn Backend) {
    for bytes in [
        Vec::new(),
        pseudo_random(70 * 1024, 62),
        pseudo_random(8 * MIB, 63),
    ] {
        let key = layout().blob_key(&sha256(&bytes), None);
        let mut upload = begin(b, &key, sha256(&bytes)).await;
        write_chunked(&mut upload, &bytes).await;
        let done = upload.finish().await.unwrap();
        assert!(
            matches!(done, s3_uploader::Streamed::Archived { size, outcome: PutOutcome::Stored } if size == bytes.len() as u64),
            "{done:?}"
        );
        assert_eq!(b.read_object(&key).await, Some(bytes));
    }
}

/// Bytes that hash to anything but the key are discarded, small or in
/// parts, and the key stays empty.
pub(crate) async fn streamed_bytes_that_do_not_match_the_key_are_refused(b: &dyn Backend) {
    for (len, announce) in [(1000, false), (20 * MIB, false), (20 * MIB, true)] {
        let promised = sha256(b"what the provider vouched for");
        let key = layout().blob_key(&promised, None);
        let bytes = pseudo_random(len, 64);
        let announced = announce.then_some(len as u64);
        let mut upload = begin_announced(b, &key, promised, announced).await;
        write_chunked(&mut upload, &bytes).await;
        let done = upload.finish().await.unwrap();
        assert_eq!(
            done,
            s3_uploader::Streamed::Refused {
                size: len as u64,
                sha256: sha256(&bytes)
            }
        );
        assert_eq!(b.read_object(&key).await, None, "unverified object visible");
    }
}

/// Streaming a blob the archive already holds leaves it intact.
pub(crate) async fn streaming_a_stored_blob_again_changes_nothing(b: &dyn Backend) {
    let bytes = pseudo_random(12 * MIB, 65);
    let file = stage(b.spool(), &bytes);
    let key = layout().blob_key(&file.sha256, None);
    b.store().put_blob(&key, &file, None).await.unwrap();
    let mut upload = begin(b, &key, file.sha256).await;
    write_chunked(&mut upload, &bytes).await;
    let done = upload.finish().await.unwrap();
    // `AlreadyPresent` where the store tells (fs, S3 stores that honour
    // `If-None-Match`); the same bytes rewritten where it cannot (Garage).
    assert!(
        matches!(done, s3_uploader::Streamed::Archived { size, .. } if size == file.size),
        "{done:?}"
    );
    assert_eq!(b.read_object(&key).await, Some(bytes));
}

/// An upload dropped half-way (the attempt was cancelled) leaves nothing
/// under its key.
pub(crate) async fn a_stream_dropped_half_way_leaves_nothing(b: &dyn Backend) {
    let bytes = pseudo_random(20 * MIB, 66);
    let key = layout().blob_key(&sha256(&bytes), None);
    for announced in [None, Some(bytes.len() as u64)] {
        let mut upload = begin_announced(b, &key, sha256(&bytes), announced).await;
        write_chunked(&mut upload, &bytes[..17 * MIB]).await;
        drop(upload);
        assert_eq!(b.read_object(&key).await, None);
    }
}

/// Deleting an object (an erasure) removes it, and only it; deleting a key
/// with nothing there is not an error (an erasure resumed after a crash
/// deletes again what it had deleted).
pub(crate) async fn delete_removes_an_object_and_a_missing_one_is_no_error(b: &dyn Backend) {
    let (one, two) = (b"erase me".to_vec(), b"keep me".to_vec());
    let mut keys = Vec::new();
    for bytes in [&one, &two] {
        let file = stage(b.spool(), bytes);
        let key = layout().blob_key(&file.sha256, Some("image/jpeg"));
        b.store()
            .put_blob(&key, &file, Some("image/jpeg"))
            .await
            .unwrap();
        keys.push(key);
    }
    b.store().delete(&keys[0]).await.unwrap();
    assert_eq!(b.read_object(&keys[0]).await, None);
    assert_eq!(b.store().get_small(&keys[0]).await.unwrap(), None);
    assert_eq!(b.read_object(&keys[1]).await, Some(two));
    b.store().delete(&keys[0]).await.unwrap();
    assert!(
        b.store().delete("../escape").await.is_err(),
        "keys are checked"
    );
}
