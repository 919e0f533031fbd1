//! Per-account rules end to end (`[accounts.rules]`, PRODUCT.md section
//! 10): the real daemon, the fake Green API and the fake WhatsApp CDN with
//! CodeChat, archiving to a folder. An excluded message is answered 200
//! under `ignored`, makes no job and counts as `webhooks_total{outcome=
//! "filtered"}`; a file over `max_file_bytes` ends `dead` with reason
//! `too-large` without being downloaded.

use std::time::Duration;

use e2e::accounts::{CODECHAT_WEBHOOK_TOKEN, GREEN_WEBHOOK_TOKEN};
use e2e::{Stage, StoreUnderTest, accounts, bytes, now};
use serde_json::{Value, json};
use test_support::codechat::FakeCodeChat;
use test_support::green_api::FakeGreenApi;
use test_support::whatsapp_cdn::FakeWhatsappCdn;

const CHAT: &str = "79001234568@c.us";
const DENIED_CHAT: &str = "120363000000000000@g.us";
const WAIT: Duration = Duration::from_secs(30);

/// Account `green` with `rules` as its `[accounts.rules]` table.
async fn green_with_rules(rules: &str) -> Stage<FakeGreenApi> {
    let fake = FakeGreenApi::start().await;
    let account = format!(
        "{}\n[accounts.rules]\n{rules}\n",
        accounts::green_api(&fake)
    );
    Stage::start(fake, &StoreUnderTest::Fs, &account)
}

/// Registers a `len`-byte file with the fake and posts its webhook;
/// returns the answer.
async fn announce(
    s: &Stage<FakeGreenApi>,
    type_webhook: &str,
    chat: &str,
    id: &str,
    len: usize,
) -> (u16, Value) {
    let url = s
        .fake
        .add_file(chat, id, bytes(len, len as u64), "image/jpeg", "a.jpg");
    let hook = s
        .fake
        .file_webhook(type_webhook, "imageMessage", chat, id, &url, now());
    s.daemon.webhook("green", &hook, GREEN_WEBHOOK_TOKEN).await
}

async fn webhooks(s: &Stage<FakeGreenApi>, outcome: &str) -> f64 {
    s.daemon
        .metric(&format!(
            r#"media_archiver_webhooks_total{{account="green",outcome="{outcome}"}}"#
        ))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn outgoing_media_and_a_denied_chat_make_no_job_and_are_answered_200_as_ignored() {
    let s = green_with_rules(&format!(
        "directions = [\"incoming\"]\nchats_deny = [{DENIED_CHAT:?}]"
    ))
    .await;
    let filtered = json!({"accepted": 0, "duplicates": 0, "ignored": 1});
    for (type_webhook, chat, id) in [
        (
            "outgoingMessageReceived",
            CHAT,
            "OUT00000000000000000000000000001",
        ),
        (
            "outgoingAPIMessageReceived",
            CHAT,
            "OUT00000000000000000000000000002",
        ),
        (
            "incomingMessageReceived",
            DENIED_CHAT,
            "GRP00000000000000000000000000001",
        ),
    ] {
        let (status, answer) = announce(&s, type_webhook, chat, id, 1000).await;
        assert_eq!((status, &answer), (200, &filtered), "{type_webhook} {chat}");
        let (status, job) = s.daemon.job(&format!("green:{id}")).await;
        assert_eq!(status, 404, "no job for {id}: {job}");
    }
    assert_eq!(webhooks(&s, "filtered").await, 3.0);

    let id = "INC00000000000000000000000000001";
    let (status, answer) = announce(&s, "incomingMessageReceived", CHAT, id, 1000).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"accepted": 1, "duplicates": 0, "ignored": 0})
    );
    s.daemon
        .wait_for_job(&format!("green:{id}"), "done", WAIT)
        .await;
    let manifest = s.archive.manifest("green", id).await.expect("its manifest");
    assert_eq!(manifest["direction"], "incoming");
    assert_eq!(webhooks(&s, "ok").await, 1.0);
    assert_eq!(webhooks(&s, "filtered").await, 3.0);
    let stats = s.daemon.wait_until_idle(WAIT).await;
    assert_eq!(stats["by_account"]["green"]["done"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_over_the_account_s_cap_ends_dead_too_large_after_one_refused_request() {
    let s = green_with_rules("max_file_bytes = 65536").await;
    let big = "BIG00000000000000000000000000001";
    let (status, answer) = announce(&s, "incomingMessageReceived", CHAT, big, 1_000_000).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"accepted": 1, "duplicates": 0, "ignored": 0}),
        "the size is not in the webhook: a job"
    );
    let job = s
        .daemon
        .wait_for_job(&format!("green:{big}"), "dead", WAIT)
        .await;
    let why = job["last_error"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("too-large: ") && why.contains("65536-byte limit"),
        "{job}"
    );
    assert_eq!(job["attempts"], 1, "permanent: not retried");
    assert_eq!(
        s.daemon
            .metric(r#"media_archiver_dead_total{account="green",reason="too-large"}"#)
            .await,
        1.0
    );
    assert!(s.archive.manifest("green", big).await.is_none());

    // Exactly at the cap is archived.
    let fits = "FIT00000000000000000000000000001";
    announce(&s, "incomingMessageReceived", CHAT, fits, 65_536).await;
    s.daemon
        .wait_for_job(&format!("green:{fits}"), "done", WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_announced_over_the_cap_is_dead_too_large_and_never_fetched() {
    let cdn = FakeWhatsappCdn::start().await;
    let codechat = FakeCodeChat::start(&cdn).await;
    let account = format!(
        "{}\n[accounts.rules]\nmax_file_bytes = 65536\n",
        accounts::codechat(&codechat, &cdn)
    );
    let s = Stage::start((cdn, codechat), &StoreUnderTest::Fs, &account);
    let (cdn, codechat) = &s.fake;
    let stub = cdn.add_media("videoMessage", bytes(200_000, 7), "video/mp4", None);
    let hook = codechat.upsert_webhook("3EB0VIDEO0000000001", CHAT, &stub, now());
    let (status, answer) = s.daemon.webhook("cc", &hook, CODECHAT_WEBHOOK_TOKEN).await;
    assert_eq!((status, answer["accepted"].clone()), (200, json!(1)));
    let job = s
        .daemon
        .wait_for_job("cc:3EB0VIDEO0000000001", "dead", WAIT)
        .await;
    assert!(
        job["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("too-large: the provider announced 200000 bytes")),
        "{job}"
    );
    assert_eq!(cdn.hits(&stub), 0, "not fetched from the CDN");
    assert_eq!(codechat.downloads(), 0, "nor from CodeChat");
}
