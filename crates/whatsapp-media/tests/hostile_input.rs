//! Property tests: whatever bytes the CDN (or anyone on the path) serves,
//! decryption answers with one of its errors, never a panic, never a
//! plaintext that was not authenticated, and never a file left behind.
//!
//! Random blobs alone would all stop at check 1 (their sha256 is not the
//! message's), so the strategies below also hand the decryptor blobs whose
//! `fileEncSha256` matches and, further, blobs with a valid MAC, so every
//! later check meets hostile input too. Cases: `PROPTEST_CASES` (default
//! 256); see the README's "Fuzzing" section for a long run.

use std::path::Path;

use archiver_core::{Sha256Digest, StagedBody, StagedFile};
use hmac::{Hmac, Mac as _};
use proptest::prelude::*;
use sha2::{Digest as _, Sha256};
use whatsapp_media::{DecryptError, EncryptedMedia, MediaKey, MediaType, decrypt_file};

const TYPES: [&str; 4] = ["image", "video", "audio", "document"];

fn staged(dir: &Path, blob: &[u8]) -> StagedFile {
    let path = dir.join("blob.enc");
    std::fs::write(&path, blob).unwrap();
    StagedFile {
        body: StagedBody::Spool(path),
        size: blob.len() as u64,
        sha256: Sha256Digest::from_bytes(Sha256::digest(blob).into()),
    }
}

fn media(
    key: [u8; 32],
    kind: &str,
    blob: &[u8],
    plain: &[u8],
    length: Option<u64>,
) -> EncryptedMedia {
    EncryptedMedia {
        media_type: MediaType::from_name(kind).unwrap(),
        media_key: MediaKey::from_bytes(key),
        file_enc_sha256: Sha256Digest::from_bytes(Sha256::digest(blob).into()),
        file_sha256: Sha256Digest::from_bytes(Sha256::digest(plain).into()),
        file_length: length,
    }
}

/// Replaces the last 10 bytes of `blob` with a valid MAC for `key`, so the
/// decryptor goes on to the padding and plaintext checks.
fn with_valid_mac(key: &[u8; 32], kind: &str, mut blob: Vec<u8>) -> Vec<u8> {
    let keys = MediaKey::from_bytes(*key).expand(MediaType::from_name(kind).unwrap());
    let body = blob.len().saturating_sub(10);
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&keys.mac_key).unwrap();
    mac.update(&keys.iv);
    mac.update(&blob[..body]);
    blob.truncate(body);
    blob.extend_from_slice(&mac.finalize().into_bytes()[..10]);
    blob
}

/// Runs the decryptor in a fresh folder; answers its result and what it
/// left in the folder besides the input.
fn decrypt(media: &EncryptedMedia, blob: &[u8]) -> (Result<Vec<u8>, String>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let input = staged(dir.path(), blob);
    let out = tempfile::tempdir().unwrap();
    let result = decrypt_file(media, &input, out.path()).map(|plain| {
        let file = plain.keep().unwrap();
        let path = file
            .spool_path()
            .expect("a spooled blob decrypts to a spool file");
        let bytes = std::fs::read(path).unwrap();
        std::fs::remove_file(path).unwrap();
        bytes
    });
    let left = std::fs::read_dir(out.path()).unwrap().count();
    (result.map_err(|e: DecryptError| e.to_string()), left)
}

fn kind() -> impl Strategy<Value = &'static str> {
    prop::sample::select(TYPES.to_vec())
}

proptest! {
    #[test]
    fn arbitrary_blobs_are_refused_without_a_panic_or_a_leftover(
        key in any::<[u8; 32]>(),
        kind in kind(),
        blob in prop::collection::vec(any::<u8>(), 0..2048),
        plain in prop::collection::vec(any::<u8>(), 0..64),
        length in prop::option::of(0u64..4096),
        valid_mac in any::<bool>(),
    ) {
        let blob = if valid_mac && blob.len() >= 10 { with_valid_mac(&key, kind, blob) } else { blob };
        let media = media(key, kind, &blob, &plain, length);
        let (first, left) = decrypt(&media, &blob);
        prop_assert_eq!(left, 0, "an error leaves no plaintext behind");
        // Random bytes cannot decrypt to a plaintext whose sha256 was fixed
        // beforehand.
        prop_assert!(first.is_err());
        let (second, _) = decrypt(&media, &blob);
        prop_assert_eq!(first, second, "the same input gets the same answer");
    }

    #[test]
    fn a_genuine_file_decrypts_and_any_flipped_byte_is_caught_by_the_mac(
        key in any::<[u8; 32]>(),
        kind in kind(),
        plain in prop::collection::vec(any::<u8>(), 0..3000),
        flip_at in any::<prop::sample::Index>(),
        flip_bits in 1u8..=255,
    ) {
        let blob = test_support::whatsapp_cdn::encrypt(&key, &format!("{kind}Message"), &plain);
        let media = media(key, kind, &blob, &plain, Some(plain.len() as u64));
        let (decrypted, _) = decrypt(&media, &blob);
        prop_assert_eq!(decrypted, Ok(plain.clone()));

        let mut tampered = blob.clone();
        let at = flip_at.index(tampered.len());
        tampered[at] ^= flip_bits;
        // The message vouches for the tampered blob's sha256 (a gateway that
        // lies), so the MAC is what must catch it.
        let media = EncryptedMedia { file_enc_sha256: Sha256Digest::from_bytes(Sha256::digest(&tampered).into()), ..media };
        let (refused, left) = decrypt(&media, &tampered);
        prop_assert_eq!(left, 0);
        prop_assert!(refused.as_ref().is_err_and(|e| e.starts_with("HMAC mismatch")), "{:?}", refused);
    }
}
