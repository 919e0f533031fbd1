//! CodeChat end to end: the real daemon, the fake WhatsApp CDN serving
//! encrypted blobs, the fake CodeChat (directly-download, JWT checked), and
//! a real Garage. Skips without `garage` unless MEDIA_ARCHIVER_REQUIRE_S3=1.

use std::time::Duration;

use e2e::accounts::CODECHAT_WEBHOOK_TOKEN as WEBHOOK_TOKEN;
use e2e::{Stage, StoreUnderTest, accounts, bytes, config, now};
use serde_json::json;
use test_support::codechat::FakeCodeChat;
use test_support::garage::Garage;
use test_support::whatsapp_cdn::{CdnFault, FakeWhatsappCdn, MediaStub};

const CHAT: &str = "5511988887777@s.whatsapp.net";
const WAIT: Duration = Duration::from_secs(30);

/// The fake WhatsApp CDN and the fake CodeChat in front of it.
#[derive(Debug)]
struct Fakes {
    cdn: FakeWhatsappCdn,
    codechat: FakeCodeChat,
}

type Setup = Stage<Fakes>;

/// Everything running, or `None` when Garage is not installed (and not
/// required). `extra` is appended to the account (e.g. `mode = "provider"`),
/// `tune` edits the whole config.
async fn setup(extra: &str, tune: impl Fn(String) -> String) -> Option<Setup> {
    let garage = Garage::start()?;
    let cdn = FakeWhatsappCdn::start().await;
    let codechat = FakeCodeChat::start(&cdn).await;
    let account = format!("{}{extra}\n", accounts::codechat(&codechat, &cdn));
    let store = StoreUnderTest::garage(&garage);
    let config = tune(config(&store, &account));
    let fakes = Fakes { cdn, codechat };
    Some(Stage::new(fakes, &store, &config, Some(garage)))
}

/// Posts the messages.upsert webhook of `stub` and checks it was accepted.
async fn announce(s: &Setup, key_id: &str, stub: &MediaStub) {
    let hook = s.fake.codechat.upsert_webhook(key_id, CHAT, stub, now());
    let (status, answer) = s.daemon.webhook("cc", &hook, WEBHOOK_TOKEN).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 1, "duplicates": 0, "ignored": 0})
    );
}

async fn done(s: &Setup, key_id: &str) -> serde_json::Value {
    s.daemon
        .wait_for_job(&format!("cc:{key_id}"), "done", WAIT)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_image_and_document_are_decrypted_verified_and_archived() {
    let Some(s) = setup("", |c| c).await else {
        return;
    };
    let image = bytes(200_000, 1);
    let document = bytes(75_001, 2);
    let image_stub = s
        .fake
        .cdn
        .add_media("imageMessage", image.clone(), "image/jpeg", None);
    let doc_stub = s.fake.cdn.add_media(
        "documentMessage",
        document.clone(),
        "application/pdf",
        Some("report.pdf"),
    );
    announce(&s, "3EB0IMAGE0000000001", &image_stub).await;
    announce(&s, "3EB0DOCUMENT0000001", &doc_stub).await;
    for (id, content, ext, mime) in [
        ("3EB0IMAGE0000000001", &image, ".jpg", "image/jpeg"),
        ("3EB0DOCUMENT0000001", &document, ".pdf", "application/pdf"),
    ] {
        let job = done(&s, id).await;
        assert_eq!(job["attempts"], 1, "{job}");
        let manifest = s.archive.assert_archived("cc", id, content, ext).await;
        assert_eq!(manifest["verification"], "whatsapp-enc+plain");
        assert_eq!(manifest["provider"], "codechat");
        assert_eq!(manifest["provider_sha256"], e2e::sha256_hex(content));
        assert_eq!(manifest["chat_id"], CHAT);
        assert_eq!(manifest["mime_type"], mime);
    }
    let manifest = s.archive.manifest("cc", "3EB0DOCUMENT0000001").await;
    let manifest = manifest.expect("the document's manifest");
    assert_eq!(manifest["file_name"], "report.pdf");
    assert_eq!(s.fake.cdn.hits(&image_stub), 1);
    assert_eq!(s.fake.cdn.hits(&doc_stub), 1);
    assert_eq!(s.fake.codechat.downloads(), 0, "the gateway was not needed");
    assert!(
        e2e::files_under(&s.daemon.workdir.join("data/spool")).is_empty(),
        "encrypted and plaintext spool files are removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_mode_streams_the_plaintext_from_codechat_with_the_jwt() {
    let Some(s) = setup("mode = \"provider\"", |c| c).await else {
        return;
    };
    let audio = bytes(120_000, 3);
    let stub = s.fake.cdn.add_media(
        "audioMessage",
        audio.clone(),
        "audio/ogg; codecs=opus",
        None,
    );
    announce(&s, "3EB0VOICE0000000001", &stub).await;
    done(&s, "3EB0VOICE0000000001").await;
    let manifest = s
        .archive
        .assert_archived("cc", "3EB0VOICE0000000001", &audio, ".ogg")
        .await;
    assert_eq!(
        manifest["verification"], "provider-sha256",
        "the gateway's plaintext checked against fileSha256"
    );
    assert_eq!(s.fake.codechat.downloads(), 1);
    assert_eq!(s.fake.codechat.rejected(), 0, "the JWT was accepted");
    assert_eq!(s.fake.cdn.hits(&stub), 0, "the CDN was not touched");
    let sent = s.fake.codechat.last_request().unwrap();
    assert_eq!(sent["contentType"], "audio");
    assert_eq!(sent["content"]["directPath"], stub.direct_path);
    assert!(
        !s.daemon.logs().contains(s.fake.codechat.api_token()),
        "the JWT never reaches the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cdn_410_falls_back_to_codechat_in_the_same_attempt() {
    let Some(s) = setup("", |c| c).await else {
        return;
    };
    let video = bytes(300_000, 4);
    let stub = s
        .fake
        .cdn
        .add_media("videoMessage", video.clone(), "video/mp4", None);
    s.fake.cdn.inject_faults(&stub, vec![CdnFault::Gone]);
    announce(&s, "3EB0GONE00000000001", &stub).await;
    let job = done(&s, "3EB0GONE00000000001").await;
    assert_eq!(job["attempts"], 1, "fallback within the attempt: {job}");
    let manifest = s
        .archive
        .assert_archived("cc", "3EB0GONE00000000001", &video, ".mp4")
        .await;
    assert_eq!(manifest["verification"], "provider-sha256");
    assert_eq!(s.fake.cdn.hits(&stub), 1);
    assert_eq!(s.fake.codechat.downloads(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_blobs_are_dead_with_the_failed_check_named() {
    let Some(s) = setup("", |c| c).await else {
        return;
    };
    // The CDN serves altered bytes every time: fileEncSha256 catches it.
    let image = bytes(50_000, 5);
    let altered = s
        .fake
        .cdn
        .add_media("imageMessage", image.clone(), "image/jpeg", None);
    s.fake
        .cdn
        .inject_faults(&altered, vec![CdnFault::Tampered; 5]);
    announce(&s, "3EB0TAMPERED0000001", &altered).await;

    // The blob is altered and the webhook's fileEncSha256 matches the
    // altered blob (a forged stub): only the MAC can tell.
    let forged = s
        .fake
        .cdn
        .add_media("imageMessage", bytes(50_000, 6), "image/jpeg", None);
    let mut tampered = s.fake.cdn.blob(&forged).to_vec();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    s.fake
        .cdn
        .inject_faults(&forged, vec![CdnFault::Tampered; 5]);
    let mut hook = s
        .fake
        .codechat
        .upsert_webhook("3EB0FORGED000000001", CHAT, &forged, now());
    // Hex this time: every encoding of a hash is accepted.
    hook["data"]["content"]["fileEncSha256"] = json!(e2e::sha256_hex(&tampered));
    let (status, _) = s.daemon.webhook("cc", &hook, WEBHOOK_TOKEN).await;
    assert_eq!(status, 200);

    for (id, check) in [
        ("3EB0TAMPERED0000001", "fileEncSha256 mismatch"),
        ("3EB0FORGED000000001", "HMAC mismatch"),
    ] {
        let job = s
            .daemon
            .wait_for_job(&format!("cc:{id}"), "dead", WAIT)
            .await;
        let reason = job["last_error"].as_str().unwrap();
        assert!(reason.contains(check), "{id}: {reason}");
        assert_eq!(job["attempts"], 3, "retried, then dead: {job}");
    }
    assert_eq!(s.fake.cdn.hits(&altered), 3);
    assert!(
        s.archive.keys("blobs/").await.is_empty(),
        "nothing unverified was archived"
    );
    assert!(s.archive.keys("messages/").await.is_empty());
    assert_eq!(
        s.fake.codechat.downloads(),
        0,
        "a mismatch is not a dead link"
    );
    assert!(e2e::files_under(&s.daemon.workdir.join("data/spool")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_40_mib_encrypted_video_streams_in_flat_memory() {
    // 5 MiB parts (the smallest S3 allows): the uploader holds at most four
    // at once, so a 40 MiB file already fills the upload's share of memory;
    // what more a larger file costs would be the download or the decryption
    // holding it.
    let Some(s) = setup("", |c| {
        c.replace("[storage.s3]\n", "[storage.s3]\npart_size = 5242880\n")
    })
    .await
    else {
        return;
    };
    const MIB: usize = 1024 * 1024;
    let warm = s
        .fake
        .cdn
        .add_media("imageMessage", bytes(100_000, 7), "image/jpeg", None);
    announce(&s, "3EB0WARMUP000000001", &warm).await;
    done(&s, "3EB0WARMUP000000001").await;
    let idle = s.daemon.peak_rss_kib();
    println!("daemon peak RSS after start-up and one small image: {idle} KiB");

    // The first large file warms the allocator's arenas up to the
    // uploader's working set; the next two are measured.
    let mut peaks = Vec::new();
    for (id, size) in [
        ("3EB0VIDEO40MIB00000", 40 * MIB),
        ("3EB0VIDEO40MIB00001", 40 * MIB),
        ("3EB0VIDEO120MIB0001", 120 * MIB),
    ] {
        let video = bytes(size, id.len() as u64 + size as u64);
        let stub = s
            .fake
            .cdn
            .add_media("videoMessage", video.clone(), "video/mp4", None);
        s.daemon.reset_peak_rss();
        announce(&s, id, &stub).await;
        let job = s
            .daemon
            .wait_for_job(&format!("cc:{id}"), "done", Duration::from_secs(120))
            .await;
        assert_eq!(job["attempts"], 1, "{job}");
        let peak = s.daemon.peak_rss_kib();
        println!(
            "daemon peak RSS while archiving a {} MiB encrypted video ({id}): {peak} KiB ({} MiB)",
            size / MIB,
            peak / 1024
        );
        let manifest = s.archive.assert_archived("cc", id, &video, ".mp4").await;
        assert_eq!(manifest["verification"], "whatsapp-enc+plain");
        peaks.push(peak);
    }
    // Holding a file (or its plaintext) whole would add at least the 80 MiB
    // the last file is larger by; streaming adds allocator noise only, which
    // on a busy 2-core machine was seen up to about 20 MiB.
    let (p40, p120) = (peaks[1], peaks[2]);
    assert!(
        p120 < p40 + 32 * 1024,
        "peak RSS grew with the file size: {p40} KiB at 40 MiB, {p120} KiB at 120 MiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_backfilled_without_its_webhook_is_archived_and_the_late_webhook_is_a_duplicate() {
    let Some(s) = setup("", |c| c).await else {
        return;
    };
    let image = bytes(120_000, 7);
    let stub = s
        .fake
        .cdn
        .add_media("imageMessage", image.clone(), "image/jpeg", None);
    let key_id = "3EB0BACKFILL0000001";
    // The message record as CodeChat keeps it: the webhook's `data`.
    let hook = s.fake.codechat.upsert_webhook(key_id, CHAT, &stub, now());
    let stdout = e2e::cli::backfill(&s.daemon.workdir, "cc", &[hook["data"].clone()]);
    assert!(stdout.contains("new:        1"), "{stdout}");

    done(&s, key_id).await;
    let manifest = s
        .archive
        .assert_archived("cc", key_id, &image, ".jpg")
        .await;
    assert_eq!(manifest["verification"], "whatsapp-enc+plain");
    assert_eq!(manifest["chat_id"], CHAT);
    let (status, answer) = s.daemon.webhook("cc", &hook, WEBHOOK_TOKEN).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 1, "ignored": 0}),
        "the webhook that arrives after all is the backfilled job"
    );
    assert_eq!(s.fake.cdn.hits(&stub), 1, "fetched once");
}
