//! Evolution API end to end: the real daemon, the fake WhatsApp CDN, the fake
//! Evolution API (getBase64FromMediaMessage, apikey checked), and a real
//! Garage. Webhooks carry Evolution's HS256 JWT and index-keyed byte fields.
//! Skips without `garage` unless MEDIA_ARCHIVER_REQUIRE_S3=1.

use std::time::Duration;

use e2e::accounts::EVOLUTION_JWT_SECRET as JWT_KEY;
use e2e::{Stage, accounts, bytes, now};
use serde_json::{Value, json};
use test_support::evolution::FakeEvolution;
use test_support::garage::Garage;
use test_support::whatsapp_cdn::{CdnFault, FakeWhatsappCdn, MediaStub};

const CHAT: &str = "5511977776666@s.whatsapp.net";
const WAIT: Duration = Duration::from_secs(30);

/// The fake WhatsApp CDN and the fake Evolution API in front of it.
#[derive(Debug)]
struct Fakes {
    cdn: FakeWhatsappCdn,
    evolution: FakeEvolution,
}

type Setup = Stage<Fakes>;

async fn setup() -> Option<Setup> {
    let garage = Garage::start()?;
    let cdn = FakeWhatsappCdn::start().await;
    let evolution = FakeEvolution::start(&cdn).await;
    let accounts = accounts::evolution(&evolution, &cdn);
    Some(Stage::on_garage(
        Fakes { cdn, evolution },
        garage,
        &accounts,
    ))
}

async fn post(s: &Setup, hook: &Value, jwt: &str) -> (u16, Value) {
    s.daemon.webhook("evo", hook, jwt).await
}

async fn announce(s: &Setup, key_id: &str, stub: &MediaStub, inline: Option<&[u8]>) {
    let hook = s
        .fake
        .evolution
        .upsert_webhook(key_id, CHAT, stub, now(), inline);
    let (status, answer) = post(s, &hook, &FakeEvolution::webhook_jwt(JWT_KEY, 0)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 1, "duplicates": 0, "ignored": 0})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn index_keyed_media_is_fetched_from_the_cdn_and_decrypted() {
    let Some(s) = setup().await else {
        return;
    };
    let sticker = bytes(30_000, 11);
    let stub = s
        .fake
        .cdn
        .add_media("stickerMessage", sticker.clone(), "image/webp", None);
    let hook = s
        .fake
        .evolution
        .upsert_webhook("3EB0EVOSTICKER01", CHAT, &stub, now(), None);
    // The byte fields really are index-keyed objects, as Evolution sends them.
    assert!(hook["data"]["message"]["stickerMessage"]["mediaKey"]["0"].is_u64());
    assert!(hook["data"]["message"]["stickerMessage"]["fileLength"]["low"].is_u64());
    let (status, answer) = post(&s, &hook, &FakeEvolution::webhook_jwt(JWT_KEY, 0)).await;
    assert_eq!(status, 200, "{answer}");
    s.daemon
        .wait_for_job("evo:3EB0EVOSTICKER01", "done", WAIT)
        .await;
    let manifest = s
        .archive
        .assert_archived("evo", "3EB0EVOSTICKER01", &sticker, ".webp")
        .await;
    assert_eq!(manifest["verification"], "whatsapp-enc+plain");
    assert_eq!(manifest["provider"], "evolution");
    assert_eq!(manifest["chat_id"], CHAT);
    assert_eq!(s.fake.cdn.hits(&stub), 1);
    assert_eq!(s.fake.evolution.answered(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn inline_base64_is_archived_without_any_download() {
    let Some(s) = setup().await else {
        return;
    };
    let image = bytes(20_000, 12);
    let stub = s
        .fake
        .cdn
        .add_media("imageMessage", image.clone(), "image/jpeg", None);
    announce(&s, "3EB0EVOINLINE001", &stub, Some(&image)).await;
    s.daemon
        .wait_for_job("evo:3EB0EVOINLINE001", "done", WAIT)
        .await;
    let manifest = s
        .archive
        .assert_archived("evo", "3EB0EVOINLINE001", &image, ".jpg")
        .await;
    assert_eq!(manifest["verification"], "provider-sha256");
    assert_eq!(manifest["provider_sha256"], e2e::sha256_hex(&image));
    assert_eq!(s.fake.cdn.hits(&stub), 0, "nothing downloaded");
    assert_eq!(s.fake.evolution.answered(), 0);

    // Inline bytes that are not the file the message vouches for are not archived.
    let other = s
        .fake
        .cdn
        .add_media("imageMessage", bytes(20_000, 13), "image/jpeg", None);
    announce(&s, "3EB0EVOINLINE002", &other, Some(&bytes(20_000, 14))).await;
    let job = s
        .daemon
        .wait_for_job("evo:3EB0EVOINLINE002", "dead", WAIT)
        .await;
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("sha256 mismatch"),
        "{job}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cdn_410_falls_back_to_get_base64_from_media_message() {
    let Some(s) = setup().await else {
        return;
    };
    let document = bytes(60_000, 15);
    let stub = s.fake.cdn.add_media(
        "documentMessage",
        document.clone(),
        "application/pdf",
        Some("invoice.pdf"),
    );
    s.fake.cdn.inject_faults(&stub, vec![CdnFault::Gone]);
    announce(&s, "3EB0EVOGONE00001", &stub, None).await;
    let job = s
        .daemon
        .wait_for_job("evo:3EB0EVOGONE00001", "done", WAIT)
        .await;
    assert_eq!(job["attempts"], 1, "{job}");
    let manifest = s
        .archive
        .assert_archived("evo", "3EB0EVOGONE00001", &document, ".pdf")
        .await;
    assert_eq!(manifest["verification"], "provider-sha256");
    assert_eq!(manifest["file_name"], "invoice.pdf");
    assert_eq!(s.fake.evolution.answered(), 1);
    assert_eq!(s.fake.evolution.rejected(), 0, "the apikey was accepted");
    assert!(!s.daemon.logs().contains(s.fake.evolution.api_key()));
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_without_a_valid_jwt_are_refused() {
    let Some(s) = setup().await else {
        return;
    };
    let stub = s
        .fake
        .cdn
        .add_media("imageMessage", bytes(1000, 16), "image/jpeg", None);
    let hook = s
        .fake
        .evolution
        .upsert_webhook("3EB0EVOJWT000001", CHAT, &stub, now(), None);
    for jwt in [
        FakeEvolution::webhook_jwt("another-key", 0),
        FakeEvolution::webhook_jwt(JWT_KEY, 3600),
        "not-a-jwt".to_owned(),
    ] {
        let (status, body) = post(&s, &hook, &jwt).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _) = s.daemon.post_raw("evo", b"{}".to_vec(), &[]).await;
    assert_eq!(status, 401);
    let (status, _) = post(&s, &hook, &FakeEvolution::webhook_jwt(JWT_KEY, 0)).await;
    assert_eq!(status, 200);
    assert!(!s.daemon.logs().contains(JWT_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_backfilled_without_its_webhook_is_archived_and_the_late_webhook_is_a_duplicate() {
    let Some(s) = setup().await else {
        return;
    };
    let video = bytes(90_000, 17);
    let stub = s
        .fake
        .cdn
        .add_media("videoMessage", video.clone(), "video/mp4", None);
    let key_id = "3EB0EVOBACKFILL01";
    // The message record as Evolution keeps it: the webhook's `data`.
    let hook = s
        .fake
        .evolution
        .upsert_webhook(key_id, CHAT, &stub, now(), None);
    let stdout = e2e::cli::backfill(&s.daemon.workdir, "evo", &[hook["data"].clone()]);
    assert!(stdout.contains("new:        1"), "{stdout}");

    s.daemon
        .wait_for_job(&format!("evo:{key_id}"), "done", WAIT)
        .await;
    let manifest = s
        .archive
        .assert_archived("evo", key_id, &video, ".mp4")
        .await;
    assert_eq!(manifest["verification"], "whatsapp-enc+plain");
    let (status, answer) = post(&s, &hook, &FakeEvolution::webhook_jwt(JWT_KEY, 0)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 1, "ignored": 0}),
        "the webhook that arrives after all is the backfilled job"
    );
    assert_eq!(s.fake.cdn.hits(&stub), 1, "fetched once");
}
