//! NXCloud end to end: the real daemon, the fake NXCloud (getMedia with its
//! `sign` checked on every request, OSS-style signed expiring links), and a
//! real Garage. Webhooks are signed and verified too. Skips without `garage`
//! unless MEDIA_ARCHIVER_REQUIRE_S3=1.

use std::time::Duration;

use e2e::{Stage, accounts, bytes, now};
use serde_json::{Value, json};
use test_support::garage::Garage;
use test_support::nxcloud::FakeNxcloud;

const FROM: &str = "6281234567890";
const WAIT: Duration = Duration::from_secs(30);

type Setup = Stage<FakeNxcloud>;

/// Everything running, the daemon signing NXCloud requests with
/// `access_secret` (the fake's when `None`), or `None` when Garage is not
/// installed (and not required).
async fn setup(access_secret: Option<&str>) -> Option<Setup> {
    let garage = Garage::start()?;
    let fake = FakeNxcloud::start().await;
    let accounts = accounts::nxcloud(&fake, access_secret.unwrap_or(fake.access_secret()));
    Some(Stage::on_garage(fake, garage, &accounts))
}

/// Posts `hook` signed as NXCloud signs (over exactly these bytes).
async fn post_signed(s: &Setup, hook: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(hook).unwrap();
    let signed = s.fake.signed_headers("mo", &body);
    let mut headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers.push(("content-type", "application/json"));
    s.daemon.post_raw("nx", body, &headers).await
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_webhook_signed_get_media_and_the_oss_link_archive_the_file() {
    let Some(s) = setup(None).await else {
        return;
    };
    let image = bytes(150_000, 21);
    let document = bytes(40_000, 22);
    let image_id = s
        .fake
        .add_media(image.clone(), "image/jpeg", "c5e744fab2a3.jpg");
    let doc_id = s
        .fake
        .add_media(document.clone(), "application/pdf", "terms.pdf");
    for (kind, media_id, message_id) in [
        ("image", &image_id, "wamid.NXIMAGE0001"),
        ("document", &doc_id, "wamid.NXDOCUMENT01"),
    ] {
        let hook = s
            .fake
            .message_webhook(kind, media_id, message_id, FROM, now());
        let (status, answer) = post_signed(&s, &hook).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer,
            json!({"accepted": 1, "duplicates": 0, "ignored": 0})
        );
    }
    for (media_id, message_id, content, ext) in [
        (&image_id, "wamid.NXIMAGE0001", &image, ".jpg"),
        (&doc_id, "wamid.NXDOCUMENT01", &document, ".pdf"),
    ] {
        let job = s
            .daemon
            .wait_for_job(&format!("nx:{media_id}"), "done", WAIT)
            .await;
        assert_eq!(job["attempts"], 1, "{job}");
        let manifest = s
            .archive
            .assert_archived("nx", message_id, content, ext)
            .await;
        assert_eq!(manifest["provider"], "nxcloud");
        assert_eq!(manifest["media_id"], media_id.as_str());
        assert_eq!(
            manifest["verification"], "computed-only",
            "NXCloud vouches no hash"
        );
        assert_eq!(manifest["chat_id"], FROM);
    }
    assert_eq!(s.fake.get_media_calls(), 2);
    assert_eq!(
        s.fake.bad_signatures(),
        0,
        "every getMedia was signed correctly"
    );
    assert_eq!(s.fake.file_hits(), 2);
    let manifest = s.archive.manifest("nx", "wamid.NXDOCUMENT01").await;
    let manifest = manifest.expect("the document's manifest");
    assert_eq!(manifest["file_name"], "terms.pdf");
    assert!(!s.daemon.logs().contains(s.fake.access_secret()));
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_or_missigned_webhooks_are_refused() {
    let Some(s) = setup(None).await else {
        return;
    };
    let id = s.fake.add_media(bytes(1000, 23), "image/jpeg", "x.jpg");
    let hook = s
        .fake
        .message_webhook("image", &id, "wamid.NXREFUSED01", FROM, now());
    let body = serde_json::to_vec(&hook).unwrap();
    let (status, _) = s.daemon.post_raw("nx", body.clone(), &[]).await;
    assert_eq!(status, 401);
    // Signed over other bytes.
    let signed = s.fake.signed_headers("mo", b"{}");
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, answer) = s.daemon.post_raw("nx", body, &headers).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("sign"),
        "{answer}"
    );
    assert_eq!(s.fake.get_media_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_access_secret_is_refused_by_nxcloud_and_the_job_is_dead() {
    // The daemon signs with a secret NXCloud does not know: the fake answers
    // code 1001 (authentication), which retrying cannot fix. The webhook
    // check is passed by signing it with the same wrong secret.
    let Some(s) = setup(Some("not-the-secret")).await else {
        return;
    };
    let id = s.fake.add_media(bytes(1000, 24), "image/jpeg", "x.jpg");
    let hook = s
        .fake
        .message_webhook("image", &id, "wamid.NXBADSIGN01", FROM, now());
    let body = serde_json::to_vec(&hook).unwrap();
    let signed = s.fake.signed_headers_with("not-the-secret", "mo", &body);
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, answer) = s.daemon.post_raw("nx", body, &headers).await;
    assert_eq!(status, 200, "{answer}");
    let job = s
        .daemon
        .wait_for_job(&format!("nx:{id}"), "dead", WAIT)
        .await;
    assert_eq!(job["attempts"], 1, "permanent at once: {job}");
    let reason = job["last_error"].as_str().unwrap();
    assert!(
        reason.contains("getMedia") && reason.contains("1001"),
        "{reason}"
    );
    assert_eq!(s.fake.bad_signatures(), 1);
    assert!(!reason.contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_backfilled_without_its_webhook_is_archived_and_the_late_webhook_is_a_duplicate()
 {
    let Some(s) = setup(None).await else {
        return;
    };
    let image = bytes(60_000, 23);
    let media_id = s.fake.add_media(image.clone(), "image/jpeg", "photo.jpg");
    let message_id = "wamid.NXBACKFILL01";
    let at = now();
    let stdout = e2e::cli::backfill(
        &s.daemon.workdir,
        "nx",
        &[
            json!({"media_id": media_id, "message_id": message_id, "timestamp": at,
                 "type": "image", "mime_type": "image/jpeg", "from": FROM}),
        ],
    );
    assert!(stdout.contains("new:        1"), "{stdout}");

    s.daemon
        .wait_for_job(&format!("nx:{media_id}"), "done", WAIT)
        .await;
    let manifest = s
        .archive
        .assert_archived("nx", message_id, &image, ".jpg")
        .await;
    assert_eq!(manifest["provider"], "nxcloud");
    let hook = s
        .fake
        .message_webhook("image", &media_id, message_id, FROM, at);
    let (status, answer) = post_signed(&s, &hook).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 1, "ignored": 0}),
        "the webhook that arrives after all is the backfilled job"
    );
}
