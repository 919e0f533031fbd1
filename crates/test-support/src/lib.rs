//! Fakes of the outside world (provider APIs) and a Garage launcher for tests.

pub mod garage;
