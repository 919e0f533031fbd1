//! The operator CLI end to end: `verify` (a scrub of the archive),
//! `backfill` (references into the queue without webhooks) and `media find`
//! / `GET /api/v1/media`, each against the real daemon, the fake Green API
//! and the real archive (a folder, or Garage over S3).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use e2e::accounts::GREEN_WEBHOOK_TOKEN as WEBHOOK_TOKEN;
use e2e::cli::{self, output_text as text};
use e2e::{Archive, Daemon, StoreUnderTest, accounts, blob_key, bytes, config, now, sha256_hex};
use serde_json::{Value, json};
use test_support::garage::Garage;
use test_support::green_api::FakeGreenApi;

const CHAT: &str = "79001234568@c.us";
const WAIT: Duration = Duration::from_secs(30);

/// The fake Green API and a daemon archiving from it into `store`.
async fn setup(store: &StoreUnderTest) -> (FakeGreenApi, Daemon) {
    let fake = FakeGreenApi::start().await;
    let daemon = Daemon::start_in_temp_dir(&config(store, &accounts::green_api(&fake)));
    (fake, daemon)
}

/// `media-archiver verify` of the daemon's archive in `workdir`.
fn verify(workdir: &Path) -> Output {
    cli::run(workdir, &["verify", "--config", "config.toml"])
}

/// `media-archiver media find` of a Green API message through the daemon's
/// admin API; `--json` when `json`.
fn media_find(daemon: &Daemon, message_id: &str, json: bool) -> Output {
    let mut args = vec![
        "media",
        "find",
        "--account",
        "green",
        "--message-id",
        message_id,
        "--url",
        &daemon.base_url,
    ];
    if json {
        args.push("--json");
    }
    cli::run(&daemon.workdir, &args)
}

/// Registers a file with the fake and posts its webhook; returns the bytes.
async fn announce(
    fake: &FakeGreenApi,
    daemon: &Daemon,
    id: &str,
    mime: &str,
    len: usize,
) -> Vec<u8> {
    let content = bytes(len, len as u64 + id.len() as u64);
    let url = fake.add_file(CHAT, id, content.clone(), mime, "file");
    let type_message = if mime.starts_with("image/") {
        "imageMessage"
    } else {
        "documentMessage"
    };
    let hook = fake.file_webhook(
        "incomingMessageReceived",
        type_message,
        CHAT,
        id,
        &url,
        now(),
    );
    let (status, answer) = daemon.webhook("green", &hook, WEBHOOK_TOKEN).await;
    assert_eq!(status, 200, "{answer}");
    content
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_on_a_healthy_fs_archive_and_names_a_corrupted_blob() {
    let (fake, daemon) = setup(&StoreUnderTest::Fs).await;
    let dir = &daemon.workdir;
    let image = announce(&fake, &daemon, "VERIFYIMG1", "image/jpeg", 70_000).await;
    let pdf = announce(&fake, &daemon, "VERIFYPDF1", "application/pdf", 3_000).await;
    for id in ["VERIFYIMG1", "VERIFYPDF1"] {
        daemon
            .wait_for_job(&format!("green:{id}"), "done", WAIT)
            .await;
    }

    let healthy = verify(dir);
    let (stdout, stderr) = text(&healthy);
    assert_eq!(healthy.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("blobs checked:     2"), "{stdout}");
    assert!(stdout.contains("manifests checked: 2"), "{stdout}");
    assert!(
        stdout.contains(&format!("bytes read:        {}", image.len() + pdf.len())),
        "{stdout}"
    );
    assert!(stdout.contains("mismatches:        0"), "{stdout}");
    assert!(stdout.contains("result: OK"), "{stdout}");

    // One byte of one blob rots.
    let archive = Archive::of(&StoreUnderTest::Fs, dir);
    let key = blob_key(&image, ".jpg");
    let mut rotten = archive.get(&key).await;
    rotten[12_345] ^= 0x40;
    archive.put(&key, rotten.clone()).await;

    let damaged = verify(dir);
    let (stdout, stderr) = text(&damaged);
    assert_eq!(damaged.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("mismatches:        1"), "{stdout}");
    assert!(
        stdout.contains(&format!("blob {key}: ")),
        "the blob is named: {stdout}"
    );
    assert!(
        stdout.contains(&sha256_hex(&rotten)),
        "what it hashes to: {stdout}"
    );
    assert!(stdout.contains("result: FAILED"), "{stdout}");
    assert!(stderr.contains(&format!("MISMATCH blob {key}")), "{stderr}");
    assert!(
        !stdout.contains(&blob_key(&pdf, ".pdf")),
        "the healthy blob is not named: {stdout}"
    );

    // A manifest whose blob is gone is named too.
    archive.remove(&blob_key(&pdf, ".pdf")).await;
    let missing = verify(dir);
    let (stdout, _) = text(&missing);
    assert_eq!(missing.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("VERIFYPDF1.json: its blob"), "{stdout}");
    assert!(stdout.contains("is missing"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_on_s3_names_an_object_overwritten_with_other_bytes() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let store = StoreUnderTest::garage(&garage);
    let (fake, daemon) = setup(&store).await;
    let dir = &daemon.workdir;
    let image = announce(&fake, &daemon, "S3VERIFY1", "image/png", 50_000).await;
    daemon.wait_for_job("green:S3VERIFY1", "done", WAIT).await;

    let healthy = verify(dir);
    let (stdout, stderr) = text(&healthy);
    assert_eq!(healthy.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("blobs checked:     1"), "{stdout}");
    assert!(stdout.contains("manifests checked: 1"), "{stdout}");
    assert!(stdout.contains("result: OK"), "{stdout}");

    let key = blob_key(&image, ".png");
    Archive::of(&store, dir).put(&key, bytes(50_000, 999)).await;

    let damaged = verify(dir);
    let (stdout, stderr) = text(&damaged);
    assert_eq!(damaged.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("blob {key}: ")), "{stdout}");
    assert!(
        stdout.contains(&sha256_hex(&bytes(50_000, 999))),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&garage.secret_access_key) && !stderr.contains(&garage.secret_access_key),
        "no secret in the output"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_of_green_api_references_archives_the_files_and_a_second_run_finds_only_duplicates()
 {
    let (fake, daemon) = setup(&StoreUnderTest::Fs).await;
    let dir = &daemon.workdir;
    // Files the daemon never heard of: no webhook was sent.
    let files: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("BACKFILL01", bytes(40_000, 1), "image/jpeg", ".jpg"),
        ("BACKFILL02", bytes(5_000, 2), "application/pdf", ".pdf"),
        ("BACKFILL03", bytes(9_000, 3), "audio/ogg", ".ogg"),
    ];
    for (id, content, mime, _) in &files {
        fake.add_file(CHAT, id, content.clone(), mime, "f");
    }
    let good = [
        json!({"chatId": CHAT, "idMessage": "BACKFILL01", "timestamp": now() - 60}).to_string(),
        // No timestamp: getMessage supplies it.
        json!({"chatId": CHAT, "idMessage": "BACKFILL02"}).to_string(),
        // A journal item as Green API returns it, extra fields and all.
        json!({"type": "incoming", "chatId": CHAT, "idMessage": "BACKFILL03",
               "timestamp": now() - 120, "typeMessage": "audioMessage", "isForwarded": false})
        .to_string(),
    ];
    let with_bad_lines = format!(
        "{}\n\n{}\n{{\"chatId\": \"{CHAT}\"}}\nnot json\n{}\n",
        good[0], good[1], good[2]
    );
    std::fs::write(dir.join("refs.jsonl"), &with_bad_lines).unwrap();
    std::fs::write(dir.join("good.jsonl"), good.join("\n")).unwrap();

    let first = cli::backfill_file(dir, "green", "refs.jsonl");
    let (stdout, stderr) = text(&first);
    assert_eq!(
        first.status.code(),
        Some(1),
        "rejected lines: exit 1\n{stdout}{stderr}"
    );
    assert!(stdout.contains("references: 5"), "{stdout}");
    assert!(stdout.contains("new:        3"), "{stdout}");
    assert!(stdout.contains("duplicates: 0"), "{stdout}");
    assert!(stdout.contains("rejected:   2"), "{stdout}");
    assert!(
        stdout.contains("line 4: missing or invalid field `idMessage`"),
        "{stdout}"
    );
    assert!(stdout.contains("line 5: not JSON"), "{stdout}");

    // The running daemon picks the jobs up and archives them.
    for (id, content, mime, ext) in &files {
        let job = daemon
            .wait_for_job(&format!("green:{id}"), "done", WAIT)
            .await;
        assert_eq!(job["message_id"], *id);
        let archived = Archive::of(&StoreUnderTest::Fs, dir)
            .try_get(&blob_key(content, ext))
            .await
            .unwrap_or_else(|e| panic!("{id} not archived: {e}"));
        assert!(archived == *content, "{id}: archived bytes differ");
        let (status, found) = daemon
            .admin_get(&format!("/api/v1/media?account=green&message_id={id}"))
            .await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["objects"][0]["mime_type"], *mime);
    }
    assert!(fake.get_message_calls() >= 1);

    let again = cli::backfill_file(dir, "green", "good.jsonl");
    let (stdout, stderr) = text(&again);
    assert_eq!(again.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("references: 3"), "{stdout}");
    assert!(stdout.contains("new:        0"), "{stdout}");
    assert!(stdout.contains("duplicates: 3"), "{stdout}");
    assert!(stdout.contains("rejected:   0"), "{stdout}");

    let unknown = cli::backfill_file(dir, "nobody", "good.jsonl");
    assert_eq!(unknown.status.code(), Some(2), "{:?}", text(&unknown));
    assert!(text(&unknown).1.contains("no account \"nobody\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn media_find_on_s3_gives_the_keys_and_a_presigned_url_that_downloads_the_bytes() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let store = StoreUnderTest::garage(&garage);
    let (fake, daemon) = setup(&store).await;
    let image = announce(&fake, &daemon, "FINDS3IMG1", "image/jpeg", 30_000).await;
    daemon.wait_for_job("green:FINDS3IMG1", "done", WAIT).await;

    let found = media_find(&daemon, "FINDS3IMG1", true);
    let (stdout, stderr) = text(&found);
    assert_eq!(found.status.code(), Some(0), "{stdout}{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    let objects = answer["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{answer}");
    let object = &objects[0];
    assert_eq!(object["blob_key"], blob_key(&image, ".jpg"));
    assert_eq!(object["sha256"], sha256_hex(&image));
    assert_eq!(object["size"], image.len());
    assert_eq!(object["mime_type"], "image/jpeg");
    assert_eq!(object["verified"], false, "Green API vouches no hash");
    assert_eq!(object["verification"], "computed-only");
    let manifest_key = object["manifest_key"].as_str().unwrap();
    assert!(
        manifest_key.starts_with("messages/green/") && manifest_key.ends_with("/FINDS3IMG1.json"),
        "{manifest_key}"
    );
    let url = object["url"].as_str().expect("a presigned URL on S3");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let download = reqwest::get(url).await.unwrap();
    assert_eq!(download.status(), 200);
    assert!(
        download.bytes().await.unwrap() == image,
        "the URL serves the archived bytes"
    );
    assert!(
        !daemon.logs().contains("X-Amz-Signature"),
        "presigned URLs are never logged"
    );

    let listing = media_find(&daemon, "FINDS3IMG1", false);
    let (stdout, _) = text(&listing);
    assert_eq!(listing.status.code(), Some(0));
    assert!(
        stdout.contains(&format!("blob_key:     {}", blob_key(&image, ".jpg"))),
        "{stdout}"
    );
    assert!(stdout.contains("url:          http"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn media_api_on_fs_answers_keys_without_url_and_clear_errors() {
    let (fake, daemon) = setup(&StoreUnderTest::Fs).await;
    let pdf = announce(&fake, &daemon, "FINDFS1", "application/pdf", 2_000).await;
    daemon.wait_for_job("green:FINDFS1", "done", WAIT).await;

    let (status, answer) = daemon
        .admin_get("/api/v1/media?account=green&message_id=FINDFS1")
        .await;
    assert_eq!(status, 200, "{answer}");
    let object = &answer["objects"][0];
    assert_eq!(object["blob_key"], blob_key(&pdf, ".pdf"));
    assert_eq!(object["size"], pdf.len());
    assert!(object.get("url").is_none(), "no URL for a folder: {answer}");

    let (status, answer) = daemon
        .admin_get("/api/v1/media?account=green&message_id=NOSUCH")
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("NOSUCH"),
        "{answer}"
    );
    let (status, answer) = daemon.admin_get("/api/v1/media?account=green").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("message_id"),
        "{answer}"
    );
    let unauthenticated =
        reqwest::get(daemon.url("/api/v1/media?account=green&message_id=FINDFS1"))
            .await
            .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let not_found = media_find(&daemon, "NOSUCH", false);
    let (stdout, stderr) = text(&not_found);
    assert_eq!(not_found.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("404") && stderr.contains("NOSUCH"),
        "{stderr}"
    );
    let no_token = Command::new(e2e::binary())
        .args(["media", "find", "--account", "g", "--message-id", "m"])
        .env_remove("MEDIA_ARCHIVER_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(no_token.status.code(), Some(2), "usage: no token");
}

/// Two accounts, two buckets in one Garage: `green` on the global store,
/// `shop` on its own bucket and prefix (`[accounts.storage]`). Each
/// account's keys are only in its store, and `media find`, `verify` and
/// `/readyz` read each account's.
#[tokio::test(flavor = "multi_thread")]
async fn an_account_with_its_own_bucket_is_archived_found_and_verified_only_there() {
    let Some(garage) = Garage::start() else {
        return;
    };
    garage.create_bucket("tenant-shop");
    let global = StoreUnderTest::garage(&garage);
    let own = StoreUnderTest::S3 {
        endpoint: garage.endpoint.clone(),
        bucket: "tenant-shop".into(),
        access_key_id: garage.access_key_id.clone(),
        secret_access_key: garage.secret_access_key.clone(),
    };
    let fake = FakeGreenApi::start().await;
    let shop = accounts::green_api(&fake).replace("name = \"green\"", "name = \"shop\"")
        + &format!(
            "[accounts.storage]\nbackend = \"s3\"\n[accounts.storage.s3]\nbucket = \"tenant-shop\"\n\
             prefix = \"whatsapp/\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            garage.endpoint, garage.access_key_id, garage.secret_access_key
        );
    let daemon = Daemon::start_in_temp_dir(&config(&global, &(accounts::green_api(&fake) + &shop)));
    let mut archived = Vec::new();
    for (account, id) in [("green", "TENANTG1"), ("shop", "TENANTS1")] {
        let content = bytes(40_000, id.len() as u64 + account.len() as u64);
        let url = fake.add_file(CHAT, id, content.clone(), "image/jpeg", "file");
        let hook = fake.file_webhook(
            "incomingMessageReceived",
            "imageMessage",
            CHAT,
            id,
            &url,
            now(),
        );
        let (status, answer) = daemon.webhook(account, &hook, WEBHOOK_TOKEN).await;
        assert_eq!(status, 200, "{answer}");
        daemon
            .wait_for_job(&format!("{account}:{id}"), "done", WAIT)
            .await;
        archived.push(content);
    }
    let (green_bytes, shop_bytes) = (&archived[0], &archived[1]);

    let dir = &daemon.workdir;
    let (global_keys, own_keys) = (
        Archive::of(&global, dir).keys("").await,
        Archive::of(&own, dir).keys("").await,
    );
    assert!(
        global_keys.contains(&blob_key(green_bytes, ".jpg")),
        "{global_keys:?}"
    );
    assert!(
        global_keys
            .iter()
            .all(|k| !k.starts_with("whatsapp/") && !k.contains("/shop/")),
        "nothing of shop's in the global bucket: {global_keys:?}"
    );
    assert!(
        own_keys.contains(&format!("whatsapp/{}", blob_key(shop_bytes, ".jpg"))),
        "{own_keys:?}"
    );
    assert!(
        own_keys
            .iter()
            .all(|k| k.starts_with("whatsapp/") && !k.contains("/green/")),
        "nothing but shop's in its bucket: {own_keys:?}"
    );
    assert!(
        own_keys
            .iter()
            .any(|k| k.starts_with("whatsapp/messages/shop/"))
    );

    // media find reads shop's bucket and presigns from it.
    let found = cli::run(
        dir,
        &[
            "media",
            "find",
            "--account",
            "shop",
            "--message-id",
            "TENANTS1",
            "--url",
            &daemon.base_url,
            "--json",
        ],
    );
    let (stdout, stderr) = text(&found);
    assert_eq!(found.status.code(), Some(0), "{stdout}{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    let object = &answer["objects"][0];
    assert_eq!(
        object["blob_key"],
        format!("whatsapp/{}", blob_key(shop_bytes, ".jpg"))
    );
    let url = object["url"].as_str().expect("a presigned URL");
    assert!(url.contains("/tenant-shop/"), "{url}");
    let download = reqwest::get(url).await.unwrap();
    assert!(download.bytes().await.unwrap() == *shop_bytes);

    // verify: every distinct archive, or one account's.
    let all = verify(dir);
    let (stdout, stderr) = text(&all);
    assert_eq!(all.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("verified s3 bucket media-archiver-test (prefix \"\")"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verified s3 bucket tenant-shop (prefix \"whatsapp/\")"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("blobs checked:     1").count(),
        2,
        "{stdout}"
    );
    let one = cli::run(
        dir,
        &["verify", "--config", "config.toml", "--account", "shop"],
    );
    let (stdout, stderr) = text(&one);
    assert_eq!(one.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("tenant-shop") && !stdout.contains("media-archiver-test"),
        "{stdout}"
    );
    let unknown = cli::run(
        dir,
        &["verify", "--config", "config.toml", "--account", "nobody"],
    );
    assert_eq!(unknown.status.code(), Some(2));

    let ready = reqwest::get(format!("{}/readyz", daemon.base_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
