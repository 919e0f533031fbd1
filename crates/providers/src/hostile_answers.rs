//! Property tests: every function that reads a gateway API's error answer
//! (status, `Retry-After`, body) into a [`ProviderError`] answers arbitrary
//! and mutated real answers without a panic, with the same class for the
//! same answer, a detail short enough for a log line, and never the
//! account's token, even when the answer echoes it.
//!
//! Cases per property: `PROPTEST_CASES` (default 256); docs/development.md
//! has the command for a long run.

use std::time::Duration;

use archiver_core::{Classify, ErrorClass};
use proptest::prelude::*;

use crate::ProviderError;
use crate::api_client::ApiResponse;
use crate::cloudapi::{CloudApi, CloudApiConfig};

const ACCESS_TOKEN: &str = "EAAG-graph-access-token-4b1f";

/// The longest detail any of them writes: a body cut to 300 characters
/// plus the adapter's own words around it.
const MAX_DETAIL_CHARS: usize = 600;

/// Error answers as the gateways document them (providers.md, (f) of each
/// section), to be mutated.
fn real_answers() -> Vec<(u16, &'static str)> {
    vec![
        (
            400,
            r#"{"error":{"message":"(#131052) Media download error","type":"OAuthException","code":131052,"fbtrace_id":"AbCd"}}"#,
        ),
        (
            401,
            r#"{"error":{"message":"Error validating access token: EAAG-graph-access-token-4b1f","type":"OAuthException","code":190}}"#,
        ),
        (
            429,
            r#"{"error":{"message":"(#4) Application request limit reached","code":4}}"#,
        ),
        (
            404,
            r#"{"errors":[{"code":1006,"title":"Resource not found","details":"unknown media id"}],"meta":{"api_status":"stable"}}"#,
        ),
        (
            404,
            r#"{"errors":[{"code":1006,"title":"Media not found in the datastore","details":""}]}"#,
        ),
        (400, "Message not found by id"),
        (400, "instance in starting process"),
        (466, r#"{"message":"quota exceeded"}"#),
        (500, "<html><body>Internal Server Error</body></html>"),
        (200, r#"{"code":10001,"message":"sign error","data":null}"#),
        (
            422,
            r#"{"statusCode":422,"message":"Session status is not as expected. Try again later or restart the session","session":"default","status":"STARTING","expected":["WORKING"]}"#,
        ),
        (401, r#"{"message":"Unauthorized","statusCode":401}"#),
    ]
}

fn response(status: u16, body: Vec<u8>, retry_after: Option<Duration>) -> ApiResponse {
    ApiResponse {
        status,
        retry_after,
        body,
    }
}

fn cloud_api() -> CloudApi {
    let config: CloudApiConfig = toml::from_str(&format!(
        r#"
        name = "meta"
        graph_url = "http://127.0.0.1:9/v21.0"
        access_token = "{ACCESS_TOKEN}"
        app_secret = "app-secret"
        verify_token = "verify-me"
        "#
    ))
    .unwrap();
    CloudApi::new(&config, crate::testing::api()).unwrap()
}

/// Each reader of error answers, by name.
fn read_with_each(
    cloud: &CloudApi,
    answer: &ApiResponse,
    attempt: u32,
) -> Vec<(&'static str, ProviderError)> {
    vec![
        (
            "greenapi",
            crate::greenapi::api_error("downloadFile", answer, attempt),
        ),
        ("onprem", crate::onprem::api_error("media", answer, attempt)),
        ("cloudapi", cloud.api_error("media", answer)),
        ("nxcloud", crate::nxcloud::http_error(answer)),
        ("waha", crate::waha::api_error(answer, attempt)),
    ]
}

fn check(answer: &ApiResponse, attempt: u32) -> Result<(), TestCaseError> {
    // One adapter for both readings; building it per call was most of a
    // case's time.
    let cloud = cloud_api();
    let first = read_with_each(&cloud, answer, attempt);
    let again = read_with_each(&cloud, answer, attempt);
    for ((name, error), (_, repeat)) in first.iter().zip(&again) {
        prop_assert_eq!(error.class(), repeat.class(), "{}", name);
        let text = error.to_string();
        prop_assert!(
            text.chars().count() <= MAX_DETAIL_CHARS,
            "{name}: {} chars",
            text.chars().count()
        );
        if *name == "cloudapi" {
            prop_assert!(!text.contains(ACCESS_TOKEN), "{}: {}", name, text);
        }
        if let ErrorClass::RetryAfter(wait) = error.class() {
            prop_assert!(
                !wait.is_zero() || answer.retry_after == Some(Duration::ZERO),
                "{name}"
            );
        }
    }
    Ok(())
}

fn retry_after() -> impl Strategy<Value = Option<Duration>> {
    prop::option::of((0u64..1_000_000).prop_map(Duration::from_secs))
}

proptest! {
    #[test]
    fn arbitrary_error_answers_are_read_without_a_panic(
        status in 100u16..600,
        body in prop::collection::vec(any::<u8>(), 0..2048),
        retry_after in retry_after(),
        attempt in 1u32..20,
    ) {
        check(&response(status, body, retry_after), attempt)?;
    }

    #[test]
    fn mutated_real_error_answers_are_read_without_a_panic(
        pick in any::<prop::sample::Index>(),
        status in prop::option::of(100u16..600),
        cut in any::<prop::sample::Index>(),
        insert in ".{0,400}",
        retry_after in retry_after(),
        attempt in 1u32..20,
    ) {
        let answers = real_answers();
        let (real_status, body) = answers[pick.index(answers.len())];
        // Cut at a char boundary and splice in arbitrary text.
        let at = body.char_indices().map(|(i, _)| i).nth(cut.index(body.chars().count().max(1))).unwrap_or(body.len());
        let mutated = format!("{}{insert}{}", &body[..at], &body[at..]);
        check(&response(status.unwrap_or(real_status), mutated.into_bytes(), retry_after), attempt)?;
    }
}

#[test]
fn every_real_error_answer_is_read_as_documented() {
    let cloud = cloud_api();
    for (status, body) in real_answers() {
        for (name, error) in read_with_each(&cloud, &response(status, body.into(), None), 1) {
            assert!(
                matches!(error, ProviderError::Api { status: s, .. } if s == status),
                "{name}: {error}"
            );
        }
    }
}
