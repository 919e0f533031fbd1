//! `media-archiver notifications ...`: the events sent to `[[notify]]`
//! targets, from a running daemon's admin API (`/api/v1/notifications`),
//! with the same `--url`, token variable, `--json` and exit codes as `jobs`.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::Value;

use super::api::{ApiArgs, ERROR_WIDTH, Failure, encode, run_command, table, text, truncate};

/// `notifications`: list and resend events to the user's apps.
#[derive(Debug, clap::Args)]
pub(crate) struct NotificationsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: NotificationsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum NotificationsCommand {
    /// List notifications, most recently updated first.
    List {
        /// Only notifications in this state.
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        state: Option<String>,
        /// Only notifications to this `[[notify]]` target.
        #[arg(long)]
        target: Option<String>,
        /// Only notifications about this job.
        #[arg(long)]
        job: Option<String>,
        /// At most this many (the daemon caps it at 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send a dead notification again now, with a fresh `max_age`.
    Retry {
        /// Notification id, `{target}:{job id}:{event}` (its webhook-id).
        id: String,
    },
}

/// Runs a `notifications` subcommand and returns the process exit code.
pub(crate) fn run(args: &NotificationsArgs) -> ExitCode {
    run_command(execute(args))
}

async fn execute(args: &NotificationsArgs) -> Result<String, Failure> {
    let api = args.api.connect()?;
    let (answer, text) = match &args.command {
        NotificationsCommand::List {
            state,
            target,
            job,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (key, value) in [("state", state), ("target", target), ("job", job)] {
                if let Some(value) = value {
                    query.push((key, value.clone()));
                }
            }
            let answer = api.get("/notifications", &query).await?;
            let text = notification_table(
                answer["notifications"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice),
            );
            (answer, text)
        }
        NotificationsCommand::Retry { id } => {
            let answer = api
                .post(&format!("/notifications/{}/retry", encode(id)), &[])
                .await?;
            (answer, format!("requeued {id}\n"))
        }
    };
    Ok(args.api.output(&answer, || text))
}

fn notification_table(notifications: &[Value]) -> String {
    if notifications.is_empty() {
        return "no notifications\n".to_owned();
    }
    let rows: Vec<Vec<String>> = notifications
        .iter()
        .map(|n| {
            vec![
                text(&n["id"]),
                text(&n["state"]),
                text(&n["attempts"]),
                text(&n["next_attempt_at"]),
                truncate(&text(&n["last_error"]), ERROR_WIDTH),
            ]
        })
        .collect();
    let mut out = table(
        &["ID", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR"],
        &rows,
    );
    let n = notifications.len();
    let _ = writeln!(out, "{n} notification{}", if n == 1 { "" } else { "s" });
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_table_shows_id_state_attempts_and_the_last_error() {
        let out = notification_table(&[json!({
            "id": "crm:green:1:media.archived", "state": "pending", "attempts": 3,
            "next_attempt_at": "2026-01-01T00:00:10Z", "last_error": "HTTP 500",
        })]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID"), "{out}");
        assert!(
            lines[1].starts_with("crm:green:1:media.archived  pending  3"),
            "{out}"
        );
        assert!(lines[1].ends_with("HTTP 500"), "{out}");
        assert_eq!(lines[2], "1 notification");
        assert_eq!(notification_table(&[]), "no notifications\n");
    }
}
