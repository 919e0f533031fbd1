//! `media-archiver jobs ...`: the admin API's job routes from a shell.
//!
//! Every subcommand is one request to the daemon (`cli::api`). Output is a
//! table for people, or the API's JSON verbatim with `--json` for scripts.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::Value;

use super::api::{ApiArgs, ERROR_WIDTH, Failure, encode, run_command, table, text, truncate};

/// Job states the API knows.
const STATES: [&str; 6] = ["pending", "leased", "waiting", "done", "dead", "erased"];

/// `jobs`: list, inspect and requeue jobs of a running daemon.
#[derive(Debug, clap::Args)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: JobsCommand,
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

/// Runs a `jobs` subcommand and returns the process exit code.
pub(crate) fn run(args: &JobsArgs) -> ExitCode {
    run_command(execute(args))
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
        "dead" => "DEAD",
        _ => "ERASED",
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
