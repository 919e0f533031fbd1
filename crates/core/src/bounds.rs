//! The bounds every value taken from a webhook must respect before it
//! becomes part of a job: one rule, in one place, called by every adapter.
//!
//! Why here: a job's ids become queue keys, storage key segments and file
//! names (`messages/{account}/…/{message_id}.json`, percent-encoded outside
//! `[A-Za-z0-9._=-]`), and its timestamps decide its deadline and its
//! manifest's folder. A value no stage can hold must be refused at the
//! front door (HTTP 400 naming the field), not discovered by a store
//! failing, or a date wrapping to 1970, days later.

use std::time::Duration;

use crate::clock::UnixMillis;

/// The earliest message time accepted: 2009-01-01T00:00:00Z, Unix seconds.
/// WhatsApp did not exist before; an earlier date is a unit or encoding error.
pub const EARLIEST_MESSAGE_SECS: i64 = 1_230_768_000;
/// The latest message time accepted: 9999-12-31T23:59:59Z, Unix seconds
/// (the last date a four-digit `{yyyy}` storage folder can hold).
pub const LATEST_MESSAGE_SECS: i64 = 253_402_300_799;
/// The longest id, in bytes once percent-encoded as a storage key segment
/// (each byte outside `[A-Za-z0-9._=-]` counts three): 255 (the longest
/// file name on common file systems, and a comfortable S3 key segment)
/// less the `.json` a manifest name adds.
pub const MAX_ENCODED_ID_BYTES: usize = 250;

/// A webhook value outside the bounds; the message names the field and says
/// which rule it broke, never more of the value than a short prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {problem}")]
pub struct OutOfBounds {
    /// Where the value sat in the webhook (`messages[0].timestamp`).
    pub field: String,
    /// Which rule it broke.
    pub problem: String,
}

impl OutOfBounds {
    fn new(field: &str, problem: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

/// A message's own time, given in Unix seconds, as Unix milliseconds.
/// Refused when before 2009-01-01 or after the year 9999.
pub fn message_time(field: &str, secs: i64) -> Result<UnixMillis, OutOfBounds> {
    if !(EARLIEST_MESSAGE_SECS..=LATEST_MESSAGE_SECS).contains(&secs) {
        return Err(OutOfBounds::new(
            field,
            format!("is {secs}: not a Unix time in seconds between 2009-01-01 and 9999-12-31"),
        ));
    }
    // In range, so the product fits an i64 with room to spare.
    Ok(secs * 1000)
}

/// A message time written as text or a JSON number, in Unix seconds, as
/// Unix milliseconds: an integer (`"1700000000"` or `1700000000`) within
/// [`message_time`]'s bounds. A fraction, an exponent or anything else is
/// refused rather than rounded.
pub fn message_time_text(field: &str, text: &str) -> Result<UnixMillis, OutOfBounds> {
    let secs: i64 = text
        .trim()
        .parse()
        .map_err(|_| OutOfBounds::new(field, "is not an integer number of Unix seconds"))?;
    message_time(field, secs)
}

/// When the provider forgets a job's file: the earlier of the message's own
/// time and the time the webhook arrived, plus the account's retention.
///
/// The earlier of the two, because a sender's clock (or a forged payload)
/// can date a message in the future, and a provider counts its retention
/// from when it got the file, which is never after the webhook arrived.
/// `None` when the sum does not fit (a retention of millions of years).
pub fn deadline(
    message_at: UnixMillis,
    received_at: UnixMillis,
    retention: Duration,
) -> Option<UnixMillis> {
    let retention_ms = i64::try_from(retention.as_millis()).ok()?;
    message_at.min(received_at).checked_add(retention_ms)
}

/// Checks an id taken from a webhook (message, media, chat or account id):
/// 1 to [`MAX_ENCODED_ID_BYTES`] bytes once percent-encoded for storage, of
/// printable ASCII (no spaces, no control characters), and not `.` or `..`.
///
/// Every id the providers document (Green API's hex ids, `wamid.…`,
/// `…@c.us`, Baileys' key ids, UUID media ids) passes with room to spare;
/// the bounds are what every store can hold as a key segment and a file
/// name, whichever stage uses the id.
pub fn check_id(field: &str, id: &str) -> Result<(), OutOfBounds> {
    if id.is_empty() {
        return Err(OutOfBounds::new(field, "is empty"));
    }
    if let Some(bad) = id.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(OutOfBounds::new(
            field,
            format!(
                "holds byte 0x{bad:02x}: ids are printable ASCII without spaces or control characters"
            ),
        ));
    }
    if id.bytes().all(|b| b == b'.') && id.len() <= 2 {
        return Err(OutOfBounds::new(field, "is `.` or `..`, not an id"));
    }
    let encoded: usize = id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'=' | b'-') {
                1
            } else {
                3
            }
        })
        .sum();
    if encoded > MAX_ENCODED_ID_BYTES {
        return Err(OutOfBounds::new(
            field,
            format!(
                "is too long: {encoded} bytes as a storage key segment, at most {MAX_ENCODED_ID_BYTES}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    /// 2023-11-14T22:13:20Z.
    const NOW_MS: i64 = 1_700_000_000_000;

    #[test]
    fn a_deadline_counts_from_the_earlier_of_message_time_and_arrival() {
        // A message from an hour ago: its own time.
        let hour_ago = NOW_MS - 3_600_000;
        assert_eq!(
            deadline(hour_ago, NOW_MS, 14 * DAY),
            Some(hour_ago + 14 * 86_400_000)
        );
        // A message dated ten years ahead: arrival time, not ten years on.
        let future = NOW_MS + 3_650 * 86_400_000;
        assert_eq!(
            deadline(future, NOW_MS, 14 * DAY),
            Some(NOW_MS + 14 * 86_400_000)
        );
    }

    #[test]
    fn a_deadline_that_does_not_fit_is_none_never_wrapped_or_saturated() {
        assert_eq!(deadline(NOW_MS, NOW_MS, Duration::MAX), None);
        assert_eq!(
            deadline(i64::MAX - 10, i64::MAX - 10, Duration::from_millis(11)),
            None
        );
        assert_eq!(
            deadline(i64::MAX - 10, NOW_MS, DAY),
            Some(NOW_MS + 86_400_000)
        );
    }

    #[test]
    fn message_times_before_2009_or_after_9999_are_refused_naming_the_field() {
        assert_eq!(message_time("ts", 1_700_000_000), Ok(NOW_MS));
        assert_eq!(
            message_time("ts", EARLIEST_MESSAGE_SECS),
            Ok(EARLIEST_MESSAGE_SECS * 1000)
        );
        assert!(message_time("ts", LATEST_MESSAGE_SECS).is_ok());
        for bad in [
            0,
            -1,
            EARLIEST_MESSAGE_SECS - 1,
            LATEST_MESSAGE_SECS + 1,
            // Milliseconds where seconds belong.
            1_700_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            let err = message_time("messages[0].timestamp", bad).unwrap_err();
            assert_eq!(err.field, "messages[0].timestamp", "{bad}");
            assert!(err.to_string().contains("`messages[0].timestamp`"), "{err}");
        }
    }

    #[test]
    fn message_times_as_text_must_be_integers() {
        assert_eq!(message_time_text("ts", " 1700000000 "), Ok(NOW_MS));
        for bad in [
            "",
            "abc",
            "1700000000.5",
            "1.7e9",
            "9223372036854775808",
            "0x10",
        ] {
            let err = message_time_text("ts", bad).unwrap_err();
            assert_eq!(err.field, "ts", "{bad:?}");
        }
        assert!(message_time_text("ts", "99999999999999").is_err());
    }

    #[test]
    fn ids_the_providers_document_are_accepted() {
        for id in [
            "A322F800D3F12CD4858CC947DAFB77A2",
            "BAE5F4886F6F2D05",
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjVGRkI4RjQ1RkQ4NjgxQQA=",
            "79001234568@c.us",
            "120363000000000000@g.us",
            "false_11111111111@c.us_AAAAAAAAAAAAAAAAAAAA",
            "fd81acff-0c4a-4d2b-9a47-2a6b3a5c7e10",
            "1101000001",
            "a",
            "...",
        ] {
            assert_eq!(check_id("id", id), Ok(()), "{id}");
        }
    }

    #[test]
    fn ids_no_store_can_hold_are_refused_naming_the_field() {
        let longest_plain = "a".repeat(MAX_ENCODED_ID_BYTES);
        assert_eq!(check_id("id", &longest_plain), Ok(()));
        // 84 `@` encode to 252 bytes: over, although only 84 bytes long.
        let too_long_encoded = "@".repeat(84);
        for bad in [
            String::new(),
            ".".into(),
            "..".into(),
            "a b".into(),
            "a\nb".into(),
            "a\0b".into(),
            "ä".into(),
            "a".repeat(MAX_ENCODED_ID_BYTES + 1),
            too_long_encoded,
        ] {
            let err = check_id("idMessage", &bad).unwrap_err();
            assert_eq!(err.field, "idMessage", "{bad:?}");
            assert!(err.to_string().starts_with("field `idMessage` "), "{err}");
        }
    }
}
