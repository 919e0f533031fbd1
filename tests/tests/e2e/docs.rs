//! Keeps the user documentation honest: `README.md` and `docs/**/*.md`.
//!
//! - every relative link resolves to a file in the repository, and every
//!   `#anchor` to a heading of the target page (GitHub's slugs);
//! - no file points at `../shared` (a user's clone has no such folder);
//! - `docs/openapi.json` and `docs/manifest.schema.json` parse, and the
//!   schema is a valid JSON Schema 2020-12;
//! - a manifest written by the fs store, through its public API, validates
//!   against the schema, which has `additionalProperties: false` and
//!   requires every field: a field the code adds, drops or retypes fails
//!   here until the schema (and docs/storage.md) follow.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use archiver_core::{Sha256Digest, StagedBody, StagedFile};
use s3_uploader::{FsStore, Layout, Manifest, ObjectStore, Verification};
use serde_json::Value;
use sha2::Digest as _;

/// The workspace root (this package lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `README.md` and every `.md` under `docs/`, relative to the root.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut out = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut out);
    out.sort();
    out
}

/// Drops fenced code blocks and inline code spans, where `[x](y)` is not a
/// link.
fn prose(markdown: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if fenced {
            out.push('\n');
            continue;
        }
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// The targets of inline links `[text](target)` and images, outside code.
fn link_targets(markdown: &str) -> Vec<String> {
    let text = prose(markdown);
    let mut targets = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].trim();
        // `[x](url "title")`: the URL is the first word.
        let target = target.split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(['<', '>']).to_owned());
        rest = &rest[end..];
    }
    targets
}

/// GitHub's heading anchor: lowercase, punctuation other than `-` and `_`
/// removed, spaces turned into `-`; repeated headings get `-1`, `-2`, ...
fn github_slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a page offers (from its ATX headings, outside code fences).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let text: String = line[hashes..].chars().filter(|&c| c != '`').collect();
        let slug = github_slug(&text);
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// Problems with the relative links of `page` (empty when all resolve).
fn broken_links(page: &Path, markdown: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for target in link_targets(markdown) {
        if target.is_empty()
            || target.contains("://")
            || target.starts_with("mailto:")
            || target.starts_with("//")
        {
            continue;
        }
        let (file, anchor) = match target.split_once('#') {
            Some((file, anchor)) => (file, Some(anchor)),
            None => (target.as_str(), None),
        };
        let resolved = if file.is_empty() {
            page.to_path_buf()
        } else {
            page.parent().unwrap().join(file)
        };
        if !resolved.exists() {
            problems.push(format!(
                "{}: link {target:?}: {} does not exist",
                page.display(),
                resolved.display()
            ));
            continue;
        }
        if let Some(anchor) = anchor {
            let text = std::fs::read_to_string(&resolved).unwrap_or_default();
            let is_markdown = resolved.extension().is_some_and(|e| e == "md");
            if !(is_markdown && anchors(&text).contains(anchor)) {
                problems.push(format!(
                    "{}: link {target:?}: no heading with anchor #{anchor} in {}",
                    page.display(),
                    resolved.display()
                ));
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut problems = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        problems.extend(broken_links(&page, &text));
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_link_checker_catches_a_missing_file_and_a_missing_anchor() {
    let page = root().join("README.md");
    let broken = "[a](docs/no-such-page.md) [b](docs/cli.md#no-such-heading) `[c](ignored.md)`";
    assert_eq!(broken_links(&page, broken).len(), 2);
    assert!(broken_links(&page, "[ok](docs/cli.md#exit-codes)").is_empty());
    assert_eq!(
        github_slug("`GET /api/v1/media`: where?"),
        "get-apiv1media-where"
    );
}

#[test]
fn no_file_points_outside_the_repository_at_shared() {
    let mut offenders = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        if text.contains("../shared") {
            offenders.push(page.display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "a user's clone has no ../shared: {offenders:?}"
    );
}

/// The JSON file at `relative` to the workspace root; panics naming it when
/// it is missing or not JSON.
pub(crate) fn read_json(relative: &str) -> Value {
    let path = root().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{relative} is not JSON: {e}"))
}

#[test]
fn openapi_document_parses_and_names_every_route() {
    let doc = read_json("docs/openapi.json");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "openapi 3.1"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for route in [
        "/webhooks/{account}",
        "/healthz",
        "/readyz",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/retry",
        "/api/v1/jobs/retry",
        "/api/v1/media",
        "/api/v1/stats",
    ] {
        assert!(
            paths.contains_key(route),
            "{route} missing from openapi.json"
        );
    }
    // Every local $ref points at something that exists.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').expect("local $ref");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

fn manifest_schema() -> jsonschema::Validator {
    let schema = read_json("docs/manifest.schema.json");
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "JSON Schema 2020-12"
    );
    assert_eq!(schema["additionalProperties"], Value::Bool(false));
    jsonschema::draft202012::meta::validate(&schema)
        .unwrap_or_else(|e| panic!("not a valid 2020-12 schema: {e}"));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}"))
}

/// Why `instance` does not validate, one line per error with where it is
/// (empty when it validates).
pub(crate) fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Writes a blob and its manifest through the fs store the daemon uses, as
/// the worker does (blob first, then `Manifest` serialized at its layout
/// key), and reads the manifest back from disk.
async fn manifest_written_by_the_fs_store(full: bool) -> Value {
    let root = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir_in(root.path()).unwrap();
    let archive = root.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let store = FsStore::open(&archive).unwrap();
    let layout = Layout::new("");

    let bytes = b"\x89PNG not really, but bytes";
    let sha256 = Sha256Digest::from_bytes(sha2::Sha256::digest(bytes).into());
    let path = spool.path().join("staged.spool");
    std::fs::write(&path, bytes).unwrap();
    let staged = StagedFile {
        body: StagedBody::Spool(path),
        size: bytes.len() as u64,
        sha256,
    };
    let mime = full.then_some("image/png");
    let blob_key = layout.blob_key(&sha256, mime);
    store.put_blob(&blob_key, &staged, mime).await.unwrap();

    let some = |s: &str| full.then(|| s.to_owned());
    let manifest = Manifest {
        provider: "cloudapi".into(),
        account: "meta-main".into(),
        chat_id: some("4915112345678"),
        message_id: "wamid.HBgM+x/y==".into(),
        media_id: some("1003383421387256"),
        sender: some("4915112345678"),
        direction: full.then_some(archiver_core::Direction::Incoming),
        message_timestamp: "2026-11-03T10:15:00Z".into(),
        mime_type: mime.map(str::to_owned),
        file_name: some("photo.png"),
        caption: some("look"),
        size: staged.size,
        sha256,
        blob_key: blob_key.clone(),
        provider_sha256: full.then_some(sha256),
        verification: if full {
            Verification::ProviderSha256
        } else {
            Verification::ComputedOnly
        },
        archived_at: "2026-11-03T10:15:07Z".into(),
    };
    let key = layout.manifest_key("meta-main", 1_793_700_900_000, &manifest.message_id);
    store.put_manifest(&key, &manifest.to_json()).await.unwrap();

    assert!(archive.join(&blob_key).is_file(), "blob at {blob_key}");
    let written = std::fs::read(archive.join(&key)).expect("manifest on disk at its key");
    serde_json::from_slice(&written).unwrap()
}

#[tokio::test]
async fn a_manifest_written_by_the_fs_store_matches_the_schema() {
    let validator = manifest_schema();
    for full in [true, false] {
        let manifest = manifest_written_by_the_fs_store(full).await;
        let problems = errors(&validator, &manifest);
        assert!(
            problems.is_empty(),
            "manifest {manifest:#} does not match docs/manifest.schema.json:\n{}",
            problems.join("\n")
        );
    }
}

#[tokio::test]
async fn the_schema_refuses_an_unknown_a_missing_or_a_mistyped_field() {
    let validator = manifest_schema();
    let good = manifest_written_by_the_fs_store(true).await;

    let mut added = good.clone();
    added["chat_name"] = Value::from("Shop");
    assert!(!errors(&validator, &added).is_empty(), "unknown field");

    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("caption");
    assert!(!errors(&validator, &missing).is_empty(), "missing field");

    let mut mistyped = good.clone();
    mistyped["size"] = Value::from("51234");
    assert!(!errors(&validator, &mistyped).is_empty(), "mistyped size");

    let mut bad_verification = good;
    bad_verification["verification"] = Value::from("whatsapp-enc-plain");
    assert!(!errors(&validator, &bad_verification).is_empty(), "enum");
}
