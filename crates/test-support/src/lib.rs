//! Fakes of the outside world (provider APIs) and a Garage launcher for tests.

pub mod codechat;
pub mod evolution;
pub mod garage;
pub mod green_api;
pub mod http;
pub mod meta;
pub mod nxcloud;
pub mod whatsapp_cdn;

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
