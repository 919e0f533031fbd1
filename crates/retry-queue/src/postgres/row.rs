//! Decoding a row of [`COLUMNS`] into a job, and what a driver error means
//! for the caller.

use sqlx::Row;
use sqlx::postgres::PgRow;

#[cfg(doc)]
use crate::backend::COLUMNS;
use crate::{JobRecord, QueueError};

/// Database errors: data that does not decode is corruption; anything else
/// (connection, server, constraint) means the queue is unavailable now.
pub(super) fn db(e: sqlx::Error) -> QueueError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => QueueError::Corrupt(e.to_string()),
        other => QueueError::Unavailable(other.to_string()),
    }
}

/// A row of `COLUMNS`, as a job and its lease token.
pub(super) fn read_job(row: &PgRow) -> Result<(JobRecord, i64), QueueError> {
    let corrupt = |what: &str, e: String| QueueError::Corrupt(format!("{what}: {e}"));
    let provider: String = row.try_get("provider").map_err(db)?;
    let state: String = row.try_get("state").map_err(db)?;
    let payload: String = row.try_get("payload").map_err(db)?;
    let attempts: i32 = row.try_get("attempts").map_err(db)?;
    let job = JobRecord {
        id: row.try_get("id").map_err(db)?,
        account: row.try_get("account").map_err(db)?,
        provider: provider
            .parse()
            .map_err(|e| corrupt("provider", format!("{e} (stored {provider:?})")))?,
        state: state
            .parse()
            .map_err(|e| corrupt("state", format!("{e} (stored {state:?})")))?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt("attempts", e.to_string()))?,
        deadline: row.try_get("deadline").map_err(db)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(db)?,
        last_error: row.try_get("last_error").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
        message_id: row.try_get("message_id").map_err(db)?,
        media_id: row.try_get("media_id").map_err(db)?,
        message_at: row.try_get("message_at").map_err(db)?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| corrupt("payload", format!("not JSON: {e}")))?,
    };
    Ok((job, row.try_get("lease_token").map_err(db)?))
}
