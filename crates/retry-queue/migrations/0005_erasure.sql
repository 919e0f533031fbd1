-- media-archiver retry queue, PostgreSQL schema version 5: erasure (crate
-- docs: src/erasure.rs). Jobs gain the terminal `erased` state and the
-- message's chat; the blob reference index and the blobs an erasure is
-- deleting are new.

ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('pending', 'leased', 'waiting', 'done', 'dead', 'erased'));
ALTER TABLE jobs ADD COLUMN chat_id TEXT;

CREATE TABLE blob_refs (
    store      TEXT NOT NULL,
    blob_key   TEXT NOT NULL,
    account    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    chat_id    TEXT,
    message_at BIGINT NOT NULL,
    PRIMARY KEY (store, account, message_id, blob_key)
);
CREATE INDEX blob_refs_blob ON blob_refs (store, blob_key);

CREATE TABLE blob_erasures (
    store    TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    since    BIGINT NOT NULL,
    PRIMARY KEY (store, blob_key)
);

-- Stores whose blob_refs cover every manifest (rebuilt by a scan, or found
-- empty by the daemon); an erasure needs it.
CREATE TABLE blob_index_complete (store TEXT PRIMARY KEY);
