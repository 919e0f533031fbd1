use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::decode::{self, DecodeError};

/// A SHA-256 digest: 32 raw bytes.
///
/// Providers vouch for hashes in several encodings; they are all decoded to
/// this type and compared as bytes. It serializes as lowercase hex, the form
/// used in blob keys and manifests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Decodes a provider's hash field in any supported encoding.
    pub fn from_json(value: &Value) -> Result<Self, DecodeError> {
        Self::from_vec(decode::bytes(value)?)
    }

    /// Decodes a hash given as hex or base64 text.
    pub fn parse(text: &str) -> Result<Self, DecodeError> {
        Self::from_vec(decode::bytes_from_str(text)?)
    }

    fn from_vec(v: Vec<u8>) -> Result<Self, DecodeError> {
        <[u8; 32]>::try_from(v.as_slice())
            .map(Self)
            .map_err(|_| DecodeError::UnsupportedShape("bytes that are not 32 long"))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // sha256("abc")
    const HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const B64: &str = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";

    #[test]
    fn hex_and_base64_of_the_same_hash_are_equal() {
        let a = Sha256Digest::parse(HEX).unwrap();
        let b = Sha256Digest::parse(B64).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_hex(), HEX);
        let indexed: serde_json::Map<String, Value> = a
            .as_bytes()
            .iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), json!(b)))
            .collect();
        assert_eq!(Sha256Digest::from_json(&Value::Object(indexed)).unwrap(), a);
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(Sha256Digest::parse("deadbeef").is_err());
    }

    #[test]
    fn serializes_as_hex() {
        let a = Sha256Digest::parse(B64).unwrap();
        assert_eq!(serde_json::to_value(a).unwrap(), json!(HEX));
    }
}
