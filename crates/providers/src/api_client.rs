use std::time::Duration;

use crate::ProviderError;

/// The most of a provider API answer (JSON, never media) that is read.
const MAX_API_BODY: usize = 1024 * 1024;

/// HTTP client for provider API calls (fresh links, media info, logins).
///
/// Separate from the media download client: API hosts are the operator's own
/// configuration (`api_url`, `graph_url`), not addresses taken from webhooks,
/// so the SSRF guard does not apply, and answers are small JSON documents
/// read with a size cap.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
}

/// A provider API answer, read whole (it is small).
#[derive(Debug)]
pub(crate) struct ApiResponse {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

impl ApiResponse {
    pub(crate) fn json(&self, api: &'static str) -> Result<serde_json::Value, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| ProviderError::Unreachable {
            api,
            detail: format!("answer is not JSON: {e}"),
        })
    }

    /// The body as text, shortened for error messages.
    pub(crate) fn detail(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_owned(),
        }
    }
}

impl ApiClient {
    /// A client with the given connect timeout and whole-request timeout.
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("media-archiver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the provider API client: {e}"))?;
        Ok(Self { http })
    }

    /// Sends a request. `api` names the call in errors; the URL is never
    /// part of an error because some providers put tokens in URL paths.
    pub(crate) async fn send(
        &self,
        api: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<ApiResponse, ProviderError> {
        self.send_limited(api, request, MAX_API_BODY).await
    }

    /// [`ApiClient::send`] for an answer that may be larger than usual (a
    /// file inside JSON, e.g. Evolution's base64): read up to `limit` bytes.
    pub(crate) async fn send_limited(
        &self,
        api: &'static str,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<ApiResponse, ProviderError> {
        let unreachable = |e: reqwest::Error| ProviderError::Unreachable {
            api,
            detail: describe(&e),
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| archiver_core::parse_retry_after(v, std::time::SystemTime::now()));
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > limit {
                return Err(ProviderError::Unreachable {
                    api,
                    detail: format!("answer larger than {limit} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(ApiResponse {
            status,
            retry_after,
            body,
        })
    }

    pub(crate) fn post(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.http.post(url)
    }

    pub(crate) fn get(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.http.get(url)
    }
}

/// A reqwest error without its URL (which may hold a token).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
