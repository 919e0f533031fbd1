//! The suite against [`S3Store`] on a real Garage, plus the S3-only checks:
//! the store itself refuses a wrong checksum, failed multipart uploads are
//! aborted, object attributes, presigned URLs, outages and refusals.

use std::path::Path;
use std::time::Duration;

use archiver_core::{Classify, ErrorClass, SecretRef};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::types::ChecksumMode;
use base64::Engine as _;
use s3_uploader::{Layout, ObjectStore, PutOutcome, S3Config, S3Store, StoreError};
use test_support::garage::Garage;

use crate::suite::{self, Backend, MIB};

pub(crate) struct S3Backend {
    store: S3Store,
    client: Client,
    garage: Garage,
    spool: tempfile::TempDir,
}

#[async_trait::async_trait]
impl Backend for S3Backend {
    fn store(&self) -> &dyn ObjectStore {
        &self.store
    }

    async fn read_object(&self, key: &str) -> Option<Vec<u8>> {
        let out = self
            .client
            .get_object()
            .bucket(&self.garage.bucket)
            .key(key)
            .send()
            .await;
        match out {
            Ok(out) => Some(out.body.collect().await.unwrap().to_vec()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(e) => panic!(
                "GetObject {key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            ),
        }
    }

    fn spool(&self) -> &Path {
        self.spool.path()
    }

    async fn overwrite_object(&self, key: &str, bytes: &[u8]) {
        self.client
            .put_object()
            .bucket(&self.garage.bucket)
            .key(key)
            .body(bytes.to_vec().into())
            .send()
            .await
            .unwrap();
    }
}

fn config(g: &Garage) -> S3Config {
    S3Config {
        bucket: g.bucket.clone(),
        region: g.region.clone(),
        endpoint: Some(g.endpoint.clone()),
        force_path_style: true,
        access_key_id: Some(SecretRef::Literal(g.access_key_id.clone())),
        secret_access_key: Some(SecretRef::Literal(g.secret_access_key.clone())),
        ..S3Config::default()
    }
}

async fn connect(config: S3Config) -> S3Store {
    S3Store::connect(config.validate().unwrap()).await
}

/// A plain SDK client on the same Garage, to look behind the store's back.
fn raw_client(g: &Garage) -> Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(g.region.clone()))
        .endpoint_url(&g.endpoint)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .credentials_provider(Credentials::new(
            &g.access_key_id,
            &g.secret_access_key,
            None,
            None,
            "test",
        ))
        .build();
    Client::from_conf(conf)
}

async fn s3_backend() -> Option<S3Backend> {
    s3_backend_with(|_| {}).await
}

/// The same, with stream-through parts piped into their requests
/// (`pipe_parts`): the whole suite again, since every stream case then
/// takes the other path when its length is announced.
async fn s3_piped_backend() -> Option<S3Backend> {
    s3_backend_with(|config| config.pipe_parts = true).await
}

async fn s3_backend_with(adjust: impl FnOnce(&mut S3Config)) -> Option<S3Backend> {
    let garage = Garage::start()?;
    let mut config = config(&garage);
    adjust(&mut config);
    let store = connect(config).await;
    Some(S3Backend {
        store,
        client: raw_client(&garage),
        garage,
        spool: tempfile::tempdir().unwrap(),
    })
}

crate::conformance_tests!(s3_backend);

mod piped {
    crate::conformance_tests!(super::s3_piped_backend);
}

async fn head_exists(b: &S3Backend, key: &str) -> bool {
    match b
        .client
        .head_object()
        .bucket(&b.garage.bucket)
        .key(key)
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => false,
        Err(e) => panic!("HeadObject: {}", aws_sdk_s3::error::DisplayErrorContext(e)),
    }
}

async fn pending_uploads(b: &S3Backend) -> usize {
    b.client
        .list_multipart_uploads()
        .bucket(&b.garage.bucket)
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_itself_refuses_a_wrong_checksum() {
    let Some(b) = s3_backend().await else { return };
    let wrong =
        base64::engine::general_purpose::STANDARD.encode(suite::sha256(b"other").as_bytes());

    // What our own pre-check would otherwise catch: the store checks too.
    let err = b
        .client
        .put_object()
        .bucket(&b.garage.bucket)
        .key("direct")
        .checksum_sha256(&wrong)
        .body(b"payload".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert!(!head_exists(&b, "direct").await);

    // And through the store: a lying StagedFile is refused, permanently.
    let mut file = suite::stage(b.spool(), b"payload");
    file.sha256 = suite::sha256(b"other");
    let key = Layout::default().blob_key(&file.sha256, Some("image/png"));
    let err = b
        .store
        .put_blob(&key, &file, Some("image/png"))
        .await
        .unwrap_err();
    assert_ne!(err.class(), ErrorClass::Transient, "{err}");
    assert!(!err.class().is_retryable(), "{err}");
    assert!(!head_exists(&b, &key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_multipart_uploads_are_aborted() {
    let Some(b) = s3_backend().await else { return };

    // Every part uploads, the whole-file hash differs: abort, not complete.
    let mut file = suite::stage(b.spool(), &suite::pseudo_random(20 * MIB, 9));
    file.sha256 = suite::sha256(b"not these bytes");
    let key = Layout::default().blob_key(&file.sha256, None);
    let err = b.store.put_blob(&key, &file, None).await.unwrap_err();
    assert!(matches!(err, StoreError::SpoolMismatch { .. }), "{err}");
    assert!(!head_exists(&b, &key).await);
    assert_eq!(pending_uploads(&b).await, 0, "multipart upload left behind");

    // The spool file ends early, half-way through the parts.
    let bytes = suite::pseudo_random(30 * MIB, 10);
    let mut short = suite::stage(b.spool(), &bytes[..17 * MIB]);
    short.size = bytes.len() as u64;
    short.sha256 = suite::sha256(&bytes);
    let key = Layout::default().blob_key(&short.sha256, None);
    let err = b.store.put_blob(&key, &short, None).await.unwrap_err();
    assert!(!err.class().is_retryable(), "{err}");
    assert!(!head_exists(&b, &key).await);
    assert_eq!(pending_uploads(&b).await, 0, "multipart upload left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_dropped_streams_leave_no_multipart_upload() {
    let Some(b) = s3_piped_backend().await else {
        return;
    };
    let bytes = suite::pseudo_random(20 * MIB, 72);
    let key = Layout::default().blob_key(&suite::sha256(&bytes), None);
    // Buffered parts, then parts piped into their requests.
    for announced in [None, Some(bytes.len() as u64)] {
        let other = suite::sha256(b"other");
        let mut refused = suite::begin_announced(&b, &key, other, announced).await;
        suite::write_chunked(&mut refused, &bytes).await;
        assert_eq!(
            pending_uploads(&b).await,
            1,
            "the parts went up as they came"
        );
        refused.finish().await.unwrap();
        assert_eq!(pending_uploads(&b).await, 0, "refused: aborted");

        let whole = suite::sha256(&bytes);
        let mut dropped = suite::begin_announced(&b, &key, whole, announced).await;
        suite::write_chunked(&mut dropped, &bytes[..17 * MIB]).await;
        drop(dropped);
        // The abort is spawned when the upload is dropped.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pending_uploads(&b).await > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "dropped: never aborted ({announced:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!head_exists(&b, &key).await);
    }
}

/// Memory is bounded by `stream_buffers` whatever the number of uploads:
/// with every buffer taken the store says "stage it" instead, and with
/// none configured it never streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_buffers_bound_the_uploads_and_zero_turns_streaming_off() {
    let Some(b) = s3_backend().await else { return };
    let store = connect(S3Config {
        stream_buffers: 2,
        pipe_parts: true,
        ..config(&b.garage)
    })
    .await;
    let begin = |n: u8| {
        let store = store.clone();
        async move {
            let sha = suite::sha256(&[n]);
            let key = Layout::default().blob_key(&sha, None);
            store.begin_blob(&key, sha, 1 << 30, None).await.unwrap()
        }
    };
    let first = begin(1).await.expect("a free buffer");
    let mut second = begin(2).await.expect("a free buffer");
    assert!(begin(3).await.is_none(), "every buffer is taken");
    drop(first);
    let third = begin(3).await.expect("a buffer came back");
    // With `pipe_parts`, a download announcing several parts' worth is
    // piped into its part requests: its buffer goes back to the pool
    // before it is filled.
    second.expect_length(20 * MIB as u64);
    let fourth = begin(4).await.expect("a piped upload holds no buffer");
    drop((second, third, fourth));

    // More than 10,000 parts of `part_size` could not be one upload.
    let too_large = 10_000 * 8 * MIB as u64 + 1;
    let sha = suite::sha256(b"huge");
    let key = Layout::default().blob_key(&sha, None);
    assert!(
        store
            .begin_blob(&key, sha, too_large, None)
            .await
            .unwrap()
            .is_none()
    );

    let off = connect(S3Config {
        stream_buffers: 0,
        ..config(&b.garage)
    })
    .await;
    assert!(
        off.begin_blob(&key, sha, 1 << 20, None)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_carry_content_type_sha256_metadata_and_checksum() {
    let Some(b) = s3_backend().await else { return };
    for (len, mime) in [(4096, "image/png"), (17 * MIB, "audio/ogg; codecs=opus")] {
        let file = suite::stage(b.spool(), &suite::pseudo_random(len, len as u64));
        let key = Layout::new("p/").blob_key(&file.sha256, Some(mime));
        b.store.put_blob(&key, &file, Some(mime)).await.unwrap();
        let head = b
            .client
            .head_object()
            .bucket(&b.garage.bucket)
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some(mime));
        assert_eq!(head.content_length(), Some(len as i64));
        let sha = head.metadata().and_then(|m| m.get("sha256"));
        assert_eq!(sha.map(String::as_str), Some(file.sha256.to_hex().as_str()));
        if len <= 8 * MIB {
            let b64 = base64::engine::general_purpose::STANDARD.encode(file.sha256.as_bytes());
            assert_eq!(head.checksum_sha256(), Some(b64.as_str()));
        }
    }
    let key = Layout::default().manifest_key("acc", 0, "m1");
    b.store.put_manifest(&key, b"{}").await.unwrap();
    let head = b
        .client
        .head_object()
        .bucket(&b.garage.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_get_url_is_fetchable() {
    let Some(b) = s3_backend().await else { return };
    let file = suite::stage(b.spool(), b"presigned bytes");
    let key = Layout::default().blob_key(&file.sha256, Some("text/plain"));
    b.store
        .put_blob(&key, &file, Some("text/plain"))
        .await
        .unwrap();
    let url = b
        .store
        .presign_get(&key, Duration::from_secs(300))
        .await
        .unwrap();
    let query = url
        .parse::<hyper::Uri>()
        .unwrap()
        .query()
        .map(str::to_owned);
    assert!(
        query.unwrap_or_default().contains("X-Amz-Signature="),
        "{url}"
    );
    assert_eq!(
        suite::http_get(&url).await,
        (200, b"presigned bytes".to_vec())
    );

    assert!(
        b.store
            .presign_get(&key, Duration::from_secs(8 * 24 * 3600))
            .await
            .is_err(),
        "S3 presigned URLs last at most 7 days"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_transient_and_the_store_recovers() {
    let Some(mut b) = s3_backend().await else {
        return;
    };
    let file = suite::stage(b.spool(), b"during an outage");
    let key = Layout::default().blob_key(&file.sha256, None);

    b.garage.stop();
    let err = b.store.put_blob(&key, &file, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(
        b.store.ping().await.unwrap_err().class(),
        ErrorClass::Transient
    );

    b.garage.restart();
    b.store.ping().await.unwrap();
    assert_eq!(
        b.store.put_blob(&key, &file, None).await.unwrap(),
        PutOutcome::Stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_missing_bucket() {
    let Some(g) = Garage::start() else { return };
    let spool = tempfile::tempdir().unwrap();
    let file = suite::stage(spool.path(), b"x");

    let mut cfg = config(&g);
    cfg.secret_access_key = Some(SecretRef::Literal("0".repeat(64)));
    let store = connect(cfg).await;
    let err = store.put_blob("k", &file, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Denied { .. }), "{err}");
    assert!(!err.to_string().contains(&"0".repeat(64)));
    assert!(!err.to_string().contains(&g.secret_access_key));
    assert!(store.ping().await.is_err());

    let mut cfg = config(&g);
    cfg.bucket = "no-such-bucket".into();
    let store = connect(cfg).await;
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchBucket { .. }), "{err}");
    let err = store.put_blob("k", &file, None).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}
