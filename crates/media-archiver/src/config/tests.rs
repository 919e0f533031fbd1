use std::path::PathBuf;
use std::time::Duration;

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
    let config = Settings::parse(MINIMAL).unwrap();
    assert_eq!(config.receiver.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.receiver.server.max_body_bytes, 4_194_304);
    assert!(
        matches!(&config.queue, QueueSettings::Sqlite { path } if path == &PathBuf::from("data/queue.db")),
        "{:?}",
        config.queue
    );
    assert!(
        matches!(&config.storage, StorageSettings::Fs { path } if path == &PathBuf::from("data/archive")),
        "{:?}",
        config.storage
    );
    assert_eq!(config.workers.concurrency, 16);
    assert_eq!(config.workers.lease, Duration::from_secs(300));
    assert_eq!(config.workers.shutdown_grace, Duration::from_secs(25));
    assert_eq!(config.retry.initial, Duration::from_secs(5));
    assert_eq!(config.retry.max, Duration::from_secs(3600));
    assert_eq!(config.fetch.read_timeout, Duration::from_secs(60));
    assert_eq!(config.fetch.api_timeout, Duration::from_secs(60));
    assert_eq!(config.fetch.max_file_bytes, 2_147_483_648);
    assert!(!config.fetch.allow_private_networks);
    assert_eq!(config.log.format, "json");
    assert_eq!(config.account_names(), ["green-main"]);
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
    let errors = Settings::parse(text).unwrap_err().0;
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
fn account_rules_are_read_from_their_table_and_checked_with_every_other_problem() {
    let ok = format!(
        "{MINIMAL}[accounts.rules]\ndirections = [\"incoming\"]\nmedia_types = [\"image\", \"voice\"]\n\
         max_file_bytes = 104857600\nchats_deny = [\"120363000000000000@g.us\"]\n"
    );
    let settings = Settings::parse(&ok).unwrap();
    assert_eq!(
        settings.providers["green-main"].max_file_bytes(),
        Some(104_857_600)
    );

    let text = r#"
        [[accounts]]
        name = "a"
        provider = "greenapi"
        id_instance = 1
        api_token = "t"
        webhook_token = "w"
        [accounts.rules]
        directions = []
        max_file_bytes = 0
        chats_allow = ["x@g.us"]
        chats_deny = ["x@g.us"]
        [[accounts]]
        name = "b"
        provider = "cloudapi"
        access_token = "t"
        app_secret = "s"
        verify_token = "v"
        [accounts.rules]
        direction = ["incoming"]
        [[accounts]]
        name = "c"
        provider = "waha"
        api_url = "http://127.0.0.1:3000"
        api_key = "k"
        webhook_hmac_key = "h"
        rules = { media_types = ["photo"] }
    "#;
    let all = Settings::parse(text).unwrap_err().0.join("\n");
    for expected in [
        "accounts[0] (a): rules.directions: names no direction",
        "accounts[0] (a): rules.max_file_bytes: must be above 0",
        "accounts[0] (a): rules.chats_deny[0]: \"x@g.us\" is in chats_allow too",
        "accounts[1] (b): rules: unknown field `direction`",
        "accounts[2] (c): rules: unknown variant `photo`",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn duplicate_account_names_and_bad_backends_are_rejected() {
    let text = format!(
        "{MINIMAL}{MINIMAL}\n[queue]\nbackend = \"mysql\"\n[storage]\nbackend = \"ftp\"\n\
         [log]\nformat = \"xml\"\n"
    );
    let all = Settings::parse(&text).unwrap_err().0.join("\n");
    assert!(all.contains("used twice"), "{all}");
    assert!(
        all.contains(
            "[queue]: unknown variant `mysql`, expected one of `sqlite`, `fjall`, `postgres`"
        ),
        "{all}"
    );
    assert!(
        all.contains("[storage]: unknown variant `ftp`, expected `fs` or `s3`"),
        "{all}"
    );
    assert!(all.contains("log.format"), "{all}");
}

#[test]
fn a_backend_keeps_the_flat_shape_and_ignores_the_other_backends_keys() {
    // As the shipped examples suggest: switch `backend`, keep the rest.
    let text = format!(
        "[queue]\nbackend = \"postgres\"\npath = \"data/queue.db\"\nurl = \"postgres://db/q\"\n\
         [storage]\nbackend = \"s3\"\npath = \"data/archive\"\n[storage.s3]\nbucket = \"media\"\n\
         prefix = \"prod/\"\npresign_ttl = \"10m\"\n{MINIMAL}"
    );
    let config = Settings::parse(&text).unwrap();
    assert!(
        matches!(&config.queue, QueueSettings::Postgres(options) if options.url.expose() == "postgres://db/q"),
        "{:?}",
        config.queue
    );
    let StorageSettings::S3(s3) = &config.storage else {
        panic!("{:?}", config.storage)
    };
    assert_eq!(s3.config().bucket, "media");
    assert_eq!(config.storage.layout(), s3_uploader::Layout::new("prod/"));
    assert_eq!(config.storage.presign_ttl(), Duration::from_secs(600));
}

#[test]
fn s3_needs_a_bucket_section_and_matching_keys() {
    let text = format!("{MINIMAL}\n[storage]\nbackend = \"s3\"\n");
    assert!(
        Settings::parse(&text)
            .unwrap_err()
            .0
            .join("\n")
            .contains("storage.s3")
    );
    let text = format!(
        "{MINIMAL}\n[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"media\"\naccess_key_id = \"GK1\"\n"
    );
    let all = Settings::parse(&text).unwrap_err().0.join("\n");
    assert!(
        all.contains("storage.s3: access_key_id, secret_access_key: give both"),
        "{all}"
    );
}

#[test]
fn shipped_config_files_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    for file in ["dev.toml", "example.toml"] {
        // example.toml reads its secrets from the environment.
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let result = Settings::parse(&text);
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
    let errors = Settings::parse(&format!("[queue]\nbackend = \"postgres\"\n{MINIMAL}"))
        .unwrap_err()
        .0;
    assert!(
        errors
            .iter()
            .any(|e| e == "[queue]: url: required when backend = \"postgres\""),
        "{errors:?}"
    );

    let text = format!(
        "[queue]\nbackend = \"postgres\"\nurl = \"mysql://app:hunter2@db/q\"\n\
         max_connections = 1\nschema = \"Not Valid\"\n{MINIMAL}"
    );
    let all = Settings::parse(&text).unwrap_err().0.join("\n");
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
    let config = Settings::parse(&text).unwrap();
    let QueueSettings::Postgres(options) = &config.queue else {
        panic!("{:?}", config.queue)
    };
    assert_eq!(options.max_connections, 4);
    assert_eq!(options.schema.as_deref(), Some("media_archiver"));
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn postgres_url_may_come_from_the_environment() {
    let text = format!(
        "[queue]\nbackend = \"postgres\"\nurl = {{ env = \"MEDIA_ARCHIVER_TEST_UNSET_DB_URL\" }}\n{MINIMAL}"
    );
    let errors = Settings::parse(&text).unwrap_err().0;
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("queue.url:") && e.contains("MEDIA_ARCHIVER_TEST_UNSET_DB_URL")),
        "{errors:?}"
    );
}

#[test]
fn every_secret_is_resolved_by_the_one_check_and_reported_together() {
    let text = r#"
        [server]
        admin_token = { env = "MEDIA_ARCHIVER_TEST_UNSET_ADMIN" }
        [queue]
        backend = "postgres"
        url = { env = "MEDIA_ARCHIVER_TEST_UNSET_DB_URL" }
        [storage]
        backend = "s3"
        [storage.s3]
        bucket = "media"
        access_key_id = { env = "MEDIA_ARCHIVER_TEST_UNSET_KEY_ID" }
        secret_access_key = { file = "/nonexistent/media-archiver-test-secret" }
        [[accounts]]
        name = "green-main"
        provider = "greenapi"
        id_instance = 1
        api_token = { env = "MEDIA_ARCHIVER_TEST_UNSET_TOKEN" }
        webhook_token = "w"
    "#;
    let errors = Settings::parse(text).unwrap_err().0;
    for (key, source) in [
        ("server.admin_token", "MEDIA_ARCHIVER_TEST_UNSET_ADMIN"),
        ("queue.url", "MEDIA_ARCHIVER_TEST_UNSET_DB_URL"),
        (
            "storage.s3: access_key_id",
            "MEDIA_ARCHIVER_TEST_UNSET_KEY_ID",
        ),
        (
            "storage.s3: secret_access_key",
            "/nonexistent/media-archiver-test-secret",
        ),
        (
            "accounts[0] (green-main): api_token",
            "MEDIA_ARCHIVER_TEST_UNSET_TOKEN",
        ),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(key) && e.contains(source)),
            "{key} missing from {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn an_account_that_fails_to_read_keeps_its_index_in_later_problems() {
    let text = "[[accounts]]\nname = \"a\"\nprovider = \"whatsapp\"\n\
         [[accounts]]\nname = \"b\"\nprovider = \"greenapi\"\nid_instance = 1\napi_token = \"t\"\n";
    let errors = Settings::parse(text).unwrap_err().0;
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("accounts[1] (b): webhook_token: required")),
        "{errors:#?}"
    );
}

#[test]
fn the_api_timeout_is_its_own_key_and_must_be_above_zero() {
    let text = format!("[fetch]\nread_timeout = \"5m\"\napi_timeout = \"20s\"\n{MINIMAL}");
    let config = Settings::parse(&text).unwrap();
    assert_eq!(config.fetch.read_timeout, Duration::from_secs(300));
    assert_eq!(config.fetch.api_timeout, Duration::from_secs(20));
    let errors = Settings::parse(&format!("[fetch]\napi_timeout = \"0s\"\n{MINIMAL}"))
        .unwrap_err()
        .0;
    assert_eq!(errors, ["fetch.api_timeout: must be above 0"]);
}

/// The providers' API client is built with `fetch.api_timeout`, not
/// `fetch.read_timeout`: a gateway that accepts the connection and never
/// answers fails the call once the former has passed.
#[tokio::test]
async fn provider_api_calls_give_up_after_the_api_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "[fetch]\nread_timeout = \"1h\"\napi_timeout = \"300ms\"\n\
         [[accounts]]\nname = \"green-main\"\nprovider = \"greenapi\"\napi_url = \"http://{}\"\n\
         id_instance = 1\napi_token = \"t\"\nwebhook_token = \"w\"\n",
        silent.local_addr().unwrap()
    );
    let config = Settings::parse(&text).unwrap();
    let payload = serde_json::json!({"chat_id": "491511@c.us", "type_message": "imageMessage"});
    let started = std::time::Instant::now();
    let error = config.providers["green-main"]
        .resolve(providers::JobRef {
            message_id: "BAE5F4C0D1A2B3C4",
            media_id: None,
            payload: &payload,
            attempt: 1,
            last_error: None,
            link_dead: false,
        })
        .await
        .unwrap_err();
    assert!(error.to_string().contains("timed out"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn notify_targets_are_read_checked_against_the_accounts_and_their_secrets_resolved() {
    let good = format!(
        "{MINIMAL}\n[[notify]]\nname = \"crm\"\nurl = \"https://crm.internal/hooks\"\n\
         secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\naccounts = [\"green-main\"]\n"
    );
    let config = Settings::parse(&good).unwrap();
    assert_eq!(config.notify.len(), 1);
    assert_eq!(config.notify[0].name, "crm");
    assert_eq!(config.notify[0].routes().len(), 2, "both events by default");

    let bad = format!(
        "{MINIMAL}\n[[notify]]\nname = \"crm\"\nurl = \"https://crm.internal/hooks\"\n\
         secret = {{ env = \"MEDIA_ARCHIVER_TEST_UNSET_SECRET\" }}\naccounts = [\"nobody\"]\n\
         [[notify]]\nname = \"x\"\nurl = \"https://x/\"\nsecret = \"whsec_AAAA\"\ncolour = 1\n"
    );
    let problems = Settings::parse(&bad).unwrap_err().0;
    let text = problems.join("\n");
    for expected in [
        "notify[0] (crm): secret: environment variable MEDIA_ARCHIVER_TEST_UNSET_SECRET is not set",
        "notify[0] (crm): accounts: no [[accounts]] entry is named \"nobody\"",
        "notify[1]: unknown field `colour`",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

/// The shipped example, whose every line a property test below mutates.
fn example_config() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    std::fs::read_to_string(root.join("example.toml")).unwrap()
}

/// What a parse answered, comparable across runs.
fn outcome(text: &str) -> Result<(), Vec<String>> {
    Settings::parse(text).map(|_| ()).map_err(|e| e.0)
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

#[test]
fn an_account_s_own_store_is_read_from_its_table_and_checked_with_every_other_problem() {
    let ok = format!(
        "{MINIMAL}[accounts.storage]\nbackend = \"s3\"\n[accounts.storage.s3]\n\
         bucket = \"tenant-shop-media\"\nprefix = \"whatsapp/\"\n"
    );
    let settings = Settings::parse(&ok).unwrap();
    let [(account, StorageSettings::S3(s3))] = settings.account_storage.as_slice() else {
        panic!("{:?}", settings.account_storage)
    };
    assert_eq!(account, "green-main");
    assert_eq!(s3.config().bucket, "tenant-shop-media");
    assert!(
        matches!(settings.storage, StorageSettings::Fs { .. }),
        "the global store is untouched"
    );
    let summary = crate::cli::check_config::summary(&settings);
    assert!(
        summary.contains(
            "    storage: s3 (bucket tenant-shop-media, endpoint AWS default, prefix \"whatsapp/\")"
        ),
        "{summary}"
    );

    let text = r#"
        [[accounts]]
        name = "a"
        provider = "greenapi"
        id_instance = 1
        api_token = "t"
        webhook_token = "w"
        [accounts.storage]
        backend = "s3"
        [accounts.storage.s3]
        bucket = ""
        part_size = 1
        [[accounts]]
        name = "b"
        provider = "cloudapi"
        access_token = "t"
        app_secret = "s"
        verify_token = "v"
        [accounts.storage]
        backend = "ftp"
        [[accounts]]
        name = "c"
        provider = "greenapi"
        id_instance = 3
        api_token = "t"
        webhook_token = "w"
        storage = { backend = "s3" }
        [[accounts]]
        name = "d"
        provider = "greenapi"
        id_instance = 4
        api_token = "t"
        webhook_token = "w"
        [accounts.storage.s3]
        bucket = "tenant-d"
        [[accounts]]
        name = "e"
        provider = "greenapi"
        id_instance = 5
        api_token = "t"
        webhook_token = "w"
        storage = { backend = "fs" }
    "#;
    let all = Settings::parse(text).unwrap_err().0.join("\n");
    for expected in [
        "accounts[0] (a): storage.s3: bucket",
        "accounts[0] (a): storage.s3: part_size",
        "accounts[1] (b): storage: unknown variant `ftp`",
        "accounts[2] (c): storage: s3: required when backend = \"s3\"",
        "accounts[3] (d): storage: an s3 section is given but backend is not \"s3\"",
        "accounts[4] (e): storage: backend = \"fs\" needs a path of its own",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}
