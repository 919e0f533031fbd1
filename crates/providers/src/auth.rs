//! Constant-time webhook credential checks shared by the adapters.

use subtle::ConstantTimeEq;

use crate::ProviderError;
use archiver_core::Secret;

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
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
