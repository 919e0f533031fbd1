//! What every admin-API command (`jobs`, `media`, `notifications`) shares:
//! the `--url` and `--json` options, the client (one request to `--url`,
//! default `http://127.0.0.1:8080`, with `Authorization: Bearer
//! $MEDIA_ARCHIVER_ADMIN_TOKEN`), running a command with its exit code (0
//! ok, 1 the request failed: unreachable, refused, or an error answer,
//! whose message is printed; 2 usage: bad arguments, no token), and the
//! table helpers of their output.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// The variable holding the admin token (never a command-line argument,
/// which would show in `ps` and shell history).
const TOKEN_VAR: &str = "MEDIA_ARCHIVER_ADMIN_TOKEN";
/// Longest `last_error` shown in a table cell.
pub(crate) const ERROR_WIDTH: usize = 60;

/// The options of every admin-API command (`jobs`, `media`, `notifications`).
#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
    /// Base URL of the daemon's HTTP server.
    #[arg(
        long,
        global = true,
        env = "MEDIA_ARCHIVER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Print the API's JSON answer instead of a table or listing.
    #[arg(long, global = true)]
    json: bool,
}

impl ApiArgs {
    /// The admin API at `--url`.
    pub(crate) fn connect(&self) -> Result<Api, Failure> {
        Api::connect(&self.url)
    }

    /// What a command prints: the API's `answer` with `--json`, else `text`.
    pub(crate) fn output(&self, answer: &Value, text: impl FnOnce() -> String) -> String {
        if self.json {
            let mut json = serde_json::to_string_pretty(answer).unwrap_or_default();
            json.push('\n');
            json
        } else {
            text()
        }
    }
}

/// Why a command failed: exit 1 (`Failed`) or 2 (`Usage`).
pub(crate) enum Failure {
    Usage(String),
    Failed(String),
}

/// Runs an admin-API command on a runtime of its own: prints its output
/// and returns 0, or prints the failure and returns 1 or 2.
pub(crate) fn run_command(
    command: impl std::future::Future<Output = Result<String, Failure>>,
) -> ExitCode {
    super::block_on(tokio::runtime::Builder::new_current_thread(), async {
        report(command.await)
    })
}

/// Prints a command's output or failure; its exit code.
fn report(result: Result<String, Failure>) -> ExitCode {
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The admin API at one daemon.
pub(crate) struct Api {
    http: reqwest::Client,
    /// `{url}/api/v1`.
    base: String,
    token: String,
}

impl Api {
    /// The admin API of the daemon at `url`, with the token from
    /// `MEDIA_ARCHIVER_ADMIN_TOKEN` (a usage error when unset).
    fn connect(url: &str) -> Result<Self, Failure> {
        let token = std::env::var(TOKEN_VAR)
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::Usage(format!("set {TOKEN_VAR} to the daemon's admin token"))
            })?;
        let base = url.trim_end_matches('/');
        Ok(Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| Failure::Failed(format!("cannot build the HTTP client: {e}")))?,
            base: format!("{base}/api/v1"),
            token,
        })
    }

    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Failure> {
        let request = self.http.get(format!("{}{path}", self.base)).query(query);
        self.send(request).await
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, Failure> {
        let request = self.http.post(format!("{}{path}", self.base)).query(query);
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            Failure::Failed(format!(
                "cannot reach the admin API at {}: {}",
                self.base,
                error_chain(&e)
            ))
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]
            .as_str()
            .map_or_else(|| "no error message".to_owned(), str::to_owned);
        Err(Failure::Failed(format!(
            "the daemon answered {}: {message}",
            status.as_u16()
        )))
    }
}

/// An error and its causes on one line (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

/// Percent-encodes a path segment (job ids contain `:` and may contain
/// anything a provider put in a message id).
pub(crate) fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(encode("green:ABC-1_2.3~"), "green%3AABC-1_2.3~");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
