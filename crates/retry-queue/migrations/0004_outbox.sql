-- media-archiver retry queue, PostgreSQL schema version 4: the outbox of
-- events to the user's app (crate docs: src/outbox.rs). A trigger commits
-- a job's deliveries in the transaction of its done or dead transition,
-- whichever statement made it; times come from the job's updated_at (the
-- application's clock), never now().

CREATE TABLE notify_routes (
    target     TEXT NOT NULL,
    event      TEXT NOT NULL,
    account    TEXT NOT NULL,
    max_age_ms BIGINT NOT NULL,
    PRIMARY KEY (target, event, account)
);

CREATE TABLE deliveries (
    id                  TEXT PRIMARY KEY,
    target              TEXT NOT NULL,
    job_id              TEXT NOT NULL,
    event               TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    backoff_interval_ms BIGINT,
    deadline            BIGINT NOT NULL,
    max_age_ms          BIGINT NOT NULL,
    last_error          TEXT,
    job_error           TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX deliveries_due     ON deliveries (target, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_updated ON deliveries (updated_at);
CREATE INDEX deliveries_job     ON deliveries (job_id);

-- The function's tables are those of the schema it was created in, whatever
-- the search_path of the session that changes a job.
CREATE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO deliveries (id, target, job_id, event, state, next_attempt_at, deadline,
                            max_age_ms, job_error, created_at, updated_at)
    SELECT r.target || ':' || NEW.id || ':' || r.event, r.target, NEW.id, r.event, 'pending',
           NEW.updated_at, NEW.updated_at + r.max_age_ms, r.max_age_ms, NEW.last_error,
           NEW.updated_at, NEW.updated_at
    FROM notify_routes r
    WHERE r.event = CASE NEW.state WHEN 'done' THEN 'media.archived' ELSE 'media.dead' END
      AND r.account IN ('*', NEW.account)
    ON CONFLICT (id) DO UPDATE SET
        state = 'pending', attempts = deliveries.attempts + 1, next_attempt_at = EXCLUDED.next_attempt_at,
        backoff_interval_ms = NULL, deadline = EXCLUDED.deadline, max_age_ms = EXCLUDED.max_age_ms,
        last_error = NULL, job_error = EXCLUDED.job_error, created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('done', 'dead') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION jobs_notify();
