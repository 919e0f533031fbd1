//! Streaming, verified decryption of one encrypted staged file (a spool
//! file, or a small file in memory).

use std::fs::File;
use std::io::{BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::consts::U16;
use aes::cipher::inout::InOutBuf;
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use archiver_core::{Classify, ErrorClass, Sha256Digest, StagedBody, StagedFile};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tempfile::TempPath;

use crate::EncryptedMedia;

/// Length of the truncated HMAC-SHA256 tag at the end of every blob.
const MAC_LEN: usize = 10;
/// AES block size.
const BLOCK: usize = 16;
/// Read buffer: a whole number of AES blocks. Memory per decryption is this
/// plus the output writer's buffer, whatever the file size.
const CHUNK: usize = 64 * 1024;
/// Buffer in front of the plaintext file.
const WRITE_BUFFER: usize = 256 * 1024;

/// Which check refused the file (or why it could not be read).
///
/// The variants are listed in the order the checks run. Messages name the
/// check and show hashes, never key material.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// Check 1: the blob is not the one the message vouched for.
    #[error("fileEncSha256 mismatch: the message says {expected}, the downloaded blob is {actual}")]
    EncSha256Mismatch {
        /// `fileEncSha256` from the message.
        expected: Sha256Digest,
        /// sha256 of the downloaded blob.
        actual: Sha256Digest,
    },
    /// The blob is too short to hold the 10-byte MAC.
    #[error("blob too short: {len} bytes cannot hold a {MAC_LEN}-byte MAC")]
    TooShort {
        /// The blob's length.
        len: u64,
    },
    /// Check 2: the HMAC-SHA256 tag over `iv || ciphertext` is wrong (the
    /// blob was altered, or the mediaKey or media type is wrong).
    #[error("HMAC mismatch: the blob's MAC does not authenticate it with this mediaKey")]
    HmacMismatch,
    /// Check 3: the ciphertext is not whole AES blocks, or its PKCS#7
    /// padding is invalid.
    #[error("padding invalid: {0}")]
    BadPadding(String),
    /// Check 4: the decrypted bytes are not the file the message vouched for.
    #[error("fileSha256 mismatch: the message says {expected}, the decrypted bytes are {actual}")]
    PlainSha256Mismatch {
        /// `fileSha256` from the message.
        expected: Sha256Digest,
        /// sha256 of the decrypted bytes.
        actual: Sha256Digest,
    },
    /// Check 5: the plaintext length differs from `fileLength`.
    #[error(
        "fileLength mismatch: the message says {expected} bytes, the decrypted file has {actual}"
    )]
    LengthMismatch {
        /// `fileLength` from the message.
        expected: u64,
        /// The plaintext's length.
        actual: u64,
    },
    /// Reading the blob or writing the plaintext failed.
    #[error("I/O error while decrypting: {0}")]
    Io(String),
}

impl DecryptError {
    /// True when a check refused the bytes (as opposed to an I/O failure).
    /// A mismatch may be a transfer gone wrong once, but not every time:
    /// callers retry it a bounded number of attempts, then give up.
    pub fn is_mismatch(&self) -> bool {
        !matches!(self, DecryptError::Io(_))
    }

    /// A short name of the failed check, for metrics and logs
    /// (`enc_sha256`, `length`, `hmac`, `padding`, `plain_sha256`, `io`).
    pub fn check(&self) -> &'static str {
        match self {
            DecryptError::EncSha256Mismatch { .. } => "enc_sha256",
            DecryptError::TooShort { .. } | DecryptError::LengthMismatch { .. } => "length",
            DecryptError::HmacMismatch => "hmac",
            DecryptError::BadPadding(_) => "padding",
            DecryptError::PlainSha256Mismatch { .. } => "plain_sha256",
            DecryptError::Io(_) => "io",
        }
    }
}

impl Classify for DecryptError {
    /// Everything is worth another attempt on its own: I/O fails for passing
    /// reasons, and a mismatch can come from a corrupted transfer. A caller
    /// that knows the attempt number bounds mismatch retries (the pipeline
    /// dead-letters after a few, with this error as the reason).
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// A verified plaintext file, in the spool (removed when dropped unless
/// kept) or in memory (when the encrypted file was).
#[derive(Debug)]
pub struct Plaintext {
    body: PlainBody,
    /// Its length in bytes.
    pub size: u64,
    /// Its sha256 (equal to the message's `fileSha256`).
    pub sha256: Sha256Digest,
}

impl Plaintext {
    /// Keeps the file and hands it on as a [`StagedFile`]; the holder of the
    /// result owns the file from then on.
    pub fn keep(self) -> Result<StagedFile, DecryptError> {
        let body = match self.body {
            PlainBody::Spool(path) => StagedBody::Spool(path.keep().map_err(|e| {
                DecryptError::Io(format!("keeping the plaintext file: {}", e.error))
            })?),
            PlainBody::Memory(bytes) => StagedBody::Memory(bytes),
        };
        Ok(StagedFile {
            body,
            size: self.size,
            sha256: self.sha256,
        })
    }
}

#[derive(Debug)]
enum PlainBody {
    Spool(TempPath),
    Memory(Bytes),
}

/// Where the plaintext goes: a spool file beside the encrypted one, or
/// memory when the encrypted file is in memory (it is then at most
/// `fetch.in_memory_max_bytes`, and the plaintext is shorter).
enum PlainSink {
    Spool(BufWriter<File>, TempPath),
    Memory(Vec<u8>),
}

impl PlainSink {
    fn for_blob(blob: &StagedFile, out_dir: &Path) -> Result<Self, DecryptError> {
        match &blob.body {
            StagedBody::Memory(bytes) => Ok(PlainSink::Memory(Vec::with_capacity(bytes.len()))),
            StagedBody::Spool(_) => {
                let (file, path) = tempfile::Builder::new()
                    .prefix("plain-")
                    .suffix(".spool")
                    .tempfile_in(out_dir)
                    .map_err(|e| io("creating the plaintext file", &e))?
                    .into_parts();
                Ok(PlainSink::Spool(
                    BufWriter::with_capacity(WRITE_BUFFER, file),
                    path,
                ))
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), DecryptError> {
        match self {
            PlainSink::Spool(out, _) => out
                .write_all(bytes)
                .map_err(|e| io("writing the plaintext file", &e)),
            PlainSink::Memory(buf) => {
                buf.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<PlainBody, DecryptError> {
        match self {
            PlainSink::Spool(out, path) => {
                out.into_inner()
                    .map_err(|e| io("flushing the plaintext file", e.error()))?;
                Ok(PlainBody::Spool(path))
            }
            PlainSink::Memory(buf) => Ok(PlainBody::Memory(Bytes::from(buf))),
        }
    }
}

/// The encrypted bytes, read twice (MAC, then decryption).
trait Input: Read + Seek {}
impl<T: Read + Seek> Input for T {}

fn open_input(blob: &StagedFile) -> Result<Box<dyn Input>, DecryptError> {
    Ok(match &blob.body {
        StagedBody::Spool(path) => {
            Box::new(File::open(path).map_err(|e| io("opening the encrypted file", &e))?)
        }
        StagedBody::Memory(bytes) => Box::new(Cursor::new(bytes.clone())),
    })
}

/// Authenticates and decrypts `blob` (an encrypted staged file whose sha256
/// the download already computed) into a new file in `out_dir`, or into
/// memory when `blob` is in memory.
///
/// Runs the checks in the order listed in the crate docs and stops at the
/// first failure; on any error no plaintext file is left behind. The input
/// is read twice through a fixed buffer (MAC first, then decryption), so no
/// byte is decrypted before the blob is authenticated, and memory does not
/// depend on the file size. The plaintext file is a spool file like the
/// download (not fsynced: the store makes what it keeps durable). Blocking: call it from a blocking thread in async code.
pub fn decrypt_file(
    media: &EncryptedMedia,
    blob: &StagedFile,
    out_dir: &Path,
) -> Result<Plaintext, DecryptError> {
    decrypt_with_chunk(media, blob, out_dir, CHUNK)
}

/// [`decrypt_file`] with a chosen read size (a multiple of 16), so tests can
/// make block and chunk boundaries fall anywhere.
pub(crate) fn decrypt_with_chunk(
    media: &EncryptedMedia,
    blob: &StagedFile,
    out_dir: &Path,
    chunk: usize,
) -> Result<Plaintext, DecryptError> {
    debug_assert!(chunk >= BLOCK && chunk.is_multiple_of(BLOCK));
    // 1. The blob is the one the message vouched for.
    if blob.sha256 != media.file_enc_sha256 {
        return Err(DecryptError::EncSha256Mismatch {
            expected: media.file_enc_sha256,
            actual: blob.sha256,
        });
    }
    let len = blob.size;
    if len < MAC_LEN as u64 {
        return Err(DecryptError::TooShort { len });
    }
    let ciphertext_len = len - MAC_LEN as u64;
    let keys = media.media_key.expand(media.media_type);
    let mut input = open_input(blob)?;
    let mut buf = vec![0u8; chunk];

    // 2. The MAC over iv || ciphertext, compared in constant time.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&keys.mac_key).expect("HMAC accepts a 32-byte key");
    mac.update(&keys.iv);
    let mut remaining = ciphertext_len;
    while remaining > 0 {
        let n = chunk.min(usize::try_from(remaining).unwrap_or(chunk));
        read_exact(&mut input, &mut buf[..n])?;
        mac.update(&buf[..n]);
        remaining -= n as u64;
    }
    let mut tag = [0u8; MAC_LEN];
    read_exact(&mut input, &mut tag)?;
    ensure_at_end(&mut input)?;
    mac.verify_truncated_left(&tag)
        .map_err(|_| DecryptError::HmacMismatch)?;

    // 3. Decrypt, holding back the last block to strip its padding.
    if ciphertext_len == 0 || !ciphertext_len.is_multiple_of(BLOCK as u64) {
        return Err(DecryptError::BadPadding(format!(
            "{ciphertext_len} bytes of ciphertext are not whole 16-byte AES blocks"
        )));
    }
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| io("rewinding the encrypted file", &e))?;
    let mut out = PlainSink::for_blob(blob, out_dir)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut write = |bytes: &[u8]| -> Result<(), DecryptError> {
        hasher.update(bytes);
        size += bytes.len() as u64;
        out.write_all(bytes)
    };
    let mut cipher = cbc::Decryptor::<Aes256>::new(&keys.cipher_key.into(), &keys.iv.into());
    let mut remaining = ciphertext_len - BLOCK as u64;
    while remaining > 0 {
        let n = chunk.min(usize::try_from(remaining).unwrap_or(chunk));
        read_exact(&mut input, &mut buf[..n])?;
        let (blocks, tail) = InOutBuf::from(&mut buf[..n]).into_chunks::<U16>();
        debug_assert!(tail.is_empty());
        cipher.decrypt_blocks_inout_mut(blocks);
        write(&buf[..n])?;
        remaining -= n as u64;
    }
    let mut last = [0u8; BLOCK];
    read_exact(&mut input, &mut last)?;
    let unpadded = cipher.decrypt_padded_mut::<Pkcs7>(&mut last).map_err(|_| {
        DecryptError::BadPadding("the last block's PKCS#7 padding is invalid".into())
    })?;
    write(unpadded)?;

    // 4. The plaintext is the file the message vouched for.
    let sha256 = Sha256Digest::from_bytes(hasher.finalize().into());
    if sha256 != media.file_sha256 {
        return Err(DecryptError::PlainSha256Mismatch {
            expected: media.file_sha256,
            actual: sha256,
        });
    }
    // 5. And as long as it said.
    if let Some(expected) = media.file_length
        && expected != size
    {
        return Err(DecryptError::LengthMismatch {
            expected,
            actual: size,
        });
    }
    Ok(Plaintext {
        body: out.finish()?,
        size,
        sha256,
    })
}

fn read_exact(input: &mut dyn Input, buf: &mut [u8]) -> Result<(), DecryptError> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            DecryptError::Io("the encrypted file is shorter than its recorded size".into())
        } else {
            io("reading the encrypted file", &e)
        }
    })
}

fn ensure_at_end(input: &mut dyn Input) -> Result<(), DecryptError> {
    let mut probe = [0u8; 1];
    match input.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(DecryptError::Io(
            "the encrypted file is longer than its recorded size".into(),
        )),
        Err(e) => Err(io("reading the encrypted file", &e)),
    }
}

fn io(what: &str, e: &std::io::Error) -> DecryptError {
    DecryptError::Io(format!("{what}: {e}"))
}
