//! Provider adapters: webhook parsing and authentication, media reference resolution.
