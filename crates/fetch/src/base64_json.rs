//! A file sent as base64 inside a JSON answer, decoded while it streams.
//!
//! Some gateways serve a file only as `{"base64": "<the whole file>", ...}`
//! (Evolution's `getBase64FromMediaMessage`: up to 140 MiB of JSON for a
//! 100 MB video). Reading that answer whole, then the string, then the
//! decoded bytes held the file about three times in memory. Here a streaming
//! JSON reader ([`struson`]) hands over the string value piece by piece,
//! each piece is base64-decoded as it comes, and the decoded bytes leave in
//! 64 KiB chunks: memory is a few buffers, whatever the file size.
//!
//! The reader is blocking (`std::io::Read`), so it runs on a blocking
//! thread fed by a bounded channel ([`ChannelReader`]); the async side keeps
//! the timeouts, size caps and progress of an ordinary download.
//!
//! Accepted, like the gateways send it: standard or URL-safe alphabet,
//! padded or not, whitespace anywhere, and an optional `data:…;base64,`
//! prefix.

use std::io::{self, Read};

use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use bytes::{Buf, Bytes};
use struson::reader::{JsonReader, JsonStreamReader, ValueType};
use tokio::sync::mpsc;

use crate::FetchError;

/// Size of the decoded chunks handed to the spool writer.
pub(crate) const DECODED_CHUNK: usize = 64 * 1024;

/// A `data:` URL's prefix longer than this is not one.
const MAX_DATA_URL_PREFIX: usize = 256;

/// The standard alphabet (URL-safe characters are mapped onto it first),
/// padding optional.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The largest answer that can carry a file of `max_file_bytes`: its base64
/// (4 characters per 3 bytes) plus room for the JSON around it.
pub(crate) fn answer_limit(max_file_bytes: u64) -> u64 {
    max_file_bytes
        .div_ceil(3)
        .saturating_mul(4)
        .saturating_add(64 * 1024)
}

/// Reads the JSON object in `input`, finds its top-level string member
/// `field`, and passes the decoded file to `out` in chunks of at most
/// [`DECODED_CHUNK`] bytes. Then reads `input` to its end either way, so
/// that the sender never blocks on a reader that gave up: the download's
/// own errors (timeout, truncation, size) come first, this one after.
pub(crate) fn decode_field(
    mut input: impl Read,
    field: &str,
    out: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), FetchError> {
    let result = decode(&mut input, field, out);
    if result.is_ok() {
        return result;
    }
    // Drain the rest; its own read errors say nothing more.
    let _ = io::copy(&mut input, &mut io::sink());
    result
}

fn decode(
    input: impl Read,
    field: &str,
    mut out: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), FetchError> {
    let mut json = JsonStreamReader::new(input);
    json.begin_object().map_err(not_json)?;
    let mut found = false;
    while json.has_next().map_err(not_json)? {
        if json.next_name().map_err(not_json)? != field || found {
            json.skip_value().map_err(not_json)?;
            continue;
        }
        found = true;
        if json.peek().map_err(not_json)? != ValueType::String {
            return Err(bad_answer(format!("`{field}` is not a string")));
        }
        let text = json.next_string_reader().map_err(not_json)?;
        let text = Base64Text::new(text).map_err(|e| bad_answer(format!("`{field}`: {e}")))?;
        let mut decoder = base64::read::DecoderReader::new(text, &ENGINE);
        let mut chunk = vec![0; DECODED_CHUNK];
        loop {
            let n = read_full(&mut decoder, &mut chunk)
                .map_err(|e| bad_answer(format!("`{field}` is not base64: {e}")))?;
            if n == 0 {
                break;
            }
            out(&chunk[..n]).map_err(|e| FetchError::Io(format!("passing on the file: {e}")))?;
        }
    }
    json.end_object().map_err(not_json)?;
    json.consume_trailing_whitespace().map_err(not_json)?;
    if found {
        Ok(())
    } else {
        Err(bad_answer(format!("the answer has no `{field}`")))
    }
}

/// Fills `buf` as far as the reader goes, so that chunks are full-sized.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn bad_answer(detail: String) -> FetchError {
    FetchError::BadAnswer(detail)
}

fn not_json(e: struson::reader::ReaderError) -> FetchError {
    bad_answer(format!("not the expected JSON object: {e}"))
}

/// The characters of a base64 string as the decoder wants them: a
/// `data:…;base64,` prefix skipped, whitespace dropped, the URL-safe `-`
/// and `_` turned into `+` and `/`.
struct Base64Text<R> {
    /// What was read while looking for a `data:` prefix, not yet passed on.
    head: io::Cursor<Vec<u8>>,
    rest: R,
}

impl<R: Read> Base64Text<R> {
    fn new(mut rest: R) -> io::Result<Self> {
        let mut head = Vec::new();
        let mut byte = [0; 1];
        // Read up to the end of a `data:` prefix, or until it is clear
        // there is none.
        loop {
            if head.len() >= 5 && !head.starts_with(b"data:") {
                break;
            }
            if head.starts_with(b"data:") && head.ends_with(b";base64,") {
                head.clear();
                break;
            }
            let ended = rest.read(&mut byte)? == 0;
            if head.starts_with(b"data:") && (ended || head.len() > MAX_DATA_URL_PREFIX) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a data: URL without `;base64,`",
                ));
            }
            if ended {
                break;
            }
            if !byte[0].is_ascii_whitespace() || !head.is_empty() {
                head.push(byte[0]);
            }
        }
        Ok(Self {
            head: io::Cursor::new(head),
            rest,
        })
    }
}

impl<R: Read> Read for Base64Text<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = if self.head.has_remaining() {
                self.head.read(buf)?
            } else {
                self.rest.read(buf)?
            };
            if n == 0 {
                return Ok(0);
            }
            let mut kept = 0;
            for i in 0..n {
                let c = match buf[i] {
                    b'-' => b'+',
                    b'_' => b'/',
                    c if c.is_ascii_whitespace() => continue,
                    c => c,
                };
                buf[kept] = c;
                kept += 1;
            }
            if kept > 0 {
                return Ok(kept);
            }
        }
    }
}

/// A blocking `Read` over the chunks of a body arriving on a channel; the
/// end of the channel is the end of the body.
pub(crate) struct ChannelReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose;

    use super::*;

    fn decoded(json: &str) -> Result<Vec<u8>, FetchError> {
        let mut file = Vec::new();
        decode_field(json.as_bytes(), "base64", |chunk| {
            assert!(chunk.len() <= DECODED_CHUNK);
            file.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(file)
    }

    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn every_encoding_a_gateway_sends_decodes_to_the_same_file() {
        let bytes = file(200_003);
        let standard = general_purpose::STANDARD.encode(&bytes);
        let wrapped: String = standard
            .as_bytes()
            .chunks(76)
            .map(|line| format!("{}\\n", std::str::from_utf8(line).unwrap()))
            .collect();
        for text in [
            standard.clone(),
            general_purpose::STANDARD_NO_PAD.encode(&bytes),
            general_purpose::URL_SAFE.encode(&bytes),
            general_purpose::URL_SAFE_NO_PAD.encode(&bytes),
            format!("data:video/mp4;base64,{standard}"),
            format!("  {standard}\\n"),
            wrapped,
        ] {
            let json =
                format!(r#"{{"mimetype":"video/mp4","base64":"{text}","size":{{"n":[1,2]}}}}"#);
            assert_eq!(decoded(&json).unwrap(), bytes, "{}", &text[..40]);
        }
    }

    #[test]
    fn an_empty_file_and_a_short_one_decode() {
        assert_eq!(decoded(r#"{"base64":""}"#).unwrap(), b"");
        assert_eq!(decoded(r#"{"base64":"YQ=="}"#).unwrap(), b"a");
        assert_eq!(decoded(r#"{"base64":"YWI"}"#).unwrap(), b"ab");
    }

    #[test]
    fn an_answer_that_is_not_the_file_says_why() {
        for (json, says) in [
            (
                "<html>502 Bad Gateway</html>",
                "not the expected JSON object",
            ),
            (r#"{"message":"media not found"}"#, "has no `base64`"),
            (r#"{"base64":null}"#, "is not a string"),
            (r#"{"base64":"not*base64"}"#, "is not base64"),
            (r#"{"base64":"data:image/png,abc"}"#, "data: URL"),
            (
                r#"{"base64":"YQ=="} trailing"#,
                "not the expected JSON object",
            ),
            (r#"{"base64":"YQ=="#, "JSON syntax error"),
            (r#"["YQ=="]"#, "not the expected JSON object"),
        ] {
            let error = decoded(json).unwrap_err();
            assert!(
                matches!(&error, FetchError::BadAnswer(d) if d.contains(says)),
                "{json}: {error}"
            );
        }
    }

    #[test]
    fn a_reader_that_gives_up_still_reads_its_input_to_the_end() {
        let input = br#"{"base64":"!!!!"}                    "#;
        let mut reader = io::Cursor::new(&input[..]);
        assert!(decode_field(&mut reader, "base64", |_| Ok(())).is_err());
        assert_eq!(reader.position() as usize, input.len());
    }

    /// A `Read` that hands out `input` in pieces of the given sizes, as a
    /// body arrives in chunks.
    struct Pieces<'a> {
        input: &'a [u8],
        sizes: Vec<usize>,
        next: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.next % self.sizes.len()].max(1);
            self.next += 1;
            let n = size.min(buf.len()).min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Ok(n)
        }
    }

    proptest::proptest! {
        #[test]
        fn any_file_in_any_chunking_decodes_to_itself(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            url_safe in proptest::prelude::any::<bool>(),
        ) {
            let engine = if url_safe { general_purpose::URL_SAFE_NO_PAD } else { general_purpose::STANDARD };
            let json = format!(r#"{{"a":[1,{{"b":"}}"}}],"base64":"{}"}}"#, engine.encode(&bytes));
            let mut file = Vec::new();
            let input = Pieces { input: json.as_bytes(), sizes, next: 0 };
            decode_field(input, "base64", |chunk| { file.extend_from_slice(chunk); Ok(()) }).unwrap();
            proptest::prop_assert_eq!(file, bytes);
        }

        #[test]
        fn any_answer_is_read_to_its_end_without_a_panic(
            answer in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        ) {
            let mut reader = io::Cursor::new(&answer[..]);
            let first = decode_field(&mut reader, "base64", |_| Ok(())).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(reader.position() as usize, answer.len());
            let again = decode_field(&answer[..], "base64", |_| Ok(())).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(first, again);
        }
    }

    #[test]
    fn the_answer_limit_fits_the_largest_file_and_its_envelope() {
        let bytes = file(3000);
        let json = format!(
            r#"{{"base64":"{}"}}"#,
            general_purpose::STANDARD.encode(&bytes)
        );
        assert!(json.len() as u64 <= answer_limit(3000));
        assert_eq!(answer_limit(u64::MAX), u64::MAX);
    }
}
