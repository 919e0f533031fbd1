//! The HTTP front door: provider webhooks, health, admin API.
