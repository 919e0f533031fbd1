//! Decoding a row of [`COLUMNS`] into a job.

use crate::JobRecord;
#[cfg(doc)]
use crate::backend::COLUMNS;

/// A row of `COLUMNS`.
pub(super) struct StoredJob {
    pub(super) job: JobRecord,
    pub(super) lease_token: i64,
}

pub(super) fn read_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredJob> {
    pub(super) fn parse<T>(
        idx: usize,
        text: &str,
        parsed: Result<T, String>,
    ) -> rusqlite::Result<T> {
        parsed.map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                idx,
                rusqlite::types::Type::Text,
                format!("{e} (stored {text:?})").into(),
            )
        })
    }
    let provider: String = row.get(2)?;
    let state: String = row.get(3)?;
    let payload: String = row.get(13)?;
    Ok(StoredJob {
        job: JobRecord {
            id: row.get(0)?,
            account: row.get(1)?,
            provider: parse(2, &provider, provider.parse())?,
            state: parse(3, &state, state.parse())?,
            attempts: row.get(4)?,
            deadline: row.get(5)?,
            next_attempt_at: row.get(6)?,
            last_error: row.get(7)?,
            created_at: row.get(8)?,
            updated_at: row.get(9)?,
            message_id: row.get(10)?,
            media_id: row.get(11)?,
            message_at: row.get(12)?,
            payload: parse(
                13,
                "<payload>",
                serde_json::from_str(&payload).map_err(|e| format!("payload is not JSON: {e}")),
            )?,
        },
        lease_token: row.get(14)?,
    })
}
