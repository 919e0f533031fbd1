//! Webhook credential checks shared by the adapters, in constant time, and
//! [`HeadCredential`]: what an account's webhooks carry in their head.

use subtle::ConstantTimeEq;

use crate::ProviderError;
use archiver_core::Secret;

/// The credential an account's webhooks must carry in their head (headers
/// or query), as its config set it; checked before the body is read.
#[derive(Debug)]
pub(crate) enum HeadCredential {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Bearer <token>` or `?token=<token>`, for gateways
    /// whose webhook settings hold only a URL.
    BearerOrQuery(Secret),
    /// `Authorization: Bearer <JWT>`, an HS256 JWT signed with the secret
    /// whose `exp` has not passed (Evolution's instance `jwt_key`).
    Jwt(Secret),
    /// Nothing: the account set `allow_unauthenticated_webhooks = true`.
    None,
}

impl HeadCredential {
    /// Whether webhooks are authenticated at all.
    pub(crate) fn is_required(&self) -> bool {
        !matches!(self, HeadCredential::None)
    }

    /// Checks a request's head against the credential.
    pub(crate) fn check(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<(), ProviderError> {
        match self {
            HeadCredential::Bearer(token) => require_bearer(headers, token),
            HeadCredential::BearerOrQuery(token) => {
                require_bearer_or_query_token(headers, query, token)
            }
            HeadCredential::Jwt(secret) => require_jwt(headers, secret),
            HeadCredential::None => Ok(()),
        }
    }
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The value of the signature header `name` (`X-Hub-Signature-256`,
/// `X-Webhook-Hmac`; matched in any case, named as given in the error):
/// refused from the request head, before the body is read, when it is
/// missing.
pub(crate) fn signature_header<'h>(
    headers: &'h http::HeaderMap,
    name: &str,
) -> Result<&'h [u8], ProviderError> {
    headers
        .get(name)
        .map(http::HeaderValue::as_bytes)
        .ok_or_else(|| ProviderError::Unauthorized(format!("missing {name} header")))
}

/// Whether `signature` is the HMAC (with `M`, e.g. `Hmac<Sha256>`) of the
/// exact `body` under `key`, compared in constant time (`verify_slice`).
pub(crate) fn hmac_matches<M: hmac::Mac + hmac::digest::KeyInit>(
    key: &[u8],
    body: &[u8],
    signature: &[u8],
) -> bool {
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            mac.verify_slice(signature).is_ok()
        }
        // HMAC takes keys of any length; nothing matches a key it refused.
        Err(_) => false,
    }
}

/// `Authorization: Bearer <token>` must carry exactly `expected`.
pub(crate) fn require_bearer(
    headers: &http::HeaderMap,
    expected: &Secret,
) -> Result<(), ProviderError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(ProviderError::Unauthorized(
            "missing Authorization header (expected `Bearer <webhook_token>`)".into(),
        ));
    };
    let presented = value.as_bytes().strip_prefix(b"Bearer ").ok_or_else(|| {
        ProviderError::Unauthorized("Authorization header is not a Bearer token".into())
    })?;
    if constant_time_eq(presented, expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ProviderError::Unauthorized(
            "webhook token does not match".into(),
        ))
    }
}

/// `Authorization: Bearer <token>` or a `token=<token>` query parameter
/// (for providers whose webhook settings allow only a URL).
pub(crate) fn require_bearer_or_query_token(
    headers: &http::HeaderMap,
    query: Option<&str>,
    expected: &Secret,
) -> Result<(), ProviderError> {
    if headers.contains_key(http::header::AUTHORIZATION) {
        return require_bearer(headers, expected);
    }
    let presented = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => Ok(()),
        Some(_) => Err(ProviderError::Unauthorized("webhook token does not match".into())),
        None => Err(ProviderError::Unauthorized(
            "missing credentials (expected `Authorization: Bearer <webhook_token>` or `?token=<webhook_token>`)".into(),
        )),
    }
}

/// `Authorization: Bearer <JWT>` must carry an HS256 JWT signed with
/// `secret`.
fn require_jwt(headers: &http::HeaderMap, secret: &Secret) -> Result<(), ProviderError> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ProviderError::Unauthorized(
                "missing `Authorization: Bearer <JWT>` (webhook_jwt_secret is set)".into(),
            )
        })?;
    verify_hs256(token, secret)
}

#[derive(serde::Deserialize)]
struct Claims {
    #[allow(dead_code)] // checked by the validation
    exp: u64,
}

/// Checks an HS256 JWT: signature with `secret` (constant time, in
/// `jsonwebtoken`), `exp` present and not past (30 s leeway for clock skew).
fn verify_hs256(token: &str, secret: &Secret) -> Result<(), ProviderError> {
    use jsonwebtoken::errors::ErrorKind;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 30;
    validation.set_required_spec_claims(&["exp"]);
    let key = jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes());
    jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map(|_| ())
        .map_err(|e| {
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "webhook JWT has expired",
                ErrorKind::InvalidSignature => "webhook JWT signature does not match",
                ErrorKind::InvalidAlgorithm => "webhook JWT is not HS256",
                ErrorKind::MissingRequiredClaim(_) => "webhook JWT has no `exp`",
                _ => "webhook JWT is malformed",
            };
            ProviderError::Unauthorized(why.into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(a) = auth {
            h.insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_query_token_is_accepted_in_place_of_the_header() {
        let secret = Secret::new("s3cret");
        let none = headers(None);
        assert!(require_bearer_or_query_token(&none, Some("a=1&token=s3cret"), &secret).is_ok());
        assert!(
            require_bearer_or_query_token(&headers(Some("Bearer s3cret")), None, &secret).is_ok()
        );
        assert!(require_bearer_or_query_token(&none, Some("token=nope"), &secret).is_err());
        assert!(require_bearer_or_query_token(&none, None, &secret).is_err());
        // A wrong header is not rescued by a right query token.
        let wrong = headers(Some("Bearer nope"));
        assert!(require_bearer_or_query_token(&wrong, Some("token=s3cret"), &secret).is_err());
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let secret = Secret::new("s3cret");
        assert!(require_bearer(&headers(Some("Bearer s3cret")), &secret).is_ok());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret "),
            Some("Basic s3cret"),
            Some("s3cret"),
        ] {
            let err = require_bearer(&headers(bad), &secret).unwrap_err();
            assert!(matches!(err, ProviderError::Unauthorized(_)), "{bad:?}");
            assert!(!err.to_string().contains("s3cret"));
        }
    }
}
