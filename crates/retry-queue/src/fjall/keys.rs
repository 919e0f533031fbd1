//! How index keys are spelled: fixed-width big-endian times (so that byte
//! order is time order) and length-prefixed strings (so that no id, however
//! hostile, can end one component early and match another's prefix), with
//! the job or delivery id as the unprefixed tail, read back by
//! [`Key::tail`].

use archiver_core::UnixMillis;

/// A key under construction, or one read back from an index.
#[derive(Debug, Default)]
pub(super) struct Key(Vec<u8>);

impl Key {
    pub(super) fn new() -> Self {
        Self(Vec::with_capacity(64))
    }

    /// A time, ordered as the signed value (the sign bit flipped).
    pub(super) fn time(mut self, t: UnixMillis) -> Self {
        self.0.extend_from_slice(&time_bytes(t));
        self
    }

    /// A one-byte tag (a state).
    pub(super) fn tag(mut self, tag: u8) -> Self {
        self.0.push(tag);
        self
    }

    /// A string that other components follow: its length, then its bytes.
    pub(super) fn text(mut self, s: &str) -> Self {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// The last component, as is.
    pub(super) fn tail(mut self, s: &str) -> Vec<u8> {
        self.0.extend_from_slice(s.as_bytes());
        self.0
    }

    /// The key so far (a prefix to scan).
    pub(super) fn prefix(self) -> Vec<u8> {
        self.0
    }
}

/// `t`'s key bytes.
pub(super) fn time_bytes(t: UnixMillis) -> [u8; 8] {
    (t.cast_unsigned() ^ (1 << 63)).to_be_bytes()
}

/// The time at `at` in `key` (a key written by [`Key::time`]).
pub(super) fn time_at(key: &[u8], at: usize) -> Option<UnixMillis> {
    let bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)).cast_signed())
}

/// The id after the first `skip` bytes of an index key.
pub(super) fn id_after(key: &[u8], skip: usize) -> Option<&str> {
    std::str::from_utf8(key.get(skip..)?).ok()
}

/// The `n` length-prefixed strings at the start of `key`, and its tail.
pub(super) fn split(key: &[u8], n: usize) -> Option<(Vec<&str>, &str)> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = key;
    for _ in 0..n {
        let len = usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
        parts.push(std::str::from_utf8(rest.get(4..4 + len)?).ok()?);
        rest = rest.get(4 + len..)?;
    }
    Some((parts, std::str::from_utf8(rest).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_numbers_and_read_back() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let keys: Vec<_> = times.iter().map(|t| Key::new().time(*t).prefix()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for (t, key) in times.iter().zip(&keys) {
            assert_eq!(time_at(key, 0), Some(*t));
        }
    }

    #[test]
    fn a_string_cannot_reach_into_the_next_component() {
        // Without the length, "a" + "\0b..." and "a\0b" + "..." could share
        // a prefix; with it, an account's prefix holds only that account.
        let a = Key::new().text("a").prefix();
        let ab = Key::new().text("a\0b").tail("x");
        assert!(!ab.starts_with(&a));
    }

    #[test]
    fn split_reads_back_what_text_and_tail_wrote() {
        let key = Key::new().text("acct").text("").tail("id:1");
        assert_eq!(split(&key, 2), Some((vec!["acct", ""], "id:1")));
        assert_eq!(split(&key[..5], 1), None);
    }
}
