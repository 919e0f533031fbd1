//! Group commit: batching tasks take every enqueue waiting in the channel
//! and insert (or revive) them in one transaction, one multi-row statement.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use archiver_core::{Clock, JobSpec, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::row::db;
use crate::backend::{MAX_GROUP, log_revived};
use crate::{Enqueued, QueueError};

pub(super) struct EnqueueRequest {
    pub(super) jobs: Vec<JobSpec>,
    pub(super) reply: oneshot::Sender<Result<Vec<Enqueued>, QueueError>>,
}

/// Takes every request waiting in the channel (up to [`MAX_GROUP`]) and
/// commits them in one transaction; stops when the queue is dropped.
pub(super) async fn batcher(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    receiver: Arc<Mutex<mpsc::Receiver<EnqueueRequest>>>,
    commits: Arc<AtomicU64>,
) {
    loop {
        let group = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return; // every sender dropped: the queue was dropped
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            group
        };
        let now = clock.now_ms();
        match insert_group(&pool, &group, now).await {
            Ok(outcomes) => {
                let n = commits.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::trace!(
                    requests = group.len(),
                    commits = n,
                    "enqueue group committed"
                );
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                // Nothing of the group was committed; every caller hears so.
                tracing::warn!(error = %e, requests = group.len(), "enqueue failed");
                let message = e.to_string();
                for request in group {
                    let _ = request
                        .reply
                        .send(Err(QueueError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// Inserts or revives every job of a group in one transaction and says, per
/// request and job, whether it was new.
pub(super) async fn insert_group(
    pool: &PgPool,
    group: &[EnqueueRequest],
    now: UnixMillis,
) -> Result<Vec<Vec<Enqueued>>, QueueError> {
    // The first occurrence of an id in the group is the one that may be
    // new; later ones are duplicates of it.
    let mut first: HashMap<&str, (usize, usize)> = HashMap::new();
    for (r, request) in group.iter().enumerate() {
        for (j, job) in request.jobs.iter().enumerate() {
            first.entry(job.id.as_str()).or_insert((r, j));
        }
    }
    let mut unique: Vec<&JobSpec> = first.values().map(|&(r, j)| &group[r].jobs[j]).collect();
    // One lock order for every inserter: no deadlock between replicas.
    unique.sort_by(|a, b| a.id.cmp(&b.id));

    let mut ids = Vec::with_capacity(unique.len());
    let mut accounts = Vec::with_capacity(unique.len());
    let mut providers = Vec::with_capacity(unique.len());
    let mut deadlines = Vec::with_capacity(unique.len());
    let mut message_ids = Vec::with_capacity(unique.len());
    let mut media_ids: Vec<Option<&str>> = Vec::with_capacity(unique.len());
    let mut message_ats = Vec::with_capacity(unique.len());
    let mut payloads = Vec::with_capacity(unique.len());
    let mut chat_ids: Vec<Option<&str>> = Vec::with_capacity(unique.len());
    for job in &unique {
        ids.push(job.id.as_str());
        accounts.push(job.account.as_str());
        providers.push(job.provider.as_str());
        deadlines.push(job.deadline);
        message_ids.push(job.message_id.as_str());
        media_ids.push(job.media_id.as_deref());
        message_ats.push(job.message_at);
        payloads.push(job.payload.to_string());
        chat_ids.push(job.chat_id.as_deref());
    }

    let mut tx = pool.begin().await.map_err(db)?;
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO jobs (id, account, provider, state, attempts, deadline, next_attempt_at,
            created_at, updated_at, message_id, media_id, message_at, payload, chat_id)
         SELECT u.id, u.account, u.provider, 'pending', 0, u.deadline, $1, $1, $1,
            u.message_id, u.media_id, u.message_at, u.payload, u.chat_id
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[],
                     $8::int8[], $9::text[], $10::text[])
              AS u(id, account, provider, deadline, message_id, media_id, message_at, payload,
                   chat_id)
         ORDER BY u.id
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(now)
    .bind(&ids)
    .bind(&accounts)
    .bind(&providers)
    .bind(&deadlines)
    .bind(&message_ids)
    .bind(&media_ids)
    .bind(&message_ats)
    .bind(&payloads)
    .bind(&chat_ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let inserted: HashSet<String> = inserted.into_iter().collect();

    let existing: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !inserted.contains(*id))
        .collect();
    if !existing.is_empty() {
        // A dedup entry never blocks the retry of a failed job.
        let revived = sqlx::query(
            "UPDATE jobs SET state = 'pending', attempts = 0, backoff_interval_ms = NULL,
                next_attempt_at = $2, lease_expires_at = NULL, updated_at = $2
             WHERE id = ANY($1) AND state = 'dead'
             RETURNING id, account",
        )
        .bind(&existing)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for row in revived {
            let job_id: String = row.try_get(0).map_err(db)?;
            let account: String = row.try_get(1).map_err(db)?;
            log_revived(&job_id, &account);
        }
    }
    tx.commit().await.map_err(db)?;

    Ok(group
        .iter()
        .enumerate()
        .map(|(r, request)| {
            request
                .jobs
                .iter()
                .enumerate()
                .map(|(j, job)| {
                    let is_first = first.get(job.id.as_str()) == Some(&(r, j));
                    if is_first && inserted.contains(&job.id) {
                        Enqueued::New
                    } else {
                        Enqueued::Duplicate
                    }
                })
                .collect()
        })
        .collect())
}
