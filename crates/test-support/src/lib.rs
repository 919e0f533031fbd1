//! Fakes of the outside world (provider APIs) and a Garage launcher for tests.

pub mod app;
pub mod codechat;
pub mod evolution;
pub mod garage;
pub mod green_api;
pub mod http;
mod ids;
pub mod meta;
pub mod nxcloud;
pub mod ports;
pub mod waha;
pub mod whatsapp_cdn;

/// The bytes of a staged file, wherever they wait (a spool file or memory).
pub fn staged_bytes(file: &archiver_core::StagedFile) -> Vec<u8> {
    match &file.body {
        archiver_core::StagedBody::Spool(path) => std::fs::read(path).unwrap(),
        archiver_core::StagedBody::Memory(bytes) => bytes.to_vec(),
    }
}

/// Every file below `dir`, recursively (a missing folder has none): how
/// tests look for spool files and archived objects left behind.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Locks a fake's state, whether or not a handler panicked while holding it
/// (a fake must keep answering for the test to report the real failure).
pub(crate) fn lock<T>(state: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Unix seconds now (0 before 1970).
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
