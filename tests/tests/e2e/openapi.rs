//! `docs/openapi.json` against the real daemon: every admin route the
//! document lists is called for every answer it promises (but 503, which
//! needs a queue that fails), without and with a wrong token, and on a
//! daemon whose admin API is off; the health and webhook routes are called
//! too. Every answer's status must be one the document lists for that
//! route and method, and its body must validate against the schema the
//! document gives for that status, `$ref`s resolved into its `components`.
//! The check is closed: the document tells clients that answers may gain
//! fields, but it must describe every field the daemon sends today, so an
//! object schema with `properties` admits no other property here. A field
//! renamed, added or retyped in the code or in the document fails here
//! until the two agree again.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::accounts::GREEN_WEBHOOK_TOKEN;
use e2e::{ADMIN_TOKEN, Daemon, StoreUnderTest, accounts, bytes, config, notify_target, now};
use reqwest::Method;
use serde_json::{Value, json};
use test_support::app::AppSink;
use test_support::garage::Garage;
use test_support::green_api::FakeGreenApi;

use crate::docs::{errors, read_json};

const CHAT: &str = "79001234568@c.us";
const GOOD: &str = "APIGOOD000000000000000000000001";
const BAD: &str = "APIBAD0000000000000000000000001";
const WAIT: Duration = Duration::from_secs(30);

/// One answer of the daemon: to which route of the document (its path
/// template), and what came back.
#[derive(Debug)]
struct Answer {
    method: Method,
    route: String,
    status: u16,
    body: Value,
}

/// Every answer a test collected.
#[derive(Debug, Default)]
struct Answers(Vec<Answer>);

impl Answers {
    /// Calls `method path` (a concrete path of `route`) with `token` and
    /// keeps the answer; returns its body.
    async fn call(
        &mut self,
        daemon: &Daemon,
        method: Method,
        route: &str,
        path: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let (status, body) = daemon.call(method.clone(), path, token).await;
        self.keep(method, route, status, body.clone());
        (status, body)
    }

    /// [`Answers::call`] with the admin token.
    async fn admin(
        &mut self,
        daemon: &Daemon,
        method: Method,
        route: &str,
        path: &str,
    ) -> (u16, Value) {
        self.call(daemon, method, route, path, Some(ADMIN_TOKEN))
            .await
    }

    fn keep(&mut self, method: Method, route: &str, status: u16, body: Value) {
        self.0.push(Answer {
            method,
            route: route.to_owned(),
            status,
            body,
        });
    }

    /// (route, method, status) of every answer.
    fn seen(&self) -> BTreeSet<(String, String, u16)> {
        self.0
            .iter()
            .map(|a| (a.route.clone(), operation_key(&a.method), a.status))
            .collect()
    }
}

/// The key of an operation under a path item: `get`, `post`, ...
fn operation_key(method: &Method) -> String {
    method.as_str().to_ascii_lowercase()
}

/// The JSON Schema the document gives for the body of `method route`
/// answering `status`, as a standalone 2020-12 schema (the document's
/// `components` alongside, so that its `$ref`s resolve) and [`closed`];
/// `Ok(None)` when the answer has no JSON body; `Err` when the document
/// does not list that answer.
fn response_schema(
    doc: &Value,
    method: &Method,
    route: &str,
    status: u16,
) -> Result<Option<Value>, String> {
    let operation = &doc["paths"][route][operation_key(method)];
    if operation.is_null() {
        return Err(format!("{method} {route} is not in the document"));
    }
    let response = &operation["responses"][status.to_string()];
    if response.is_null() {
        return Err(format!(
            "{method} {route} answered {status}, which the document does not list"
        ));
    }
    Ok(response["content"]["application/json"]["schema"]
        .as_object()
        .map(|schema| {
            let mut schema = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "components": doc["components"],
                "allOf": [schema],
            });
            closed(&mut schema);
            schema
        }))
}

/// Every object schema in `schema` that lists `properties` and says
/// nothing of others admits no others.
fn closed(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(closed);
        }
        Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}

/// Where the answers and the document disagree (empty when they agree).
fn disagreements(doc: &Value, answers: &Answers) -> Vec<String> {
    let mut problems = Vec::new();
    for a in &answers.0 {
        let schema = match response_schema(doc, &a.method, &a.route, a.status) {
            Ok(Some(schema)) => schema,
            Ok(None) => continue,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{} {} {}: bad schema: {e}", a.method, a.route, a.status));
        for error in errors(&validator, &a.body) {
            let (method, route, status, body) = (&a.method, &a.route, a.status, &a.body);
            problems.push(format!("{method} {route} {status}: {error} in {body}"));
        }
    }
    problems
}

/// The statuses the document lists for `method route` that no answer
/// had, but 503 (it needs a queue or store that fails).
fn not_exercised(doc: &Value, answers: &Answers, route: &str, method: &str) -> Vec<String> {
    let seen = answers.seen();
    doc["paths"][route][method]["responses"]
        .as_object()
        .into_iter()
        .flat_map(|responses| responses.keys())
        .filter_map(|status| status.parse::<u16>().ok())
        .filter(|&status| status != 503)
        .filter(|&status| !seen.contains(&(route.to_owned(), method.to_owned(), status)))
        .map(|status| format!("{method} {route} {status}"))
        .collect()
}

/// Every (route, method) of the admin API in the document.
fn admin_operations(doc: &Value) -> Vec<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .filter(|(route, _)| route.starts_with("/api/v1/"))
        .flat_map(|(route, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|k| *k != "parameters")
                .map(|method| (route.clone(), method.clone()))
        })
        .collect()
}

/// The notification of the `crm` target about job `id`'s archive.
fn notification_id(job_id: &str) -> String {
    format!("crm:{job_id}:media.archived")
}

/// A concrete path for each admin route, on job `id`.
fn admin_path(route: &str, id: &str) -> String {
    match route {
        "/api/v1/notifications/{id}/retry" => format!(
            "/api/v1/notifications/{}/retry",
            notification_id(id).replace(':', "%3A")
        ),
        "/api/v1/jobs/{id}" => format!("/api/v1/jobs/{}", id.replace(':', "%3A")),
        "/api/v1/jobs/{id}/retry" => format!("/api/v1/jobs/{}/retry", id.replace(':', "%3A")),
        "/api/v1/jobs/retry" => "/api/v1/jobs/retry?state=dead".to_owned(),
        "/api/v1/media" => format!("/api/v1/media?account=green&message_id={GOOD}"),
        other => other.to_owned(),
    }
}

/// Posts the Green API webhook of a file (`url`, or the permanent error
/// `{{SWE002}}`) and keeps the answer.
async fn announce(
    answers: &mut Answers,
    daemon: &Daemon,
    fake: &FakeGreenApi,
    id: &str,
    url: &str,
) {
    let hook = fake.file_webhook(
        "incomingMessageReceived",
        "imageMessage",
        CHAT,
        id,
        url,
        now(),
    );
    let (status, body) = daemon.webhook("green", &hook, GREEN_WEBHOOK_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    answers.keep(Method::POST, "/webhooks/{account}", status, body);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_answer_matches_the_openapi_document() {
    let doc = read_json("docs/openapi.json");
    let fake = FakeGreenApi::start().await;
    // Two [[notify]] targets: an app that accepts, and one that is down
    // and gives up after a second, so that a notification dies.
    let app = AppSink::start(&[]).await;
    let targets = notify_target("crm", &app.url(), "")
        + &notify_target(
            "down",
            &format!("http://127.0.0.1:{}/", e2e::free_port()),
            "max_age = \"1s\"\nevents = [\"media.dead\"]",
        );
    let daemon = Daemon::start_in_temp_dir(
        &(config(&StoreUnderTest::Fs, &accounts::green_api(&fake)) + &targets),
    );
    let mut answers = Answers::default();
    let (good, bad) = (format!("green:{GOOD}"), format!("green:{BAD}"));

    // One job done, one dead (SWE002, "file too large", is permanent).
    let url = fake.add_file(CHAT, GOOD, bytes(3000, 1), "image/jpeg", "a.jpg");
    announce(&mut answers, &daemon, &fake, GOOD, &url).await;
    announce(&mut answers, &daemon, &fake, BAD, "{{SWE002}}").await;
    daemon.wait_for_job(&good, "done", WAIT).await;
    daemon.wait_for_job(&bad, "dead", WAIT).await;

    // Every admin route, each of its answers but 503.
    let a = &mut answers;
    let d = &daemon;
    for (path, expected) in [
        ("/api/v1/jobs".to_owned(), 200),
        (
            "/api/v1/jobs?state=dead&account=green&limit=10".to_owned(),
            200,
        ),
        ("/api/v1/jobs?state=sleeping".to_owned(), 400),
        ("/api/v1/jobs?limit=ten".to_owned(), 400),
    ] {
        assert_eq!(
            a.admin(d, Method::GET, "/api/v1/jobs", &path).await.0,
            expected,
            "{path}"
        );
    }
    for (id, expected) in [(&good, 200), (&bad, 200), (&"green:NOPE".to_owned(), 404)] {
        let path = admin_path("/api/v1/jobs/{id}", id);
        assert_eq!(
            a.admin(d, Method::GET, "/api/v1/jobs/{id}", &path).await.0,
            expected,
            "{path}"
        );
    }
    for (id, expected) in [(&bad, 200), (&good, 400), (&"green:NOPE".to_owned(), 404)] {
        let path = admin_path("/api/v1/jobs/{id}/retry", id);
        assert_eq!(
            a.admin(d, Method::POST, "/api/v1/jobs/{id}/retry", &path)
                .await
                .0,
            expected,
            "{path}"
        );
    }
    daemon.wait_for_job(&bad, "dead", WAIT).await;
    for (path, expected) in [
        ("/api/v1/jobs/retry?state=dead", 200),
        ("/api/v1/jobs/retry", 400),
        ("/api/v1/jobs/retry?state=sleeping", 400),
    ] {
        assert_eq!(
            a.admin(d, Method::POST, "/api/v1/jobs/retry", path).await.0,
            expected,
            "{path}"
        );
    }
    for (path, expected) in [
        (
            format!("/api/v1/media?account=green&message_id={GOOD}"),
            200,
        ),
        ("/api/v1/media?account=green".to_owned(), 400),
        (
            "/api/v1/media?account=green&message_id=NOSUCH".to_owned(),
            404,
        ),
    ] {
        assert_eq!(
            a.admin(d, Method::GET, "/api/v1/media", &path).await.0,
            expected,
            "{path}"
        );
    }
    let (status, body) = a
        .admin(d, Method::GET, "/api/v1/stats", "/api/v1/stats")
        .await;
    assert_eq!(status, 200, "{body}");

    // The notifications: crm's of the done job is delivered, down's of the
    // dead job dies once its second is up.
    let notifications = "/api/v1/notifications";
    let (delivered, dead_one) = (notification_id(&good), format!("down:{bad}:media.dead"));
    for (id, state) in [(&delivered, "delivered"), (&dead_one, "dead")] {
        d.wait_for_notification(id, |n| n["id"] == id.as_str() && n["state"] == state, WAIT)
            .await;
    }
    for (path, expected) in [
        (notifications.to_owned(), 200),
        (
            format!("{notifications}?state=delivered&target=crm&job={good}&limit=5"),
            200,
        ),
        (format!("{notifications}?state=sleeping"), 400),
        (format!("{notifications}?limit=ten"), 400),
    ] {
        assert_eq!(
            a.admin(d, Method::GET, notifications, &path).await.0,
            expected,
            "{path}"
        );
    }
    let retry = "/api/v1/notifications/{id}/retry";
    for (id, expected) in [
        (dead_one.clone(), 200),
        (delivered.clone(), 400),
        ("crm:green:NOPE:media.archived".to_owned(), 404),
    ] {
        let path = format!("/api/v1/notifications/{}/retry", id.replace(':', "%3A"));
        assert_eq!(
            a.admin(d, Method::POST, retry, &path).await.0,
            expected,
            "{path}"
        );
    }

    // Erasure: a dry run of the dead message (200), bad requests (400),
    // and, on a daemon whose account store is under Object Lock, 409.
    let erasures = "/api/v1/erasures";
    for (body, expected) in [
        (
            json!({"account": "green", "message_ids": [BAD], "dry_run": true}),
            200,
        ),
        (json!({"account": "green"}), 400),
        (
            json!({"account": "green", "chat_id": CHAT, "before": "soon"}),
            400,
        ),
    ] {
        let (status, answer) = d.admin_post(erasures, &body).await;
        assert_eq!(status, expected, "{body}: {answer}");
        a.keep(Method::POST, erasures, status, answer);
    }
    let locked = Daemon::start_in_temp_dir(&config(
        &StoreUnderTest::Fs,
        &format!(
            "{}\n[accounts.storage]\nbackend = \"s3\"\n[accounts.storage.s3]\nbucket = \"locked\"\n\
             region = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\nforce_path_style = true\n\
             access_key_id = \"k\"\nsecret_access_key = \"s\"\nobject_lock_mode = \"GOVERNANCE\"\n\
             object_lock_days = 30\n",
            accounts::green_api(&fake)
        ),
    ));
    let (status, answer) = locked
        .admin_post(erasures, &json!({"account": "green", "chat_id": CHAT}))
        .await;
    assert_eq!(status, 409, "{answer}");
    a.keep(Method::POST, erasures, status, answer);

    // Without the token, or with a wrong one: 401 on every route.
    let operations = admin_operations(&doc);
    for (r, method) in &operations {
        let method: Method = method.to_uppercase().parse().unwrap();
        let path = admin_path(r, &good);
        for token in [None, Some("not-the-admin-token")] {
            let (status, body) = a.call(d, method.clone(), r, &path, token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
        }
    }

    // The health and webhook routes.
    let (webhooks, healthz, readyz) = ("/webhooks/{account}", "/healthz", "/readyz");
    let auth = format!("Bearer {GREEN_WEBHOOK_TOKEN}");
    for (account, body, auth, expected) in [
        ("green", b"{not json".to_vec(), auth.as_str(), 400),
        ("green", b"{}".to_vec(), "Bearer wrong", 401),
        ("nobody", b"{}".to_vec(), auth.as_str(), 404),
        ("green", vec![b' '; 100_000], auth.as_str(), 413),
    ] {
        let (status, answer) = d.post_raw(account, body, &[("authorization", auth)]).await;
        assert_eq!(status, expected, "{answer}");
        a.keep(Method::POST, webhooks, status, answer);
    }
    assert_eq!(
        a.call(d, Method::GET, webhooks, "/webhooks/green", None)
            .await
            .0,
        405
    );
    assert_eq!(
        a.call(d, Method::GET, healthz, "/healthz", None).await.0,
        200
    );
    assert_eq!(a.call(d, Method::GET, readyz, "/readyz", None).await.0, 200);
    std::fs::remove_dir_all(daemon.workdir.join("data/archive")).unwrap();
    assert_eq!(a.call(d, Method::GET, readyz, "/readyz", None).await.0, 503);

    // With the admin API off, every admin route is 404.
    let off = Daemon::start_in_temp_dir(
        &config(&StoreUnderTest::Fs, &accounts::green_api(&fake))
            .replace(&format!("admin_token = \"{ADMIN_TOKEN}\"\n"), ""),
    );
    for (r, method) in &operations {
        let method: Method = method.to_uppercase().parse().unwrap();
        let path = admin_path(r, &good);
        let (status, body) = a.admin(&off, method.clone(), r, &path).await;
        assert_eq!(
            status, 404,
            "{method} {path} with the admin API off: {body}"
        );
    }

    let problems = disagreements(&doc, &answers);
    assert!(
        problems.is_empty(),
        "the daemon's answers do not match docs/openapi.json:\n{}",
        problems.join("\n")
    );
    let mut missed: Vec<String> = operations
        .iter()
        .flat_map(|(route, method)| not_exercised(&doc, &answers, route, method))
        .collect();
    missed.extend(not_exercised(&doc, &answers, "/healthz", "get"));
    missed.extend(not_exercised(&doc, &answers, "/readyz", "get"));
    assert!(
        missed.is_empty(),
        "answers the document promises that this test never saw: {missed:?}"
    );

    // And a document that drifted from the code would fail the check: a
    // renamed required field, a status the code gives but the document
    // does not list, a property the code does not send, a property the
    // code sends but the document does not describe.
    let mut renamed = doc.clone();
    let required = renamed["components"]["schemas"]["Job"]["required"]
        .as_array_mut()
        .unwrap();
    let at = required.iter().position(|f| f == "attempts").unwrap();
    required[at] = json!("attempt_count");
    assert!(
        !disagreements(&renamed, &answers).is_empty(),
        "renamed field"
    );
    let mut unlisted = doc.clone();
    unlisted["paths"]["/api/v1/jobs/{id}"]["get"]["responses"]
        .as_object_mut()
        .unwrap()
        .remove("404");
    assert!(
        !disagreements(&unlisted, &answers).is_empty(),
        "unlisted 404"
    );
    let mut added = doc.clone();
    added["components"]["schemas"]["Stats"]["required"]
        .as_array_mut()
        .unwrap()
        .push(json!("by_provider"));
    assert!(
        !disagreements(&added, &answers).is_empty(),
        "field not sent"
    );
    let mut undescribed = doc.clone();
    undescribed["components"]["schemas"]["Job"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("media_id");
    assert!(
        !disagreements(&undescribed, &answers).is_empty(),
        "field not described"
    );
}

/// On S3 the media answer carries a presigned `url` (absent on a folder).
#[tokio::test(flavor = "multi_thread")]
async fn the_media_answer_on_s3_matches_the_openapi_document() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let doc = read_json("docs/openapi.json");
    let fake = FakeGreenApi::start().await;
    let daemon = Daemon::start_in_temp_dir(&config(
        &StoreUnderTest::garage(&garage),
        &accounts::green_api(&fake),
    ));
    let mut answers = Answers::default();
    let url = fake.add_file(CHAT, GOOD, bytes(3000, 2), "image/jpeg", "a.jpg");
    announce(&mut answers, &daemon, &fake, GOOD, &url).await;
    daemon
        .wait_for_job(&format!("green:{GOOD}"), "done", WAIT)
        .await;
    let media = "/api/v1/media";
    let (status, body) = answers
        .admin(&daemon, Method::GET, media, &admin_path(media, GOOD))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["objects"][0]["url"].is_string(), "{body}");
    let problems = disagreements(&doc, &answers);
    assert!(
        problems.is_empty(),
        "the daemon's answers do not match docs/openapi.json:\n{}",
        problems.join("\n")
    );
}
