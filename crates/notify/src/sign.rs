//! Standard Webhooks 1.0 signatures.
//!
//! A message is signed with HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`,
//! keyed with the bytes of the secret after its `whsec_` prefix, base64
//! decoded; the header carries `v1,` and the MAC in standard base64. Any
//! Standard Webhooks library verifies what this module signs (the e2e
//! tests check it with the reference implementation).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The key bytes of a `whsec_` secret, checked as the specification
/// recommends (24 to 64 bytes).
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// The shortest and longest key the specification recommends.
    pub const BYTES: std::ops::RangeInclusive<usize> = 24..=64;

    /// Decodes `whsec_<base64>`; the error says what is wrong, never the
    /// value.
    pub fn from_secret(secret: &str) -> Result<Self, String> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            format!("must start with {SECRET_PREFIX:?} (a Standard Webhooks secret)")
        })?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| format!("the part after {SECRET_PREFIX:?} is not base64"))?;
        if !Self::BYTES.contains(&key.len()) {
            return Err(format!(
                "decodes to {} bytes; Standard Webhooks keys are {} to {} bytes",
                key.len(),
                Self::BYTES.start(),
                Self::BYTES.end()
            ));
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` header value of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `header` (space-separated `v1,<base64>` entries, as a
    /// consumer receives it) holds a valid signature of the message; for
    /// tests and for operators checking a captured delivery.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = self.mac(id, timestamp, body);
        header.split(' ').any(|entry| {
            entry
                .strip_prefix("v1,")
                .and_then(|sig| STANDARD.decode(sig).ok())
                .is_some_and(|sig| bool::from(sig.ct_eq(&expected)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference
    /// libraries (their tests sign this message with this secret).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_reference_example_as_the_reference_libraries_do() {
        let key = SigningKey::from_secret(SECRET).unwrap();
        assert_eq!(key.sign(ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn verifies_its_own_signature_among_several_and_nothing_altered() {
        let key = SigningKey::from_secret(SECRET).unwrap();
        let header = format!("v1,bm90IHRoaXMgb25l {SIGNATURE}");
        assert!(key.verify(ID, TIMESTAMP, BODY.as_bytes(), &header));
        assert!(!key.verify(ID, TIMESTAMP + 1, BODY.as_bytes(), &header));
        assert!(!key.verify("msg_other", TIMESTAMP, BODY.as_bytes(), &header));
        assert!(!key.verify(ID, TIMESTAMP, br#"{"test": 1}"#, &header));
        assert!(!key.verify(ID, TIMESTAMP, BODY.as_bytes(), "v1a,xyz"));
    }

    #[test]
    fn refuses_secrets_that_are_not_standard_webhooks_keys() {
        let wrong_prefix = SigningKey::from_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err();
        assert!(wrong_prefix.contains("whsec_"), "{wrong_prefix}");
        let not_base64 = SigningKey::from_secret("whsec_not base64!").unwrap_err();
        assert!(not_base64.contains("base64"), "{not_base64}");
        let short = SigningKey::from_secret("whsec_c2hvcnQ=").unwrap_err();
        assert!(short.contains("5 bytes"), "{short}");
        assert!(!format!("{:?}", SigningKey::from_secret(SECRET).unwrap()).contains("MfKQ"));
    }
}
