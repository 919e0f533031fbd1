//! WhatsApp end-to-end media decryption, verified the strict way.
//!
//! Baileys-based gateways (CodeChat, Evolution) announce a media message with
//! the WhatsApp "media stub": a CDN `directPath`, the sender's 32-byte
//! `mediaKey`, and the hashes `fileEncSha256` (of the encrypted blob) and
//! `fileSha256` (of the plaintext). Fetching the blob from the CDN and
//! decrypting it here takes the gateway out of the download path, but only if
//! the result is as trustworthy as the gateway's: this crate does exactly the
//! checks whatsmeow does, in its order, and refuses the file at the first one
//! that fails (Baileys' own downloader checks none of them):
//!
//! 1. sha256 of the downloaded blob == `fileEncSha256`;
//! 2. the 10-byte HMAC-SHA256 tag over `iv || ciphertext` (constant time);
//! 3. AES-256-CBC decryption with valid PKCS#7 padding;
//! 4. sha256 of the plaintext == `fileSha256`;
//! 5. plaintext length == `fileLength` (when the message states it).
//!
//! Keys come from HKDF-SHA256 over `mediaKey` with the media type's info
//! string ([`MediaType`]), expanded to 112 bytes: `iv`, `cipherKey`, `macKey`,
//! `refKey`. Only RustCrypto primitives are used (`hkdf`, `hmac`, `sha2`,
//! `aes`, `cbc`); no cipher is written by hand. The tests check this code
//! against vectors made by Python's `cryptography` package
//! (`tests/vectors/generate.py`), never only against an encrypt of our own.
//!
//! Files are streamed: [`decrypt_file`] reads the encrypted spool file twice
//! (once to authenticate it, once to decrypt it) through fixed-size buffers
//! and writes a new plaintext spool file beside it, so memory stays constant
//! whatever the file size, and not a byte is decrypted before the MAC passed.
//! It is blocking file I/O: async callers run it on a blocking thread.
//!
//! The crate knows nothing of providers, HTTP, the queue or the store. The
//! pipeline calls it between "download into the spool" and "verify and
//! store"; providers describe what to decrypt with an [`EncryptedMedia`].
//! Errors are one [`DecryptError`] naming the check that failed.

mod decrypt;
mod keys;

pub use decrypt::{DecryptError, Plaintext, decrypt_file};
pub use keys::{EncryptedMedia, MediaKey, MediaKeys, MediaType};

#[cfg(test)]
mod tests;
