use std::time::{Duration, SystemTime};

/// How a failure should be handled by the queue.
///
/// Every library crate's error enum maps each of its variants to one of
/// these. The queue acts on this value alone; it never parses messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth another attempt after the usual backoff (network errors, 5xx).
    Transient,
    /// Another attempt after at least this long (429/503 with `Retry-After`).
    RetryAfter(Duration),
    /// Retrying cannot help (the file is gone, the hash does not match after
    /// the allowed retries, the payload is invalid): dead-letter now.
    Permanent,
}

impl ErrorClass {
    /// True unless the error is permanent.
    pub fn is_retryable(self) -> bool {
        !matches!(self, ErrorClass::Permanent)
    }

    /// A short label for metrics and logs (`transient`, `retry_after`, `permanent`).
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::RetryAfter(_) => "retry_after",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// Implemented by each crate's error enum: the one retry classification.
pub trait Classify {
    /// What the queue should do about this error.
    fn class(&self) -> ErrorClass;
}

/// A `Retry-After` header value (RFC 9110 section 10.2.3): delta-seconds
/// (digits only) or an HTTP-date, as the time left from `now`; a date in
/// the past is "now". Anything else is `None`: the caller's usual backoff.
///
/// One parser for every peer that answers 429/503 (download hosts, gateway
/// APIs, S3), so a value means the same wherever it arrives.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Beyond u64 seconds is "a very long time", not "no advice".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn now() -> SystemTime {
        httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap()
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_nothing_else() {
        let secs = |s| Some(Duration::from_secs(s));
        for (value, expected) in [
            ("7", secs(7)),
            (" 120 ", secs(120)),
            ("0", secs(0)),
            ("99999999999999999999999", secs(u64::MAX)),
            // The three HTTP-date forms, a minute after `now`.
            ("Sun, 06 Nov 1994 08:50:37 GMT", secs(60)),
            ("Sunday, 06-Nov-94 08:50:37 GMT", secs(60)),
            ("Sun Nov  6 08:50:37 1994", secs(60)),
            ("Sun, 06 Nov 1994 08:00:00 GMT", secs(0)),
            ("", None),
            ("soon", None),
            ("-1", None),
            ("+5", None),
            ("1.5", None),
            ("5 s", None),
        ] {
            assert_eq!(parse_retry_after(value, now()), expected, "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn any_header_value_is_answered_without_a_panic_and_the_same_each_time(
            value in ".{0,64}",
        ) {
            prop_assert_eq!(parse_retry_after(&value, now()), parse_retry_after(&value, now()));
        }

        #[test]
        fn delta_seconds_mean_what_they_say(secs in any::<u64>(), pad in "[ \t]{0,3}") {
            let value = format!("{pad}{secs}{pad}");
            prop_assert_eq!(parse_retry_after(&value, now()), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn a_date_means_the_time_left_until_it(offset in -10_000_000i64..10_000_000) {
            let at = if offset >= 0 {
                now() + Duration::from_secs(offset.unsigned_abs())
            } else {
                now() - Duration::from_secs(offset.unsigned_abs())
            };
            let expected = Duration::from_secs(offset.max(0).unsigned_abs());
            prop_assert_eq!(parse_retry_after(&httpdate::fmt_http_date(at), now()), Some(expected));
        }
    }
}
