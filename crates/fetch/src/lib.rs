//! Streaming, SSRF-guarded download of media into a hashed spool file.
