//! `media-archiver jobs ...`: the admin API's job routes from a shell.
//!
//! Every subcommand is one request to `--url` (default
//! `http://127.0.0.1:8080`) with `Authorization: Bearer
//! $MEDIA_ARCHIVER_ADMIN_TOKEN`. Output is a table for people, or the API's
//! JSON verbatim with `--json` for scripts. Exit codes: 0 ok, 1 the request
//! failed (unreachable, refused, or an error answer, whose message is
//! printed), 2 usage (bad arguments, no token).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// The variable holding the admin token (never a command-line argument,
/// which would show in `ps` and shell history).
const TOKEN_VAR: &str = "MEDIA_ARCHIVER_ADMIN_TOKEN";
/// Job states the API knows.
const STATES: [&str; 5] = ["pending", "leased", "waiting", "done", "dead"];
/// Longest `last_error` shown in a table cell.
pub(crate) const ERROR_WIDTH: usize = 60;

/// `jobs`: list, inspect and requeue jobs of a running daemon.
#[derive(Debug, clap::Args)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: JobsCommand,
}

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

#[derive(Debug, clap::Subcommand)]
enum JobsCommand {
    /// List jobs, most recently updated first.
    List {
        /// Only jobs in this state.
        #[arg(long, value_parser = STATES)]
        state: Option<String>,
        /// Only jobs of this account.
        #[arg(long)]
        account: Option<String>,
        /// At most this many (the daemon caps it at 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one job: its state, attempts, times and last error.
    Show {
        /// Job id, `{account}:{media or message id}`.
        id: String,
    },
    /// Requeue one job now, or every job in a state (`--state dead`).
    Retry {
        /// Job id to requeue (pending, waiting or dead).
        #[arg(required_unless_present = "state", conflicts_with = "state")]
        id: Option<String>,
        /// Requeue every job in this state instead.
        #[arg(long, value_parser = ["dead", "pending", "waiting"])]
        state: Option<String>,
    },
    /// Counts by state and account, the oldest pending job, jobs at risk.
    Stats,
}

/// Why a command failed: exit 1 (`Failed`) or 2 (`Usage`).
pub(crate) enum Failure {
    Usage(String),
    Failed(String),
}

/// Runs a `jobs` subcommand and returns the process exit code.
pub(crate) fn run(args: &JobsArgs) -> ExitCode {
    run_command(execute(args))
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

async fn execute(args: &JobsArgs) -> Result<String, Failure> {
    let api = args.api.connect()?;
    let (answer, text) = match &args.command {
        JobsCommand::List {
            state,
            account,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(state) = state {
                query.push(("state", state.clone()));
            }
            if let Some(account) = account {
                query.push(("account", account.clone()));
            }
            let answer = api.get("/jobs", &query).await?;
            let text = job_table(answer["jobs"].as_array().map_or(&[][..], Vec::as_slice));
            (answer, text)
        }
        JobsCommand::Show { id } => {
            let answer = api.get(&format!("/jobs/{}", encode(id)), &[]).await?;
            let text = job_details(&answer);
            (answer, text)
        }
        JobsCommand::Retry { id: Some(id), .. } => {
            let answer = api
                .post(&format!("/jobs/{}/retry", encode(id)), &[])
                .await?;
            (answer, format!("requeued {id}\n"))
        }
        JobsCommand::Retry { id: None, state } => {
            let state = state.clone().unwrap_or_else(|| "dead".to_owned());
            let answer = api.post("/jobs/retry", &[("state", state.clone())]).await?;
            let n = answer["requeued"].as_u64().unwrap_or(0);
            let text = format!(
                "requeued {n} {state} job{}\n",
                if n == 1 { "" } else { "s" }
            );
            (answer, text)
        }
        JobsCommand::Stats => {
            let answer = api.get("/stats", &[]).await?;
            let text = stats_table(&answer);
            (answer, text)
        }
    };
    Ok(args.api.output(&answer, || text))
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

fn job_table(jobs: &[Value]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".to_owned();
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            vec![
                text(&job["id"]),
                text(&job["state"]),
                text(&job["attempts"]),
                text(&job["next_attempt_at"]),
                text(&job["deadline"]),
                truncate(&text(&job["last_error"]), ERROR_WIDTH),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "STATE",
            "ATTEMPTS",
            "NEXT ATTEMPT",
            "DEADLINE",
            "LAST ERROR",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "{} job{}",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" }
    );
    out
}

fn job_details(job: &Value) -> String {
    const FIELDS: [&str; 13] = [
        "id",
        "account",
        "provider",
        "state",
        "attempts",
        "message_id",
        "media_id",
        "message_timestamp",
        "created_at",
        "updated_at",
        "next_attempt_at",
        "deadline",
        "last_error",
    ];
    let mut out = String::new();
    for field in FIELDS {
        let _ = writeln!(out, "{:<18} {}", format!("{field}:"), text(&job[field]));
    }
    out
}

fn stats_table(stats: &Value) -> String {
    let by_state =
        |counts: &Value| -> Vec<String> { STATES.iter().map(|s| text(&counts[*s])).collect() };
    let mut rows = vec![{
        let mut row = vec!["(all)".to_owned()];
        row.extend(by_state(&stats["by_state"]));
        row
    }];
    if let Some(accounts) = stats["by_account"].as_object() {
        for (account, counts) in accounts {
            let mut row = vec![account.clone()];
            row.extend(by_state(counts));
            rows.push(row);
        }
    }
    let mut header = vec!["ACCOUNT"];
    header.extend(STATES.iter().map(|s| match *s {
        "pending" => "PENDING",
        "leased" => "LEASED",
        "waiting" => "WAITING",
        "done" => "DONE",
        _ => "DEAD",
    }));
    let mut out = table(&header, &rows);
    let _ = writeln!(out, "oldest pending: {}", text(&stats["oldest_pending"]));
    let _ = writeln!(
        out,
        "at risk (deadline within 24h, not done): {}",
        text(&stats["at_risk"])
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(encode("green:ABC-1_2.3~"), "green%3AABC-1_2.3~");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn the_job_table_lines_up_and_shortens_long_errors() {
        let jobs = [
            json!({"id": "green:1", "state": "dead", "attempts": 3,
                   "next_attempt_at": "2026-01-01T00:00:00Z", "deadline": "2026-01-15T00:00:00Z",
                   "last_error": "x".repeat(100)}),
            json!({"id": "green:22", "state": "pending", "attempts": 0,
                   "next_attempt_at": "2026-01-01T00:00:01Z", "deadline": "2026-01-15T00:00:00Z",
                   "last_error": null}),
        ];
        let out = job_table(&jobs);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        let column = |line: &str| line.find("STATE").or_else(|| line.find("dead"));
        assert_eq!(column(lines[0]), column(lines[1]), "{out}");
        assert_eq!(lines[2].find("pending"), column(lines[0]), "{out}");
        assert!(lines[1].ends_with('…'), "{out}");
        assert!(lines[2].ends_with(" -"), "a null error shows as -: {out}");
        assert_eq!(lines[3], "2 jobs");
        assert_eq!(job_table(&[]), "no jobs\n");
    }

    #[test]
    fn stats_show_every_state_per_account() {
        let stats = json!({
            "by_state": {"pending": 2, "leased": 0, "waiting": 0, "done": 5, "dead": 1},
            "by_account": {"green": {"pending": 2, "leased": 0, "waiting": 0, "done": 5, "dead": 1}},
            "oldest_pending": "2026-01-01T00:00:00Z",
            "at_risk": 1,
        });
        let out = stats_table(&stats);
        assert!(out.starts_with("ACCOUNT  PENDING  LEASED"), "{out}");
        assert!(out.contains("green    2        0"), "{out}");
        assert!(
            out.contains("oldest pending: 2026-01-01T00:00:00Z"),
            "{out}"
        );
        assert!(
            out.contains("at risk (deadline within 24h, not done): 1"),
            "{out}"
        );
    }
}
