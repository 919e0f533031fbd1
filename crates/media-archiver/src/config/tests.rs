use super::*;

const MINIMAL: &str = r#"
[[accounts]]
name = "green-main"
provider = "greenapi"
id_instance = 1101000001
api_token = "t"
webhook_token = "w"
"#;

#[test]
fn a_minimal_file_takes_every_documented_default() {
    let config = Config::parse(MINIMAL).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    assert_eq!(config.server.max_body_bytes, 4_194_304);
    assert_eq!(config.queue.backend, "sqlite");
    assert_eq!(config.queue.path, PathBuf::from("data/queue.db"));
    assert_eq!(config.storage.backend, "fs");
    assert_eq!(config.storage.path, PathBuf::from("data/archive"));
    assert_eq!(config.workers.concurrency, 16);
    assert_eq!(config.workers.lease, Duration::from_secs(300));
    assert_eq!(config.workers.shutdown_grace, Duration::from_secs(25));
    assert_eq!(config.retry.initial, Duration::from_secs(5));
    assert_eq!(config.retry.max, Duration::from_secs(3600));
    assert_eq!(config.fetch.read_timeout, Duration::from_secs(60));
    assert_eq!(config.fetch.max_file_bytes, 2_147_483_648);
    assert!(!config.fetch.allow_private_networks);
    assert_eq!(config.log.format, "json");
    assert_eq!(config.accounts.len(), 1);
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_path() {
    let text = r#"
        colour = "blue"
        [server]
        listen = "nowhere"
        [fetch]
        read_timout = "5s"
        [retry]
        initial = "soon"
        [[accounts]]
        name = "a"
        provider = "greenapi"
        id_instance = 1
        api_token = { env = "MEDIA_ARCHIVER_TEST_UNSET_TOKEN" }
        [[accounts]]
        name = "b"
        provider = "greenapi"
        id_instance = 2
        api_tokn = "x"
        [[accounts]]
        name = "c"
        provider = "whatsapp"
    "#;
    let errors = Config::parse(text).unwrap_err().0;
    let all = errors.join("\n");
    for expected in [
        "colour: unknown key",
        "server.listen",
        "[fetch]: unknown field `read_timout`",
        "[retry]: invalid duration \"soon\"",
        "accounts[1] (b): unknown field `api_tokn`",
        "accounts[2] (c): unknown variant `whatsapp`",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn duplicate_account_names_and_bad_backends_are_rejected() {
    let text =
        format!("{MINIMAL}{MINIMAL}\n[storage]\nbackend = \"ftp\"\n[log]\nformat = \"xml\"\n");
    let all = Config::parse(&text).unwrap_err().0.join("\n");
    assert!(all.contains("used twice"), "{all}");
    assert!(all.contains("storage.backend"), "{all}");
    assert!(all.contains("log.format"), "{all}");
}

#[test]
fn s3_needs_a_bucket_section_and_matching_keys() {
    let text = format!("{MINIMAL}\n[storage]\nbackend = \"s3\"\n");
    assert!(
        Config::parse(&text)
            .unwrap_err()
            .0
            .join("\n")
            .contains("storage.s3")
    );
    let text = format!(
        "{MINIMAL}\n[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"media\"\naccess_key_id = \"GK1\"\n"
    );
    assert!(
        Config::parse(&text)
            .unwrap_err()
            .0
            .join("\n")
            .contains("go together")
    );
}

#[test]
fn shipped_config_files_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    for file in ["dev.toml", "example.toml"] {
        // example.toml reads its secrets from the environment.
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let result = Config::parse(&text);
        if file == "dev.toml" {
            result.unwrap();
        } else if let Err(errors) = result {
            let unexpected: Vec<_> = errors
                .0
                .iter()
                .filter(|e| !e.contains("environment variable"))
                .collect();
            assert!(unexpected.is_empty(), "{file}: {unexpected:?}");
        }
    }
}

#[test]
fn postgres_needs_a_url_and_checks_it_without_printing_it() {
    let errors = Config::parse(&format!("[queue]\nbackend = \"postgres\"\n{MINIMAL}"))
        .unwrap_err()
        .0;
    assert!(
        errors.iter().any(|e| e.starts_with("queue.url: required")),
        "{errors:?}"
    );

    let text = format!(
        "[queue]\nbackend = \"postgres\"\nurl = \"mysql://app:hunter2@db/q\"\n\
         max_connections = 1\nschema = \"Not Valid\"\n{MINIMAL}"
    );
    let all = Config::parse(&text).unwrap_err().0.join("\n");
    assert!(
        all.contains("queue: url must start with postgres://"),
        "{all}"
    );
    assert!(all.contains("max_connections"), "{all}");
    assert!(all.contains("schema"), "{all}");
    assert!(!all.contains("hunter2"), "the URL's password leaked: {all}");

    let text = format!(
        "[queue]\nbackend = \"postgres\"\nurl = \"postgres://app:hunter2@db:5432/q\"\n\
         max_connections = 4\nschema = \"media_archiver\"\n{MINIMAL}"
    );
    let config = Config::parse(&text).unwrap();
    let options = config.pg_options().unwrap();
    assert_eq!(options.max_connections, 4);
    assert_eq!(options.schema.as_deref(), Some("media_archiver"));
    assert!(!format!("{config:?}{options:?}").contains("hunter2"));
}

#[test]
fn postgres_url_may_come_from_the_environment() {
    let text = format!(
        "[queue]\nbackend = \"postgres\"\nurl = {{ env = \"MEDIA_ARCHIVER_TEST_UNSET_DB_URL\" }}\n{MINIMAL}"
    );
    let errors = Config::parse(&text).unwrap_err().0;
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("queue.url:") && e.contains("MEDIA_ARCHIVER_TEST_UNSET_DB_URL")),
        "{errors:?}"
    );
}

/// The shipped example, whose every line a property test below mutates.
fn example_config() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    std::fs::read_to_string(root.join("example.toml")).unwrap()
}

/// What a parse answered, comparable across runs.
fn outcome(text: &str) -> Result<(), Vec<String>> {
    Config::parse(text).map(|_| ()).map_err(|e| e.0)
}

proptest::proptest! {
    /// Any text, however broken, is answered with problems (each naming
    /// where) or a config; never a panic, and the same answer twice.
    #[test]
    fn arbitrary_text_is_answered_without_a_panic(text in "\\PC{0,400}") {
        let first = outcome(&text);
        proptest::prop_assert_eq!(&first, &outcome(&text));
        if let Err(problems) = first {
            proptest::prop_assert!(!problems.is_empty());
            proptest::prop_assert!(problems.iter().all(|p| !p.trim().is_empty()));
        }
    }

    /// The example with one line replaced by arbitrary text (or removed):
    /// the loader reports problems, never panics, and answers alike twice.
    #[test]
    fn a_mutated_example_is_answered_without_a_panic(
        line in proptest::arbitrary::any::<proptest::sample::Index>(),
        replacement in "[\\PC&&[^\\n]]{0,60}",
    ) {
        let example = example_config();
        let mut lines: Vec<&str> = example.lines().collect();
        let at = line.index(lines.len());
        lines[at] = &replacement;
        let text = lines.join("\n");
        proptest::prop_assert_eq!(outcome(&text), outcome(&text));
    }
}
