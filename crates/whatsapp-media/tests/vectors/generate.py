#!/usr/bin/env python3
"""Test vectors for WhatsApp media decryption, made independently of the Rust code.

Uses the Python `cryptography` package (OpenSSL underneath) for HKDF-SHA256,
AES-256-CBC, PKCS#7 and HMAC-SHA256, following the format documented in
providers.md section 3 (Baileys `messages-media.ts`, whatsmeow `download.go`):

    expanded = HKDF-SHA256(ikm=mediaKey, salt=none, info="WhatsApp <T> Keys", L=112)
    iv, cipherKey, macKey, refKey = expanded[0:16], [16:48], [48:80], [80:112]
    ciphertext = AES-256-CBC(cipherKey, iv, PKCS7(plaintext))
    blob = ciphertext || HMAC-SHA256(macKey, iv || ciphertext)[0:10]
    fileSha256 = sha256(plaintext); fileEncSha256 = sha256(blob)

Everything is deterministic (keys are sha256 of a label), so running this
again rewrites identical files; `--check` verifies that instead of writing.

    pip install cryptography
    python3 crates/whatsapp-media/tests/vectors/generate.py [--check]
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = os.path.dirname(os.path.abspath(__file__))
INFO = {
    "image": b"WhatsApp Image Keys",
    "video": b"WhatsApp Video Keys",
    "audio": b"WhatsApp Audio Keys",
    "document": b"WhatsApp Document Keys",
}
# Wire names and the key family each one uses.
FAMILY = {
    "image": "image", "sticker": "image",
    "video": "video", "gif": "video", "ptv": "video",
    "audio": "audio", "ptt": "audio", "voice": "audio",
    "document": "document",
}


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def media_key(label: str) -> bytes:
    return hashlib.sha256(f"media-archiver test media key {label}".encode()).digest()


def expand(key: bytes, wire_type: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=112, salt=None,
                info=INFO[FAMILY[wire_type]]).derive(key)


def counter_bytes(n: int) -> bytes:
    """The plaintext rule for files too big to inline: byte i = (i*31 + 7) mod 256."""
    return bytes((i * 31 + 7) & 0xFF for i in range(n))


def aes_cbc_raw(key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def mac10(mac_key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    h = hmac.HMAC(mac_key, hashes.SHA256())
    h.update(iv + ciphertext)
    return h.finalize()[:10]


def blob_for(key: bytes, wire_type: str, padded: bytes) -> bytes:
    ex = expand(key, wire_type)
    iv, cipher_key, mac_key = ex[0:16], ex[16:48], ex[48:80]
    ciphertext = aes_cbc_raw(cipher_key, iv, padded)
    return ciphertext + mac10(mac_key, iv, ciphertext)


def pkcs7(data: bytes) -> bytes:
    p = padding.PKCS7(128).padder()
    return p.update(data) + p.finalize()


def case(name, wire_type, plaintext, *, inline=True):
    key = media_key(name)
    blob = blob_for(key, wire_type, pkcs7(plaintext))
    c = {
        "name": name,
        "media_type": wire_type,
        "media_key": b64(key),
        "file_sha256": b64(hashlib.sha256(plaintext).digest()),
        "file_enc_sha256": b64(hashlib.sha256(blob).digest()),
        "file_length": len(plaintext),
        "expect": "ok",
    }
    files = {}
    if inline:
        c["plaintext_hex"] = plaintext.hex()
        c["blob_hex"] = blob.hex()
    else:
        c["plaintext_rule"] = "counter"
        c["blob_file"] = f"{name}.enc"
        files[c["blob_file"]] = blob
    return c, files


def bad_case(name, wire_type, raw_plaintext, expect):
    """A blob with a valid MAC and fileEncSha256 whose decryption must fail:
    `raw_plaintext` is encrypted without adding padding."""
    key = media_key(name)
    ex = expand(key, wire_type)
    iv, cipher_key, mac_key = ex[0:16], ex[16:48], ex[48:80]
    if len(raw_plaintext) % 16 == 0:
        ciphertext = aes_cbc_raw(cipher_key, iv, raw_plaintext)
    else:
        ciphertext = raw_plaintext  # not whole blocks: any bytes will do
    blob = ciphertext + mac10(mac_key, iv, ciphertext)
    return {
        "name": name,
        "media_type": wire_type,
        "media_key": b64(key),
        "file_sha256": b64(hashlib.sha256(b"never decrypted").digest()),
        "file_enc_sha256": b64(hashlib.sha256(blob).digest()),
        "file_length": None,
        "blob_hex": blob.hex(),
        "expect": expect,
    }


def build():
    cases, files = [], {}
    specs = [
        ("image-empty", "image", b""),
        ("sticker-1-byte", "sticker", b"\x00"),
        ("video-15-bytes", "video", counter_bytes(15)),
        ("gif-16-bytes", "gif", counter_bytes(16)),
        ("ptv-17-bytes", "ptv", counter_bytes(17)),
        ("audio-text", "audio", b"OggS fake voice note \xff\xfe"),
        ("ptt-1000-bytes", "ptt", counter_bytes(1000)),
        ("voice-4095-bytes", "voice", counter_bytes(4095)),
        ("document-pdf-head", "document", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
    ]
    for name, wire_type, plaintext in specs:
        c, f = case(name, wire_type, plaintext)
        cases.append(c)
        files.update(f)
    # Crosses the Rust reader's 64 KiB chunk and ends mid-block.
    c, f = case("document-70001-bytes", "document", counter_bytes(70_001), inline=False)
    cases.append(c)
    files.update(f)
    cases.append(bad_case("bad-padding-zero-byte", "image", counter_bytes(31) + b"\x00", "padding"))
    cases.append(bad_case("bad-padding-too-long", "document", counter_bytes(31) + b"\x11", "padding"))
    cases.append(bad_case("not-whole-blocks", "video", counter_bytes(20), "padding"))

    hkdf = []
    for wire_type in ["image", "video", "audio", "document"]:
        key = media_key("hkdf")
        ex = expand(key, wire_type)
        hkdf.append({
            "media_type": wire_type,
            "media_key": b64(key),
            "iv": ex[0:16].hex(),
            "cipher_key": ex[16:48].hex(),
            "mac_key": ex[48:80].hex(),
            "ref_key": ex[80:112].hex(),
        })
    doc = {
        "generator": "tests/vectors/generate.py (Python cryptography package)",
        "hkdf": hkdf,
        "cases": cases,
    }
    files["vectors.json"] = (json.dumps(doc, indent=1) + "\n").encode()
    return files


def main():
    files = build()
    check = "--check" in sys.argv[1:]
    stale = []
    for name, content in files.items():
        path = os.path.join(HERE, name)
        if check:
            try:
                with open(path, "rb") as f:
                    if f.read() != content:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "wb") as f:
                f.write(content)
    if stale:
        sys.exit(f"vectors differ from the generator's output: {', '.join(stale)}")
    print(("checked " if check else "wrote ") + ", ".join(sorted(files)))


if __name__ == "__main__":
    main()
