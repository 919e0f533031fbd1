//! The decryption checked against vectors made by Python's `cryptography`
//! (`tests/vectors/generate.py`), and tampered variants of them.

use std::path::{Path, PathBuf};

use archiver_core::{Sha256Digest, StagedBody, StagedFile};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::decrypt::decrypt_with_chunk;
use crate::{DecryptError, EncryptedMedia, MediaKey, MediaType, decrypt_file};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(vectors_dir().join("vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

struct Case {
    name: String,
    media: EncryptedMedia,
    blob: Vec<u8>,
    plaintext: Option<Vec<u8>>,
    expect: String,
}

fn counter_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + 7) as u8).collect()
}

fn case(c: &Value) -> Case {
    let name = c["name"].as_str().unwrap().to_owned();
    let blob = match (c["blob_hex"].as_str(), c["blob_file"].as_str()) {
        (Some(h), _) => hex::decode(h).unwrap(),
        (None, Some(file)) => std::fs::read(vectors_dir().join(file)).unwrap(),
        _ => panic!("{name}: no blob"),
    };
    let plaintext = match (c["plaintext_hex"].as_str(), c["plaintext_rule"].as_str()) {
        (Some(h), _) => Some(hex::decode(h).unwrap()),
        (None, Some("counter")) => Some(counter_bytes(c["file_length"].as_u64().unwrap() as usize)),
        _ => None,
    };
    let media = EncryptedMedia {
        media_type: MediaType::from_name(c["media_type"].as_str().unwrap()).unwrap(),
        media_key: MediaKey::from_json(&c["media_key"]).unwrap(),
        file_enc_sha256: Sha256Digest::from_json(&c["file_enc_sha256"]).unwrap(),
        file_sha256: Sha256Digest::from_json(&c["file_sha256"]).unwrap(),
        file_length: c["file_length"].as_u64(),
    };
    Case {
        name,
        media,
        blob,
        plaintext,
        expect: c["expect"].as_str().unwrap().to_owned(),
    }
}

fn cases() -> Vec<Case> {
    vectors()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(case)
        .collect()
}

/// Writes `blob` as a spool file the way the fetcher leaves one: with its
/// size and sha256 measured.
fn staged(dir: &Path, blob: &[u8]) -> StagedFile {
    let path = dir.join(format!("blob-{}.spool", rand_suffix()));
    std::fs::write(&path, blob).unwrap();
    StagedFile {
        body: StagedBody::Spool(path),
        size: blob.len() as u64,
        sha256: Sha256Digest::from_bytes(Sha256::digest(blob).into()),
    }
}

/// `blob` staged in memory, as the fetcher leaves a small download.
fn in_memory(blob: &[u8]) -> StagedFile {
    StagedFile {
        body: StagedBody::Memory(bytes::Bytes::copy_from_slice(blob)),
        size: blob.len() as u64,
        sha256: Sha256Digest::from_bytes(Sha256::digest(blob).into()),
    }
}

fn spool_path(file: &StagedFile) -> &Path {
    file.spool_path().expect("a spool file")
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn hkdf_expansion_matches_the_independent_implementation() {
    let v = vectors();
    let hkdf = v["hkdf"].as_array().unwrap();
    assert_eq!(hkdf.len(), 4);
    for h in hkdf {
        let ty = MediaType::from_name(h["media_type"].as_str().unwrap()).unwrap();
        let keys = MediaKey::from_json(&h["media_key"]).unwrap().expand(ty);
        assert_eq!(hex::encode(keys.iv), h["iv"].as_str().unwrap(), "{ty} iv");
        assert_eq!(
            hex::encode(keys.cipher_key),
            h["cipher_key"].as_str().unwrap(),
            "{ty}"
        );
        assert_eq!(
            hex::encode(keys.mac_key),
            h["mac_key"].as_str().unwrap(),
            "{ty}"
        );
        assert_eq!(
            hex::encode(keys.ref_key),
            h["ref_key"].as_str().unwrap(),
            "{ty}"
        );
    }
}

#[test]
fn every_vector_decrypts_to_its_plaintext_at_any_chunk_size() {
    let dir = tempfile::tempdir().unwrap();
    let all = cases();
    let good: Vec<&Case> = all.iter().filter(|c| c.expect == "ok").collect();
    assert!(
        good.len() >= 10,
        "the vectors cover every media type and size class"
    );
    for c in good {
        let blob = staged(dir.path(), &c.blob);
        let expected = c.plaintext.as_ref().unwrap();
        for chunk in [16, 32, 48, 4096, 64 * 1024] {
            let plain = decrypt_with_chunk(&c.media, &blob, dir.path(), chunk)
                .unwrap_or_else(|e| panic!("{} (chunk {chunk}): {e}", c.name));
            assert_eq!(plain.size, expected.len() as u64, "{}", c.name);
            assert_eq!(plain.sha256, c.media.file_sha256, "{}", c.name);
            let staged = plain.keep().unwrap();
            assert!(
                std::fs::read(spool_path(&staged)).unwrap() == *expected,
                "{} (chunk {chunk}): plaintext differs",
                c.name
            );
            std::fs::remove_file(spool_path(&staged)).unwrap();
        }
        std::fs::remove_file(spool_path(&blob)).unwrap();
    }
    assert_eq!(files_in(dir.path()), 0, "nothing left behind");
}

#[test]
fn a_blob_in_memory_decrypts_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    for c in cases().iter().filter(|c| c.expect == "ok") {
        let plain = decrypt_file(&c.media, &in_memory(&c.blob), dir.path())
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(plain.sha256, c.media.file_sha256, "{}", c.name);
        let staged = plain.keep().unwrap();
        match &staged.body {
            StagedBody::Memory(bytes) => {
                assert_eq!(Some(&bytes.to_vec()), c.plaintext.as_ref(), "{}", c.name)
            }
            StagedBody::Spool(path) => panic!("{}: plaintext spooled to {path:?}", c.name),
        }
    }
    assert_eq!(files_in(dir.path()), 0, "no file was written");
}

#[test]
fn bad_padding_vectors_fail_the_padding_check_after_a_valid_mac() {
    let dir = tempfile::tempdir().unwrap();
    let bad: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.expect == "padding")
        .collect();
    assert_eq!(bad.len(), 3);
    for c in bad {
        let blob = staged(dir.path(), &c.blob);
        let err = decrypt_file(&c.media, &blob, dir.path()).unwrap_err();
        assert!(
            matches!(err, DecryptError::BadPadding(_)),
            "{}: {err}",
            c.name
        );
        assert_eq!(err.check(), "padding");
        assert!(err.to_string().starts_with("padding invalid"), "{err}");
        std::fs::remove_file(spool_path(&blob)).unwrap();
    }
    assert_eq!(
        files_in(dir.path()),
        0,
        "no plaintext file is left after a failure"
    );
}

/// A good vector of a few blocks, to tamper with.
fn sample() -> Case {
    cases()
        .into_iter()
        .find(|c| c.name == "ptt-1000-bytes")
        .unwrap()
}

/// The error decrypting `blob` fails with, the same whether the blob is in
/// a spool file or in memory.
fn fails_with(media: &EncryptedMedia, blob: &[u8]) -> DecryptError {
    let dir = tempfile::tempdir().unwrap();
    let staged = staged(dir.path(), blob);
    let err = decrypt_file(media, &staged, dir.path()).unwrap_err();
    std::fs::remove_file(spool_path(&staged)).unwrap();
    assert_eq!(files_in(dir.path()), 0, "no plaintext left after {err}");
    let from_memory = decrypt_file(media, &in_memory(blob), dir.path()).unwrap_err();
    assert_eq!(from_memory.to_string(), err.to_string());
    err
}

fn sha(b: &[u8]) -> Sha256Digest {
    Sha256Digest::from_bytes(Sha256::digest(b).into())
}

#[test]
fn a_changed_blob_fails_the_enc_sha256_check_first() {
    let c = sample();
    let mut blob = c.blob.clone();
    blob[100] ^= 1;
    let err = fails_with(&c.media, &blob);
    assert!(
        matches!(err, DecryptError::EncSha256Mismatch { .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("fileEncSha256 mismatch"),
        "{err}"
    );
    assert!(
        err.to_string().contains(&sha(&blob).to_hex()),
        "shows what was downloaded: {err}"
    );
    // A truncated download is caught by the same check.
    let err = fails_with(&c.media, &c.blob[..c.blob.len() - 1]);
    assert_eq!(err.check(), "enc_sha256");
}

#[test]
fn a_changed_blob_with_a_matching_enc_sha256_fails_the_mac() {
    let c = sample();
    for position in [0, 500, c.blob.len() - 11, c.blob.len() - 1] {
        let mut blob = c.blob.clone();
        blob[position] ^= 0x80;
        let mut media = c.media.clone();
        media.file_enc_sha256 = sha(&blob);
        let err = fails_with(&media, &blob);
        assert!(
            matches!(err, DecryptError::HmacMismatch),
            "byte {position}: {err}"
        );
        assert!(err.to_string().starts_with("HMAC mismatch"), "{err}");
    }
}

#[test]
fn the_wrong_key_or_media_type_fails_the_mac() {
    let c = sample();
    let mut wrong_type = c.media.clone();
    wrong_type.media_type = MediaType::Video;
    assert!(matches!(
        fails_with(&wrong_type, &c.blob),
        DecryptError::HmacMismatch
    ));
    let mut wrong_key = c.media.clone();
    wrong_key.media_key = MediaKey::from_bytes([9; 32]);
    assert!(matches!(
        fails_with(&wrong_key, &c.blob),
        DecryptError::HmacMismatch
    ));
}

#[test]
fn a_wrong_file_sha256_fails_after_decryption() {
    let c = sample();
    let mut media = c.media.clone();
    media.file_sha256 = sha(b"another file");
    let err = fails_with(&media, &c.blob);
    assert!(
        matches!(err, DecryptError::PlainSha256Mismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("fileSha256 mismatch"), "{err}");
    assert!(
        err.to_string().contains(&c.media.file_sha256.to_hex()),
        "{err}"
    );
}

#[test]
fn a_wrong_file_length_fails_last() {
    let c = sample();
    let mut media = c.media.clone();
    media.file_length = Some(999);
    let err = fails_with(&media, &c.blob);
    assert!(
        matches!(
            err,
            DecryptError::LengthMismatch {
                expected: 999,
                actual: 1000
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("fileLength mismatch"), "{err}");
    // Without a stated length the hashes alone decide.
    media.file_length = None;
    let dir = tempfile::tempdir().unwrap();
    let blob = staged(dir.path(), &c.blob);
    assert_eq!(decrypt_file(&media, &blob, dir.path()).unwrap().size, 1000);
}

#[test]
fn a_blob_shorter_than_the_mac_is_refused() {
    let c = sample();
    let mut media = c.media.clone();
    let blob = [1u8; 9];
    media.file_enc_sha256 = sha(&blob);
    let err = fails_with(&media, &blob);
    assert!(matches!(err, DecryptError::TooShort { len: 9 }), "{err}");
}

#[test]
fn a_spool_file_that_does_not_match_its_recorded_size_is_an_io_error() {
    let c = sample();
    let dir = tempfile::tempdir().unwrap();
    let mut blob = staged(dir.path(), &c.blob);
    blob.size += 16;
    let err = decrypt_file(&c.media, &blob, dir.path()).unwrap_err();
    assert!(matches!(err, DecryptError::Io(_)), "{err}");
    assert!(!err.is_mismatch());
}

#[test]
fn errors_never_show_key_material() {
    let c = sample();
    let key_b64 = vectors()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "ptt-1000-bytes")
        .unwrap()["media_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_hex = hex::encode(c.media.media_key.expose());
    let mut blob = c.blob.clone();
    blob[3] ^= 1;
    let mut media = c.media.clone();
    media.file_enc_sha256 = sha(&blob);
    for err in [fails_with(&c.media, &blob), fails_with(&media, &blob)] {
        let shown = format!("{err} {err:?} {:?}", c.media);
        assert!(
            !shown.contains(&key_hex) && !shown.contains(&key_b64),
            "{shown}"
        );
    }
}
