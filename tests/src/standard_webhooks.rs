//! Checking a delivery with the Standard Webhooks reference library (the
//! `standardwebhooks` package from PyPI, run by `python3`), so that what
//! the daemon signs is known to verify in a consumer's library, not only in
//! ours.
//!
//! Where python3 or the package is missing, [`verify`] prints a notice and
//! returns `None` (the caller still checks the signature with our own
//! code), unless `MEDIA_ARCHIVER_REQUIRE_STANDARDWEBHOOKS=1` (CI, which
//! installs the package), where it panics.

use std::io::Write as _;
use std::process::{Command, Stdio};

use test_support::app::Received;

// The body is read first, so that Python never exits before taking it.
const SCRIPT: &str = r#"
import os, sys
body = sys.stdin.buffer.read()
try:
    from standardwebhooks.webhooks import Webhook
except ImportError:
    sys.exit(3)
headers = {
    "webhook-id": os.environ["SW_ID"],
    "webhook-timestamp": os.environ["SW_TIMESTAMP"],
    "webhook-signature": os.environ["SW_SIGNATURE"],
}
Webhook(os.environ["SW_SECRET"]).verify(body, headers)
"#;

fn required() -> bool {
    std::env::var("MEDIA_ARCHIVER_REQUIRE_STANDARDWEBHOOKS").is_ok_and(|v| v == "1")
}

fn unavailable(why: &str) -> Option<bool> {
    assert!(
        !required(),
        "MEDIA_ARCHIVER_REQUIRE_STANDARDWEBHOOKS=1 but {why} (pip install standardwebhooks)"
    );
    eprintln!("notice: not checked with the Standard Webhooks reference library: {why}");
    None
}

/// Whether the reference library accepts `received` as signed with
/// `secret`; `None` when the library is not installed here (and not
/// required).
pub fn verify(secret: &str, received: &Received) -> Option<bool> {
    let child = Command::new("python3")
        .args(["-c", SCRIPT])
        .env("SW_SECRET", secret)
        .env("SW_ID", &received.id)
        .env("SW_TIMESTAMP", &received.timestamp)
        .env("SW_SIGNATURE", &received.signature)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return unavailable(&format!("python3 cannot run: {e}")),
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(&received.body)
        .expect("write the body to python3");
    let output = child.wait_with_output().expect("python3 finishes");
    match output.status.code() {
        Some(0) => Some(true),
        Some(3) => unavailable("the standardwebhooks package is not installed"),
        _ => {
            eprintln!(
                "the reference library refused the delivery: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Some(false)
        }
    }
}
