//! Fakes of the outside world (provider APIs) and a Garage launcher for tests.

pub mod garage;
pub mod green_api;
pub mod http;
pub mod meta;
