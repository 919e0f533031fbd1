//! The S3 backend's own checks that go around its public surface: part
//! sizing, and what a real store (Garage) does with a wrong checksum or a
//! dropped upload, which the store-level suite (`tests/backends`) cannot
//! provoke because the store checks its input first.

use std::time::Duration;

use archiver_core::SecretRef;
use aws_sdk_s3::types::ChecksumAlgorithm;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use archiver_core::{Classify, ErrorClass};
use test_support::garage::Garage;

use super::config::MIB;
use super::pipe::piped_body;
use super::upload::{AbortGuard, Body, MAX_PARTS};
use super::{S3Config, S3Store};
use crate::StoreError;

/// A store on the bucket of a running Garage.
async fn store_on(g: &Garage) -> S3Store {
    let config = S3Config {
        bucket: g.bucket.clone(),
        region: g.region.clone(),
        endpoint: Some(g.endpoint.clone()),
        force_path_style: true,
        access_key_id: Some(SecretRef::Literal(g.access_key_id.clone())),
        secret_access_key: Some(SecretRef::Literal(g.secret_access_key.clone())),
        ..S3Config::default()
    };
    S3Store::connect(config.validate().unwrap()).await
}

#[tokio::test]
async fn part_size_grows_for_files_beyond_ten_thousand_parts() {
    let store = store_at("http://127.0.0.1:9".into()).await;
    assert_eq!(store.part_size_for(1), 8 * MIB);
    assert_eq!(store.part_size_for(80_000 * MIB), 8 * MIB);
    let huge = 200 * 1024 * MIB;
    let part = store.part_size_for(huge);
    assert!(huge.div_ceil(part) <= MAX_PARTS && part.is_multiple_of(MIB));
    assert!(!format!("{store:?}").contains("Secret"));
}

/// Our own hash check runs before any request; these go around it to
/// show that Garage refuses a wrong checksum and how that is classified.
#[tokio::test]
async fn wrong_checksum_is_refused_by_the_store_and_permanent() {
    let Some(g) = Garage::start() else { return };
    let store = store_on(&g).await;
    let wrong: [u8; 32] = Sha256::digest(b"not the body").into();

    let err = store
        .put_single(
            "k1",
            Body::Memory(Bytes::from_static(b"body")),
            &wrong,
            None,
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ChecksumRejected { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(store.existing_size("k1").await.unwrap(), None);

    let created = store
        .client
        .create_multipart_upload()
        .bucket(&g.bucket)
        .key("k2")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    let upload_id = created.upload_id().unwrap();
    let err = store
        .upload_part(
            "k2",
            upload_id,
            1,
            Body::Memory(Bytes::from(vec![7u8; 1024])),
            &wrong,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ChecksumRejected { .. }), "{err}");
    store.abort("k2", upload_id).await;
    assert_eq!(store.existing_size("k2").await.unwrap(), None);
}

/// A piped part's checksum travels after its bytes, as a trailer: the
/// store accepts the part when the trailer is the bytes' sha256, refuses it
/// (permanent, as a wrong header is) when it is not, and a body that ends
/// before its length fails the request instead of storing a short part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_part_is_held_to_its_trailing_checksum_and_its_length() {
    let Some(g) = Garage::start() else { return };
    let store = store_on(&g).await;
    let bytes = Bytes::from(vec![9u8; 200 * 1024 + 5]);
    let right: [u8; 32] = Sha256::digest(&bytes).into();
    let wrong: [u8; 32] = Sha256::digest(b"not the body").into();
    let upload_id = store
        .client
        .create_multipart_upload()
        .bucket(&g.bucket)
        .key("piped")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let len = bytes.len() as u64;
    let send = |number: i32, trailer: Option<[u8; 32]>, cut: usize| {
        let (store, upload_id, bytes) = (store.clone(), upload_id.clone(), bytes.clone());
        async move {
            let (sender, body, announce) = piped_body(len);
            let request = tokio::spawn(async move {
                store
                    .upload_piped_part("piped", &upload_id, number, body, announce)
                    .await
            });
            for chunk in bytes.slice(..bytes.len() - cut).chunks(16 * 1024) {
                sender.send(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            match trailer {
                Some(sha256) => sender.finish(&sha256).await.unwrap(),
                None => drop(sender),
            }
            request.await.unwrap()
        }
    };

    send(1, Some(right), 0).await.unwrap();

    let err = send(2, Some(wrong), 0).await.unwrap_err();
    assert!(matches!(err, StoreError::ChecksumRejected { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);

    let err = send(3, None, 1000).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    store.abort("piped", &upload_id).await;
}

#[tokio::test]
async fn dropping_an_upload_half_way_aborts_it() {
    let Some(g) = Garage::start() else { return };
    let store = store_on(&g).await;
    let created = store
        .client
        .create_multipart_upload()
        .bucket(&g.bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    drop(AbortGuard {
        store: Some(store.clone()),
        key: "k".into(),
        upload_id: created.upload_id().unwrap().into(),
    });
    for _ in 0..100 {
        let list = store
            .client
            .list_multipart_uploads()
            .bucket(&g.bucket)
            .send()
            .await
            .unwrap();
        if list.uploads().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the dropped upload was not aborted");
}

/// An S3 endpoint that honours `If-None-Match: *` on PutObject and
/// CompleteMultipartUpload as AWS documents it (412 PreconditionFailed
/// when the key exists), holding one object of `existing` bytes (if any)
/// and recording each request as `METHOD if-none-match` (`-` when absent;
/// the multipart requests as `CREATE`, `PART`, `COMPLETE`, `ABORT`).
async fn conditional_store(
    existing: Option<usize>,
) -> (
    test_support::http::TestServer,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    fake_store(existing, false).await
}

/// [`conditional_store`], or with `refuses_condition` one that answers 501
/// NotImplemented to any write carrying `If-None-Match` (as stores that do
/// not implement conditional writes may).
async fn fake_store(
    existing: Option<usize>,
    refuses_condition: bool,
) -> (
    test_support::http::TestServer,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::sync::{Arc, Mutex};
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let server = test_support::http::TestServer::start(move |req| {
        let seen = seen.clone();
        async move {
            let condition = req
                .headers()
                .get("if-none-match")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let method = match req.method().as_str() {
                "POST" if query.contains("uploads") => "CREATE",
                "PUT" if query.contains("partNumber") => "PART",
                "POST" if query.contains("uploadId") => "COMPLETE",
                "DELETE" => "ABORT",
                other => other,
            }
            .to_owned();
            seen.lock().unwrap().push(format!("{method} {condition}"));
            let _ = test_support::http::read_body(req, 16 * 1024 * 1024).await;
            if refuses_condition && condition != "-" {
                return test_support::http::response(
                    501,
                    "application/xml",
                    "<Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message></Error>",
                );
            }
            match (method.as_str(), existing) {
                ("CREATE", _) => test_support::http::response(
                    200,
                    "application/xml",
                    "<InitiateMultipartUploadResult><Bucket>media</Bucket><Key>k</Key><UploadId>u1</UploadId></InitiateMultipartUploadResult>",
                ),
                ("PART", _) => {
                    let mut sent = test_support::http::response(200, "application/xml", "");
                    sent.headers_mut().insert("etag", "\"e\"".parse().unwrap());
                    sent
                }
                ("COMPLETE", _) if existing.is_none() || condition != "*" => {
                    test_support::http::response(
                        200,
                        "application/xml",
                        "<CompleteMultipartUploadResult><Bucket>media</Bucket><Key>k</Key><ETag>\"e\"</ETag></CompleteMultipartUploadResult>",
                    )
                }
                ("ABORT", _) => test_support::http::response(204, "application/xml", ""),
                ("PUT" | "COMPLETE", Some(_)) if condition == "*" => test_support::http::response(
                    412,
                    "application/xml",
                    "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>",
                ),
                ("HEAD", Some(len)) => {
                    let mut found = test_support::http::response(200, "image/jpeg", "");
                    found
                        .headers_mut()
                        .insert("content-length", len.into());
                    found
                }
                ("HEAD", None) => test_support::http::response(404, "application/xml", ""),
                _ => test_support::http::response(200, "application/xml", ""),
            }
        }
    })
    .await;
    (server, log)
}

/// A configuration for bucket `media` at `endpoint`.
fn config_at(endpoint: String) -> S3Config {
    S3Config {
        bucket: "media".into(),
        endpoint: Some(endpoint),
        force_path_style: true,
        access_key_id: Some(SecretRef::Literal("a".into())),
        secret_access_key: Some(SecretRef::Literal("b".into())),
        ..S3Config::default()
    }
}

async fn store_at(endpoint: String) -> S3Store {
    S3Store::connect(config_at(endpoint).validate().unwrap()).await
}

fn in_memory(bytes: &'static [u8]) -> archiver_core::StagedFile {
    archiver_core::StagedFile {
        body: archiver_core::StagedBody::Memory(Bytes::from_static(bytes)),
        size: bytes.len() as u64,
        sha256: archiver_core::Sha256Digest::from_bytes(Sha256::digest(bytes).into()),
    }
}

#[tokio::test]
async fn a_new_blob_from_memory_is_one_conditional_put_and_no_head() {
    let (server, log) = conditional_store(None).await;
    let store = store_at(server.base_url()).await;
    let outcome = store
        .upload_blob("blobs/k.jpg", &in_memory(b"fresh"), None)
        .await
        .unwrap();
    assert_eq!(outcome, crate::PutOutcome::Stored);
    assert_eq!(*log.lock().unwrap(), ["PUT *"]);
}

#[tokio::test]
async fn a_repeat_blob_refused_by_the_condition_is_already_present_after_one_head() {
    let (server, log) = conditional_store(Some(5)).await;
    let store = store_at(server.base_url()).await;
    let outcome = store
        .upload_blob("blobs/k.jpg", &in_memory(b"again"), None)
        .await
        .unwrap();
    assert_eq!(outcome, crate::PutOutcome::AlreadyPresent);
    assert_eq!(*log.lock().unwrap(), ["PUT *", "HEAD -"]);
}

#[tokio::test]
async fn a_damaged_copy_of_another_size_is_replaced_unconditionally() {
    let (server, log) = conditional_store(Some(3)).await;
    let store = store_at(server.base_url()).await;
    let outcome = store
        .upload_blob("blobs/k.jpg", &in_memory(b"whole"), None)
        .await
        .unwrap();
    assert_eq!(outcome, crate::PutOutcome::Stored);
    assert_eq!(*log.lock().unwrap(), ["PUT *", "HEAD -", "PUT -"]);
}

#[tokio::test]
async fn with_object_lock_a_small_blob_is_checked_before_it_is_written() {
    let (server, log) = conditional_store(Some(5)).await;
    let config = S3Config {
        object_lock_mode: Some("COMPLIANCE".into()),
        object_lock_days: Some(30),
        ..config_at(server.base_url())
    };
    let store = S3Store::connect(config.validate().unwrap()).await;
    let outcome = store
        .upload_blob("blobs/k.jpg", &in_memory(b"again"), None)
        .await
        .unwrap();
    assert_eq!(outcome, crate::PutOutcome::AlreadyPresent);
    assert_eq!(*log.lock().unwrap(), ["HEAD -"], "never written again");
}

/// `bytes` streamed through a stream-through upload of their own key.
async fn stream(store: &S3Store, bytes: &[u8]) -> crate::Streamed {
    use crate::BlobUpload as _;
    let sha256 = archiver_core::Sha256Digest::from_bytes(Sha256::digest(bytes).into());
    let mut upload = store
        .begin_stream("blobs/k.mp4", sha256, 1 << 30, None)
        .expect("a free stream buffer");
    for chunk in bytes.chunks(100_000) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    Box::new(upload).finish().await.unwrap()
}

/// 5 MiB parts, the smallest S3 takes.
async fn store_with_small_parts(endpoint: String) -> S3Store {
    let config = S3Config {
        part_size: 5 * 1024 * 1024,
        ..config_at(endpoint)
    };
    S3Store::connect(config.validate().unwrap()).await
}

#[tokio::test]
async fn a_new_streamed_blob_of_one_part_is_one_conditional_put() {
    let (server, log) = conditional_store(None).await;
    let store = store_at(server.base_url()).await;
    let done = stream(&store, b"fresh").await;
    assert_eq!(
        done,
        crate::Streamed::Archived {
            size: 5,
            outcome: crate::PutOutcome::Stored
        }
    );
    assert_eq!(*log.lock().unwrap(), ["PUT *"]);
}

#[tokio::test]
async fn a_new_streamed_blob_in_parts_is_completed_on_condition() {
    let (server, log) = conditional_store(None).await;
    let store = store_with_small_parts(server.base_url()).await;
    let done = stream(&store, &vec![7u8; 11 * 1024 * 1024]).await;
    assert_stored(done);
    assert_eq!(
        *log.lock().unwrap(),
        ["CREATE -", "PART -", "PART -", "PART -", "COMPLETE *"]
    );
}

#[tokio::test]
async fn a_streamed_repeat_refused_by_the_condition_is_already_present_and_aborted() {
    let len = 11 * 1024 * 1024;
    let (server, log) = conditional_store(Some(len)).await;
    let store = store_with_small_parts(server.base_url()).await;
    let done = stream(&store, &vec![7u8; len]).await;
    assert!(
        matches!(
            done,
            crate::Streamed::Archived {
                outcome: crate::PutOutcome::AlreadyPresent,
                ..
            }
        ),
        "{done:?}"
    );
    assert_eq!(
        *log.lock().unwrap(),
        [
            "CREATE -",
            "PART -",
            "PART -",
            "PART -",
            "COMPLETE *",
            "HEAD -",
            "ABORT -"
        ],
        "never written again"
    );
}

#[tokio::test]
async fn a_streamed_blob_whose_bytes_miss_the_key_is_aborted_not_completed() {
    use crate::BlobUpload as _;
    let (server, log) = conditional_store(None).await;
    let store = store_with_small_parts(server.base_url()).await;
    let promised = archiver_core::Sha256Digest::from_bytes(Sha256::digest(b"promised").into());
    let mut upload = store
        .begin_stream("blobs/k.mp4", promised, 1 << 30, None)
        .unwrap();
    for chunk in vec![1u8; 11 * 1024 * 1024].chunks(1 << 20) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let done = Box::new(upload).finish().await.unwrap();
    assert!(matches!(done, crate::Streamed::Refused { size, .. } if size == 11 * 1024 * 1024));
    let log = log.lock().unwrap().clone();
    assert_eq!(log.first().map(String::as_str), Some("CREATE -"));
    assert!(log.iter().any(|l| l == "ABORT -"), "{log:?}");
    assert!(!log.iter().any(|l| l.starts_with("COMPLETE")), "{log:?}");
}

#[tokio::test]
async fn a_store_that_refuses_the_condition_gets_the_write_without_it() {
    let (server, log) = fake_store(None, true).await;
    let store = store_with_small_parts(server.base_url()).await;
    let outcome = store
        .upload_blob("blobs/k.jpg", &in_memory(b"fresh"), None)
        .await
        .unwrap();
    assert_eq!(outcome, crate::PutOutcome::Stored);
    let done = stream(&store, &vec![7u8; 11 * 1024 * 1024]).await;
    assert_stored(done);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "PUT *",
            "PUT -",
            "CREATE -",
            "PART -",
            "PART -",
            "PART -",
            "COMPLETE *",
            "COMPLETE -"
        ]
    );
}

/// A streamed blob that was written (not found already there).
fn assert_stored(done: crate::Streamed) {
    assert!(
        matches!(
            done,
            crate::Streamed::Archived {
                outcome: crate::PutOutcome::Stored,
                ..
            }
        ),
        "{done:?}"
    );
}
