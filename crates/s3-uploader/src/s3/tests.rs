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
    let config = S3Config {
        bucket: "media".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        access_key_id: Some(SecretRef::Literal("a".into())),
        secret_access_key: Some(SecretRef::Literal("b".into())),
        ..S3Config::default()
    };
    let store = S3Store::connect(config.validate().unwrap()).await;
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
