//! Decoders for the byte and integer fields providers put in JSON.
//!
//! The same field (a hash, a media key, a file length) arrives in different
//! encodings depending on the gateway and its serializer:
//! - bytes: hex, standard base64 (padded or not), base64url, an index-keyed
//!   object `{"0":18,"1":217,...}` (a JS `Uint8Array` through `JSON.stringify`),
//!   a Node Buffer `{"type":"Buffer","data":[...]}`, or a plain array of numbers;
//! - 64-bit integers: a number, a decimal string, or a protobuf.js Long
//!   `{"low":..,"high":..,"unsigned":..}`.
//!
//! One decoder per kind, so that no caller ever compares encoded strings.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;

/// Why a field could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The value has a JSON type no encoding uses (bool, null, nested junk).
    #[error("expected bytes as hex, base64, an index-keyed object or a Buffer, found {0}")]
    UnsupportedShape(&'static str),
    /// A string that is neither hex nor base64.
    #[error("not hex or base64")]
    NotHexOrBase64,
    /// An object or array holding something other than bytes 0..=255.
    #[error("byte array element out of range or missing")]
    BadByteArray,
    /// An integer field in none of the integer encodings, or out of range.
    #[error("expected an unsigned integer as a number, a decimal string or {{low,high}}")]
    BadInteger,
}

/// Decodes a byte field in any encoding listed in the module docs.
///
/// A string of even length made only of hex digits is read as hex. That is
/// unambiguous for the lengths that matter here: a 32-byte hash is 64 hex
/// characters but 44 base64 characters, and a 32-byte key is 44 base64
/// characters, which is never all hex (it ends with `=`).
pub fn bytes(value: &Value) -> Result<Vec<u8>, DecodeError> {
    match value {
        Value::String(s) => bytes_from_str(s),
        Value::Array(items) => items.iter().map(byte).collect(),
        Value::Object(map) => {
            if let (Some(Value::String(kind)), Some(Value::Array(data))) =
                (map.get("type"), map.get("data"))
                && kind == "Buffer"
            {
                return data.iter().map(byte).collect();
            }
            // Index-keyed: keys "0".."n-1", in any order.
            let mut out = vec![0u8; map.len()];
            let mut seen = vec![false; map.len()];
            for (key, v) in map {
                let index: usize = key.parse().map_err(|_| DecodeError::BadByteArray)?;
                let slot = out.get_mut(index).ok_or(DecodeError::BadByteArray)?;
                *slot = byte(v)?;
                seen[index] = true;
            }
            if seen.iter().all(|s| *s) {
                Ok(out)
            } else {
                Err(DecodeError::BadByteArray)
            }
        }
        Value::Null => Err(DecodeError::UnsupportedShape("null")),
        Value::Bool(_) => Err(DecodeError::UnsupportedShape("a boolean")),
        Value::Number(_) => Err(DecodeError::UnsupportedShape("a number")),
    }
}

/// Decodes a byte field given as a string (hex or any base64 flavour).
pub fn bytes_from_str(s: &str) -> Result<Vec<u8>, DecodeError> {
    let s = s.trim();
    if s.len().is_multiple_of(2)
        && !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(v) = hex::decode(s)
    {
        return Ok(v);
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(v) = engine.decode(s) {
            return Ok(v);
        }
    }
    Err(DecodeError::NotHexOrBase64)
}

fn byte(v: &Value) -> Result<u8, DecodeError> {
    v.as_u64()
        .and_then(|n| u8::try_from(n).ok())
        .ok_or(DecodeError::BadByteArray)
}

/// Decodes an unsigned 64-bit field: number, decimal string or `{low,high}`.
pub fn u64_field(value: &Value) -> Result<u64, DecodeError> {
    match value {
        Value::Number(n) => n.as_u64().ok_or(DecodeError::BadInteger),
        Value::String(s) => s.trim().parse().map_err(|_| DecodeError::BadInteger),
        Value::Object(map) => {
            let low = map
                .get("low")
                .and_then(Value::as_i64)
                .ok_or(DecodeError::BadInteger)?;
            let high = map.get("high").and_then(Value::as_i64).unwrap_or(0);
            // protobuf.js stores both halves as signed 32-bit integers.
            let low = u64::from(low as i32 as u32);
            let high = u64::from(high as i32 as u32);
            Ok((high << 32) | low)
        }
        _ => Err(DecodeError::BadInteger),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RAW: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

    #[test]
    fn every_byte_encoding_decodes_to_the_same_bytes() {
        for v in [
            json!("deadbeef"),
            json!("DEADBEEF"),
            json!("3q2+7w=="),
            json!("3q2+7w"),
            json!("3q2-7w=="),
            json!("3q2-7w"),
            json!([222, 173, 190, 239]),
            json!({"1": 173, "0": 222, "3": 239, "2": 190}),
            json!({"type": "Buffer", "data": [222, 173, 190, 239]}),
        ] {
            assert_eq!(bytes(&v).unwrap(), RAW, "{v}");
        }
    }

    #[test]
    fn malformed_bytes_are_rejected_not_guessed() {
        assert!(bytes(&json!("not base64 !!")).is_err());
        assert!(
            bytes(&json!({"0": 1, "2": 3})).is_err(),
            "gap in the indices"
        );
        assert!(bytes(&json!({"0": 300})).is_err());
        assert!(bytes(&json!(null)).is_err());
        assert!(bytes(&json!(true)).is_err());
    }

    #[test]
    fn integers_arrive_as_numbers_strings_or_longs() {
        assert_eq!(u64_field(&json!(92941)).unwrap(), 92941);
        assert_eq!(u64_field(&json!("92941")).unwrap(), 92941);
        assert_eq!(
            u64_field(&json!({"low": 92941, "high": 0, "unsigned": false})).unwrap(),
            92941
        );
        assert_eq!(
            u64_field(&json!({"low": -1, "high": 1, "unsigned": true})).unwrap(),
            (1u64 << 33) - 1
        );
        assert!(u64_field(&json!("12a")).is_err());
        assert!(u64_field(&json!(-5)).is_err());
    }
}
