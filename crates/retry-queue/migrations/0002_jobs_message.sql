-- media-archiver retry queue, PostgreSQL schema version 2.
-- Jobs by message id: the admin API's media lookup (GET /api/v1/media)
-- finds a message's jobs whether their ids are keyed by message id or by
-- media id.

CREATE INDEX jobs_message ON jobs (message_id, account, updated_at);
