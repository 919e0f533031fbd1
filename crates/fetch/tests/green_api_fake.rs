//! The fake Green API (test-support) checked through the real Fetcher: the
//! documented routes answer as documented, and each injected fault is seen by
//! the fetcher as the failure it stands for.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use archiver_core::{Classify, ErrorClass, StagedFile};
use media_fetch::{DownloadRequest, FetchConfig, FetchError, Fetcher, HostPolicy};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use test_support::green_api::{FakeGreenApi, FileFault};
use test_support::staged_bytes;
use url::Url;

const CHAT: &str = "79001234567@c.us";

fn photo() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

struct Env {
    fake: FakeGreenApi,
    fetcher: Fetcher,
    _spool: tempfile::TempDir,
    http: reqwest::Client,
}

impl Env {
    async fn start() -> Self {
        let spool = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(FetchConfig {
            allow_private_networks: true,
            read_timeout: Duration::from_millis(1500),
            spool_dir: spool.path().to_owned(),
            ..FetchConfig::default()
        })
        .unwrap();
        Self {
            fake: FakeGreenApi::start().await,
            fetcher,
            _spool: spool,
            http: reqwest::Client::new(),
        }
    }

    async fn fetch(&self, url: &str) -> Result<StagedFile, FetchError> {
        let req = DownloadRequest::get(Url::parse(url).unwrap());
        self.fetcher
            .download(&req, &HostPolicy::new(["127.0.0.1"]), &AtomicU64::new(0))
            .await
    }

    /// Calls an API method; returns (status, Retry-After, body text).
    async fn call(&self, method: &str, token: &str, body: Value) -> (u16, Option<String>, String) {
        let url = format!(
            "{}/waInstance{}/{method}/{token}",
            self.fake.base_url(),
            self.fake.id_instance()
        );
        let r = self.http.post(url).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, retry_after, r.text().await.unwrap())
    }
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[tokio::test]
async fn each_file_fault_reaches_the_fetcher_as_its_failure() {
    let env = Env::start().await;
    let bytes = photo();
    let url = env.fake.add_file(
        CHAT,
        "A322F800D3F12CD4858CC947DAFB77A2",
        bytes.clone(),
        "image/jpeg",
        "photo.jpg",
    );
    assert!(
        url.starts_with(&format!("{}/files/1101000001/", env.fake.base_url())),
        "{url}"
    );
    assert!(url.ends_with(".jpg"), "{url}");

    env.fake.inject_file_faults(
        &url,
        vec![
            FileFault::Status(500),
            FileFault::TooManyRequests {
                retry_after_secs: 7,
            },
            FileFault::Stall(Duration::from_secs(6)),
            FileFault::Stall(Duration::from_millis(100)),
            FileFault::Truncate(1000),
            FileFault::WrongBytes,
        ],
    );

    let e = env.fetch(&url).await.unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 500, .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Transient);

    let e = env.fetch(&url).await.unwrap_err();
    assert_eq!(
        e.class(),
        ErrorClass::RetryAfter(Duration::from_secs(7)),
        "{e:?}"
    );

    let e = env.fetch(&url).await.unwrap_err();
    assert!(matches!(e, FetchError::Timeout(_)), "{e:?}");

    // A short stall within the read timeout only delays the file.
    let ok = env.fetch(&url).await.unwrap();
    assert_eq!(ok.sha256.as_bytes(), &sha(&bytes));

    let e = env.fetch(&url).await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Truncated {
                expected: 200_000,
                got: 1000
            }
        ),
        "{e:?}"
    );

    // Wrong bytes: same size, different hash (the caller's check catches it).
    let wrong = env.fetch(&url).await.unwrap();
    assert_eq!(wrong.size, bytes.len() as u64);
    assert_ne!(wrong.sha256.as_bytes(), &sha(&bytes));

    // Faults used up: the file again.
    let ok = env.fetch(&url).await.unwrap();
    assert_eq!(ok.sha256.as_bytes(), &sha(&bytes));
    assert_eq!(staged_bytes(&ok), bytes);
    assert_eq!(env.fake.file_hits(&url), 7, "one GET per attempt");
}

#[tokio::test]
async fn gone_link_stays_gone_and_download_file_gives_a_fresh_one() {
    let env = Env::start().await;
    let bytes = b"%PDF-1.4 not really".to_vec();
    let id = "BAE5F4886A8D5DF0";
    let url = env
        .fake
        .add_file(CHAT, id, bytes.clone(), "application/pdf", "report.pdf");
    env.fake.inject_file_faults(&url, vec![FileFault::Gone]);

    for _ in 0..2 {
        let e = env.fetch(&url).await.unwrap_err();
        assert!(e.is_link_dead(), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Permanent);
    }

    let (status, _, body) = env
        .call(
            "downloadFile",
            env.fake.api_token(),
            json!({"chatId": CHAT, "idMessage": id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fresh = serde_json::from_str::<Value>(&body).unwrap()["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(fresh, url);
    assert!(fresh.ends_with(".pdf"));
    let file = env.fetch(&fresh).await.unwrap();
    assert_eq!(staged_bytes(&file), bytes);
    assert!(
        env.fetch(&url).await.unwrap_err().is_link_dead(),
        "the old link stays dead"
    );
    assert_eq!(env.fake.download_file_calls(), 1);
    assert_eq!(env.fake.file_hits(&url), 3);
    assert_eq!(env.fake.file_hits(&fresh), 1);

    // getMessage now reports the fresh link.
    let (status, _, body) = env
        .call(
            "getMessage",
            env.fake.api_token(),
            json!({"chatId": CHAT, "idMessage": id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let m: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["downloadUrl"], json!(fresh));
    assert_eq!(m["typeMessage"], json!("documentMessage"));
    assert_eq!(m["fileName"], json!("report.pdf"));
    assert_eq!(m["mimeType"], json!("application/pdf"));
    assert_eq!(m["type"], json!("incoming"));
    assert_eq!(m["chatId"], json!(CHAT));
    assert_eq!(m["idMessage"], json!(id));
    assert_eq!(env.fake.get_message_calls(), 1);
}

#[tokio::test]
async fn api_errors_are_the_documented_ones() {
    let env = Env::start().await;
    let id = "A322F800D3F12CD4858CC947DAFB77A2";
    env.fake
        .add_file(CHAT, id, vec![1, 2, 3], "image/png", "x.png");
    let token = env.fake.api_token().to_owned();

    let (status, _, _) = env
        .call(
            "downloadFile",
            "wrong-token",
            json!({"chatId": CHAT, "idMessage": id}),
        )
        .await;
    assert_eq!(status, 401);

    let (status, _, body) = env
        .call(
            "downloadFile",
            &token,
            json!({"chatId": CHAT, "idMessage": "NOPE"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body.contains(&format!(
            "File message encrypted url not found by chatId {CHAT} and idMessage NOPE"
        )),
        "{body}"
    );

    let (status, _, body) = env
        .call("downloadFile", &token, json!({"chatId": CHAT}))
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("Validation failed"), "{body}");

    let (status, _, body) = env
        .call(
            "getMessage",
            &token,
            json!({"chatId": CHAT, "idMessage": "NOPE"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("Message not found by id 'NOPE'"), "{body}");
    assert_eq!(env.fake.download_file_calls(), 3);
    assert_eq!(env.fake.get_message_calls(), 1);
}

#[tokio::test]
async fn api_faults_apply_to_download_file_in_order() {
    let env = Env::start().await;
    let id = "A322F800D3F12CD4858CC947DAFB77A2";
    env.fake
        .add_file(CHAT, id, vec![9; 10], "video/mp4", "v.mp4");
    env.fake.inject_api_faults(vec![
        FileFault::TooManyRequests {
            retry_after_secs: 3,
        },
        FileFault::Status(500),
        FileFault::Status(400),
        FileFault::WrongBytes,
    ]);
    let token = env.fake.api_token().to_owned();
    let body = json!({"chatId": CHAT, "idMessage": id});

    let (status, retry_after, _) = env.call("downloadFile", &token, body.clone()).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("3")));
    let (status, _, text) = env.call("downloadFile", &token, body.clone()).await;
    assert_eq!(status, 500);
    assert!(
        text.contains(&format!(
            "Internal error when downloading file by chatId {CHAT} and idMessage {id}"
        )),
        "{text}"
    );
    let (status, _, text) = env.call("downloadFile", &token, body.clone()).await;
    assert_eq!(status, 400);
    assert!(
        text.contains("instance in starting process try later"),
        "{text}"
    );
    let (status, _, text) = env.call("downloadFile", &token, body.clone()).await;
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&text).is_err());
    let (status, _, text) = env.call("downloadFile", &token, body).await;
    assert_eq!(status, 200);
    let url = serde_json::from_str::<Value>(&text).unwrap()["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(staged_bytes(&env.fetch(&url).await.unwrap()), vec![9; 10]);
}

#[tokio::test]
async fn webhook_has_the_documented_shape() {
    let env = Env::start().await;
    let id = "A322F800D3F12CD4858CC947DAFB77A2";
    let url = env.fake.add_file(
        "120363043968066561@g.us",
        id,
        vec![0; 4],
        "image/jpeg",
        "a.jpg",
    );
    let hook = env.fake.file_webhook(
        "incomingMessageReceived",
        "imageMessage",
        "120363043968066561@g.us",
        id,
        &url,
        1_700_000_000,
    );
    assert_eq!(hook["typeWebhook"], json!("incomingMessageReceived"));
    assert_eq!(hook["instanceData"]["idInstance"], json!(1_101_000_001u64));
    assert_eq!(hook["instanceData"]["typeInstance"], json!("whatsapp"));
    assert!(
        hook["instanceData"]["wid"]
            .as_str()
            .unwrap()
            .ends_with("@c.us")
    );
    assert_eq!(hook["timestamp"], json!(1_700_000_000));
    assert_eq!(hook["idMessage"], json!(id));
    let sender = &hook["senderData"];
    assert_eq!(sender["chatId"], json!("120363043968066561@g.us"));
    for key in ["chatName", "sender", "senderName"] {
        assert!(sender[key].is_string(), "{key}");
    }
    assert_eq!(hook["messageData"]["typeMessage"], json!("imageMessage"));
    let file = &hook["messageData"]["fileMessageData"];
    assert_eq!(file["downloadUrl"], json!(url));
    assert_eq!(file["mimeType"], json!("image/jpeg"));
    assert_eq!(file["fileName"], json!("a.jpg"));
    assert_eq!(file["jpegThumbnail"], json!(""));
    assert_eq!(file["caption"], json!(""));
    assert_eq!(file["isForwarded"], json!(false));
    assert_eq!(file["forwardingScore"], json!(0));

    // An outgoing API message: getMessage agrees with the webhook.
    let hook = env.fake.file_webhook(
        "outgoingAPIMessageReceived",
        "imageMessage",
        "120363043968066561@g.us",
        id,
        &url,
        1_700_000_100,
    );
    assert_eq!(
        hook["senderData"]["sender"],
        json!(test_support::green_api::INSTANCE_WID)
    );
    let (_, _, body) = env
        .call(
            "getMessage",
            env.fake.api_token(),
            json!({"chatId": "120363043968066561@g.us", "idMessage": id}),
        )
        .await;
    let m: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["type"], json!("outgoing"));
    assert_eq!(m["sendByApi"], json!(true));
    assert_eq!(m["timestamp"], json!(1_700_000_100));
}

#[tokio::test]
async fn fake_stops_when_dropped() {
    let env = Env::start().await;
    let url = env
        .fake
        .add_file(CHAT, "X1", vec![1], "image/jpeg", "a.jpg");
    env.fetch(&url).await.unwrap();
    let Env {
        fake,
        fetcher,
        _spool,
        ..
    } = env;
    fake.shutdown();
    let req = DownloadRequest::get(Url::parse(&url).unwrap());
    let e = fetcher
        .download(&req, &HostPolicy::new(["127.0.0.1"]), &AtomicU64::new(0))
        .await
        .unwrap_err();
    assert!(
        matches!(e, FetchError::Connect(_) | FetchError::Io(_)),
        "{e:?}"
    );
}
