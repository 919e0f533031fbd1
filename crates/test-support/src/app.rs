//! A fake of the user's app: the receiver of `[[notify]]` events.
//!
//! It records every POST it gets (the three Standard Webhooks headers and
//! the body) and answers each with the next status of its script, then 200
//! once the script is used up, so a test can make a target fail a given
//! number of times before it accepts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::http::{TestServer, read_body, text};

/// One request the app received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: String,
    /// `webhook-signature`.
    pub signature: String,
    /// `content-type`.
    pub content_type: String,
    /// The body, verbatim.
    pub body: Bytes,
    /// The status it was answered with.
    pub answered: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the event body is JSON")
    }
}

#[derive(Debug, Default)]
struct State {
    script: VecDeque<u16>,
    received: Vec<Received>,
}

/// A running fake app; stops when dropped.
#[derive(Debug)]
pub struct AppSink {
    server: TestServer,
    state: Arc<Mutex<State>>,
}

impl AppSink {
    /// Starts an app that answers its first requests with `script`'s
    /// statuses, in order, and every later one with 200.
    pub async fn start(script: &[u16]) -> AppSink {
        Self::start_on("127.0.0.1:0", script)
            .await
            .expect("bind the fake app on 127.0.0.1:0")
    }

    /// [`AppSink::start`] on `addr` (an app that comes up where a daemon
    /// was already told to send).
    pub async fn start_on(addr: &str, script: &[u16]) -> std::io::Result<AppSink> {
        let state = Arc::new(Mutex::new(State {
            script: script.iter().copied().collect(),
            received: Vec::new(),
        }));
        let shared = state.clone();
        let server = TestServer::start_on(addr, move |request| {
            let state = shared.clone();
            async move {
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let (id, timestamp, signature, content_type) = (
                    header("webhook-id"),
                    header("webhook-timestamp"),
                    header("webhook-signature"),
                    header("content-type"),
                );
                let body = read_body(request, 1 << 20).await.unwrap_or_default();
                let mut state = state.lock().expect("app state");
                let answered = state.script.pop_front().unwrap_or(200);
                state.received.push(Received {
                    id,
                    timestamp,
                    signature,
                    content_type,
                    body,
                    answered,
                });
                text(answered, "")
            }
        })
        .await?;
        Ok(AppSink { server, state })
    }

    /// Where to point a `[[notify]] url`.
    pub fn url(&self) -> String {
        format!("{}/hooks/media", self.server.base_url())
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("app state").received.clone()
    }

    /// Waits until `n` requests were received (panics after `within`).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let start = tokio::time::Instant::now();
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                start.elapsed() < within,
                "the app received {} of {n} requests within {within:?}: {received:?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
