//! `media-archiver verify`: a scrub of the archive, straight from the stores
//! named in the config (no daemon needed): every distinct archive (the
//! global `[storage]` and each `[accounts.storage]`), or with `--account`
//! that account's.
//!
//! Two passes, each a paged listing (memory: one page plus `--parallel`
//! reads of one chunk each, whatever the archive's size):
//! 1. every object under `{prefix}blobs/` is read back whole and hashed; the
//!    sha256 must be the one its key names (`blobs/sha256/{h[0..2]}/{h}{ext}`);
//! 2. every object under `{prefix}messages/` must be a manifest whose
//!    `blob_key` names its `sha256`, and whose blob exists with its `size`.
//!
//! Together: every manifest points at a blob whose bytes are the manifest's
//! sha256. Each problem is printed when found and listed in the summary
//! (the first thousand, [`Findings`]); the exit code is 1 if there was any.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use s3_uploader::{Layout, Manifest, ObjectInfo, ObjectStore};

use crate::cli::{self, Findings};
use crate::config::Settings;
use crate::daemon;

/// Objects per listing page.
const PAGE: usize = 1000;

/// What the scrub found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) blobs: u64,
    pub(crate) manifests: u64,
    pub(crate) bytes: u64,
    pub(crate) problems: Findings,
}

impl Report {
    fn problem(&mut self, line: String, bar: &ProgressBar) {
        self.problems.record("MISMATCH", line, bar);
    }

    /// The summary printed at the end.
    pub(crate) fn summary(&self, store: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "verified {store}");
        let _ = writeln!(out, "blobs checked:     {}", self.blobs);
        let _ = writeln!(
            out,
            "bytes read:        {} ({})",
            self.bytes,
            indicatif::HumanBytes(self.bytes)
        );
        let _ = writeln!(out, "manifests checked: {}", self.manifests);
        let _ = writeln!(out, "mismatches:        {}", self.problems.count());
        self.problems.write_list(&mut out);
        let clean = self.problems.count() == 0;
        let _ = writeln!(out, "result: {}", if clean { "OK" } else { "FAILED" });
        out
    }
}

/// `media-archiver verify`: scrubs every distinct archive of `config` (or
/// only `account`'s) and prints a summary for each; the process exit code
/// (0 clean, 1 mismatch or failure, 2 an account that is not configured).
pub(crate) fn main(config: &Settings, parallel: usize, account: Option<&str>) -> ExitCode {
    if let Some(account) = account
        && !config.providers.contains_key(account)
    {
        eprintln!(
            "error: account {account:?} is not configured (accounts: {})",
            config.account_names().join(", ")
        );
        return ExitCode::from(2);
    }
    cli::block_on(tokio::runtime::Builder::new_multi_thread(), async {
        let archives = match daemon::open_archives(config).await {
            Ok(archives) => archives,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let chosen = match account {
            Some(account) => vec![archives.of(account).clone()],
            None => archives.all().into_iter().cloned().collect(),
        };
        let mut clean = true;
        for (i, archive) in chosen.into_iter().enumerate() {
            if i > 0 {
                println!();
            }
            match scrub(archive.store.clone(), &archive.layout, parallel).await {
                Ok(report) => {
                    print!("{}", report.summary(&archive.description));
                    clean &= report.problems.count() == 0;
                }
                Err(e) => {
                    eprintln!(
                        "error: cannot list the archive ({}): {e}",
                        archive.description
                    );
                    clean = false;
                }
            }
        }
        if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

/// Scrubs the archive behind `store`, `parallel` objects at a time.
pub(crate) async fn scrub(
    store: Arc<dyn ObjectStore>,
    layout: &Layout,
    parallel: usize,
) -> Result<Report, s3_uploader::StoreError> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {msg} {binary_bytes} ({binary_bytes_per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut report = Report::default();
    let parallel = parallel.max(1);

    let blob_root = format!("{}blobs/", layout.prefix());
    let mut pages = store.list(&blob_root, PAGE);
    while let Some(page) = pages.next().await {
        let mut checks = futures_util::stream::iter(page?)
            .map(|object| check_blob(store.as_ref(), &blob_root, object))
            .buffer_unordered(parallel);
        while let Some((bytes, problem)) = checks.next().await {
            report.blobs += 1;
            report.bytes += bytes;
            bar.inc(bytes);
            if let Some(problem) = problem {
                report.problem(problem, &bar);
            }
            bar.set_message(progress(&report));
        }
    }

    let manifest_root = format!("{}messages/", layout.prefix());
    let mut pages = store.list(&manifest_root, PAGE);
    while let Some(page) = pages.next().await {
        let mut checks = futures_util::stream::iter(page?)
            .map(|object| check_manifest(store.as_ref(), &blob_root, object))
            .buffer_unordered(parallel);
        while let Some(problem) = checks.next().await {
            report.manifests += 1;
            if let Some(problem) = problem {
                report.problem(problem, &bar);
            }
            bar.set_message(progress(&report));
        }
    }
    bar.finish_and_clear();
    Ok(report)
}

fn progress(report: &Report) -> String {
    format!(
        "blobs {}, manifests {}, mismatches {}",
        report.blobs,
        report.manifests,
        report.problems.count()
    )
}

/// The hex sha256 a blob key names, if it is one of the layout's blob keys
/// (`{root}{h[0..2]}/{h}{ext}` with `root` = `{prefix}blobs/` + `sha256/`).
fn hash_in_key<'k>(blob_root: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(blob_root)?.strip_prefix("sha256/")?;
    let (fan, name) = rest.split_once('/')?;
    let hash = name.get(..64)?;
    let ext = &name[64..];
    let hex = hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && fan == &hash[..2] && (ext.is_empty() || (ext.starts_with('.') && !ext.contains('/'))))
        .then_some(hash)
}

/// Re-reads one blob: the bytes read and the problem, if any.
async fn check_blob(
    store: &dyn ObjectStore,
    blob_root: &str,
    object: ObjectInfo,
) -> (u64, Option<String>) {
    let key = object.key;
    let Some(named) = hash_in_key(blob_root, &key) else {
        return (
            0,
            Some(format!(
                "blob {key}: not a blob key of the layout (blobs/sha256/<2 hex>/<64 hex><.ext>)"
            )),
        );
    };
    match store.read_hashed(&key).await {
        Ok(Some(digest)) if digest.sha256.to_hex() == named => (digest.size, None),
        Ok(Some(digest)) => (
            digest.size,
            Some(format!(
                "blob {key}: its {} bytes hash to sha256 {}, the key names {named}",
                digest.size, digest.sha256
            )),
        ),
        Ok(None) => (
            0,
            Some(format!("blob {key}: listed, then gone when read back")),
        ),
        Err(e) => (0, Some(format!("blob {key}: cannot be read: {e}"))),
    }
}

/// Checks one manifest against its blob; the problem, if any.
async fn check_manifest(
    store: &dyn ObjectStore,
    blob_root: &str,
    object: ObjectInfo,
) -> Option<String> {
    let key = object.key;
    if !key.ends_with(".json") {
        return Some(format!("manifest {key}: not a manifest (no .json)"));
    }
    let bytes = match store.get_small(&key).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Some(format!("manifest {key}: listed, then gone when read back")),
        Err(e) => return Some(format!("manifest {key}: cannot be read: {e}")),
    };
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => return Some(format!("manifest {key}: not a manifest: {e}")),
    };
    let blob = &manifest.blob_key;
    if hash_in_key(blob_root, blob) != Some(manifest.sha256.to_hex().as_str()) {
        return Some(format!(
            "manifest {key}: blob_key {blob} does not name its sha256 {}",
            manifest.sha256
        ));
    }
    match store.size_of(blob).await {
        Ok(Some(size)) if size == manifest.size => None,
        Ok(Some(size)) => Some(format!(
            "manifest {key}: blob {blob} is {size} bytes, the manifest says {}",
            manifest.size
        )),
        Ok(None) => Some(format!("manifest {key}: its blob {blob} is missing")),
        Err(e) => Some(format!(
            "manifest {key}: blob {blob} cannot be checked: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn blob_keys_name_their_hash_only_in_the_layout_s_shape() {
        let root = "p/blobs/";
        assert_eq!(
            hash_in_key(root, &format!("p/blobs/sha256/ba/{H}.jpg")),
            Some(H)
        );
        assert_eq!(
            hash_in_key(root, &format!("p/blobs/sha256/ba/{H}")),
            Some(H)
        );
        for bad in [
            format!("p/blobs/sha256/bb/{H}.jpg"),
            format!("p/blobs/sha256/ba/{H}x"),
            format!("p/blobs/sha256/ba/{}", &H[..63]),
            format!("p/blobs/sha256/ba/{}.jpg", H.to_uppercase()),
            format!("p/blobs/md5/ba/{H}"),
            format!("blobs/sha256/ba/{H}"),
        ] {
            assert_eq!(hash_in_key(root, &bad), None, "{bad}");
        }
    }
}
