//! Durable, deadline-ordered retry queue with an embedded SQLite backend.
