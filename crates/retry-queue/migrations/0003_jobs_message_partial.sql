-- media-archiver retry queue, PostgreSQL schema version 3.
-- The message-id index holds only the jobs whose id is not
-- "{account}:{message_id}" (jobs keyed by media id). The others are found
-- by primary key, one lookup per account (see PgQueue::list). Message ids
-- are random, so every entry of this index cost each enqueue an index page
-- of its own; Green API and Baileys jobs no longer pay it.

DROP INDEX jobs_message;
CREATE INDEX jobs_message ON jobs (message_id, account, updated_at)
    WHERE id <> account || ':' || message_id;
