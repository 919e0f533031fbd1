use std::fmt;

use archiver_core::Secret;
use bytes::Bytes;
use http::{HeaderName, Method};
use url::Url;

use crate::redact_url;

/// One HTTP request whose response body is the file, or carries it (see
/// [`Answer`]).
///
/// Header values are [`Secret`]s because they are often credentials (bearer
/// tokens, API keys); `Debug` shows header names only and the URL redacted.
/// Caller headers are sent to the first URL's origin only: a redirect to
/// another scheme, host or port drops them all.
#[derive(Clone)]
pub struct DownloadRequest {
    /// Where the file is.
    pub url: Url,
    /// Usually `GET`; some providers serve files from a `POST`.
    pub method: Method,
    /// Extra request headers; values may be tokens and are never logged.
    pub headers: Vec<(HeaderName, Secret)>,
    /// Request body, for `POST` downloads.
    pub body: Option<Bytes>,
    /// How the response body holds the file.
    pub answer: Answer,
    /// A byte cap for this file below `fetch.max_file_bytes` (an account's
    /// `rules.max_file_bytes`); the lower of the two applies.
    pub max_file_bytes: Option<u64>,
}

/// How a response body holds the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Answer {
    /// The body is the file.
    #[default]
    File,
    /// The body is a JSON object whose top-level string member of this name
    /// is the file in base64 (standard or URL-safe, padded or not, perhaps
    /// a `data:` URL). It is decoded while it streams, never held whole;
    /// `max_file_bytes` applies to the decoded file.
    Base64JsonField(&'static str),
}

impl DownloadRequest {
    /// A plain `GET` of `url` with no extra headers.
    pub fn get(url: Url) -> Self {
        Self {
            url,
            method: Method::GET,
            headers: Vec::new(),
            body: None,
            answer: Answer::File,
            max_file_bytes: None,
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: HeaderName, value: Secret) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl fmt::Debug for DownloadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &Secret)> =
            self.headers.iter().map(|(n, v)| (n.as_str(), v)).collect();
        f.debug_struct("DownloadRequest")
            .field("url", &redact_url(&self.url))
            .field("method", &self.method)
            .field("headers", &headers)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .field("answer", &self.answer)
            .field("max_file_bytes", &self.max_file_bytes)
            .finish()
    }
}
