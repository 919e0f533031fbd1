//! The demo provider for `config/dev.toml`: a fake Green API on
//! 127.0.0.1:9090 (instance 1101000001, token `dev-api-token`) holding one
//! image, and a ready webhook announcing it in `data/demo-webhook.json`.
//!
//! ```text
//! cargo run --release -p test-support --bin fake-green-api [-- --listen 127.0.0.1:9090]
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use test_support::green_api::FakeGreenApi;

/// A 1x1 PNG, so the archived demo file opens in an image viewer.
const DEMO_PNG: [u8; 67] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9090".to_owned();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr,
            _ => {
                eprintln!("usage: fake-green-api [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    let fake = match FakeGreenApi::start_on(&listen, "dev-api-token").await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let chat = "79001234568@c.us";
    let id = "DEMO0000000000000000000000000001";
    let url = fake.add_file(chat, id, DEMO_PNG.to_vec(), "image/png", "demo.png");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let webhook = fake.file_webhook(
        "incomingMessageReceived",
        "imageMessage",
        chat,
        id,
        &url,
        now,
    );
    let path = std::path::Path::new("data/demo-webhook.json");
    if let Err(e) =
        std::fs::create_dir_all("data").and_then(|()| std::fs::write(path, webhook.to_string()))
    {
        eprintln!("cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
    println!(
        "fake Green API on {} (instance {}, token dev-api-token)",
        fake.base_url(),
        fake.id_instance()
    );
    println!("demo file: {url}");
    println!("webhook announcing it: {}", path.display());
    println!("post it with:");
    println!(
        "  curl -s -X POST http://127.0.0.1:8080/webhooks/green-dev -H 'Authorization: Bearer dev-webhook-token' -H 'Content-Type: application/json' --data @data/demo-webhook.json"
    );
    println!("Ctrl-C to stop");
    let _ = tokio::signal::ctrl_c().await;
}
