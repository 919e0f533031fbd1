//! The worker loop: lease, resolve, fetch, verify, store, acknowledge.
