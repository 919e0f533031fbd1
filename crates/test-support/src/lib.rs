//! Fakes of the outside world (provider APIs) and a Garage launcher for tests.

pub mod codechat;
pub mod evolution;
pub mod garage;
pub mod green_api;
pub mod http;
pub mod meta;
pub mod nxcloud;
pub mod whatsapp_cdn;
