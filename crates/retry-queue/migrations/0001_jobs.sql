-- media-archiver retry queue, PostgreSQL schema version 1.
-- The same table as the SQLite backend (see the crate docs), in PostgreSQL
-- types. Every time is Unix milliseconds, always written by the application
-- from its injected clock (never now() here), so tests can drive time.

CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,
    account             TEXT NOT NULL,
    provider            TEXT NOT NULL,
    state               TEXT NOT NULL
                        CHECK (state IN ('pending', 'leased', 'waiting', 'done', 'dead')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    deadline            BIGINT NOT NULL,
    next_attempt_at     BIGINT NOT NULL,
    backoff_interval_ms BIGINT,
    lease_token         BIGINT NOT NULL DEFAULT 0,
    lease_expires_at    BIGINT,
    last_error          TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    message_id          TEXT NOT NULL,
    media_id            TEXT,
    message_at          BIGINT NOT NULL,
    payload             TEXT NOT NULL,
    woken               BOOLEAN NOT NULL DEFAULT FALSE,
    due_at              BIGINT GENERATED ALWAYS AS (CASE state
                            WHEN 'pending' THEN next_attempt_at
                            WHEN 'waiting' THEN next_attempt_at
                            WHEN 'leased'  THEN lease_expires_at END) STORED
);

-- Only live jobs (pending, leased, waiting), in the order lease() hands
-- them out: leasing never reads done/dead history.
CREATE INDEX jobs_ready       ON jobs (deadline, next_attempt_at, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX jobs_pending_age ON jobs (created_at) WHERE state = 'pending';
CREATE INDEX jobs_state       ON jobs (state, updated_at);
CREATE INDEX jobs_account     ON jobs (account, updated_at);
CREATE INDEX jobs_updated     ON jobs (updated_at);
