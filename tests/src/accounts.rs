//! One `[[accounts]]` snippet per provider, pointed at its fake from
//! `test-support`: the one place to adjust when account settings change.
//!
//! Each account has a fixed name (`green`, `cc`, `evo`, `onprem`, `cloud`,
//! `nx`, `waha`: job ids and archive keys start with it) and the webhook credential
//! below that tests post with. A snippet ends inside its account's table,
//! so a caller may append keys to it (`mode = "provider"`).

use test_support::codechat::FakeCodeChat;
use test_support::evolution::FakeEvolution;
use test_support::green_api::FakeGreenApi;
use test_support::meta::{FakeCloudApi, FakeOnPrem};
use test_support::nxcloud::{BUSINESS_PHONE, FakeNxcloud};
use test_support::waha::FakeWaha;
use test_support::whatsapp_cdn::FakeWhatsappCdn;

/// The bearer token Green API posts webhooks with (account `green`).
pub const GREEN_WEBHOOK_TOKEN: &str = "e2e-green-webhook-token";
/// The bearer token CodeChat posts webhooks with (account `cc`).
pub const CODECHAT_WEBHOOK_TOKEN: &str = "e2e-codechat-webhook-token";
/// The key of the HS256 JWT Evolution API signs webhooks with (account `evo`).
pub const EVOLUTION_JWT_SECRET: &str = "e2e-evolution-jwt-secret";
/// The token the On-Premises client puts in the webhook URL (account `onprem`).
pub const ONPREM_WEBHOOK_TOKEN: &str = "e2e-onprem-webhook-token";
/// The token of the Cloud API's subscription check (account `cloud`).
pub const CLOUD_VERIFY_TOKEN: &str = "e2e-cloud-verify-token";

/// Account `green` on the fake Green API.
pub fn green_api(fake: &FakeGreenApi) -> String {
    green_api_at(&fake.base_url(), fake.id_instance(), fake.api_token())
}

/// Account `green` on a Green API at `api_url` (a bench's own file host,
/// or an address where nothing answers).
pub fn green_api_at(api_url: &str, id_instance: &str, api_token: &str) -> String {
    table(
        "green",
        "greenapi",
        &[
            ("api_url", api_url),
            ("id_instance", id_instance),
            ("api_token", api_token),
            ("webhook_token", GREEN_WEBHOOK_TOKEN),
        ],
    ) + LOCAL_DOWNLOADS
}

/// Account `cc` on the fake CodeChat, downloading from the fake CDN.
pub fn codechat(fake: &FakeCodeChat, cdn: &FakeWhatsappCdn) -> String {
    table(
        "cc",
        "codechat",
        &[
            ("api_url", &fake.base_url()),
            ("instance_id", "7"),
            ("api_token", fake.api_token()),
            ("webhook_token", CODECHAT_WEBHOOK_TOKEN),
            ("cdn_url", &cdn.base_url()),
        ],
    ) + LOCAL_DOWNLOADS
}

/// Account `evo` on the fake Evolution API, downloading from the fake CDN.
pub fn evolution(fake: &FakeEvolution, cdn: &FakeWhatsappCdn) -> String {
    table(
        "evo",
        "evolution",
        &[
            ("api_url", &fake.base_url()),
            ("instance", fake.instance()),
            ("api_key", fake.api_key()),
            ("webhook_jwt_secret", EVOLUTION_JWT_SECRET),
            ("cdn_url", &cdn.base_url()),
        ],
    ) + LOCAL_DOWNLOADS
}

/// Account `onprem` on the fake On-Premises client, waiting at most
/// `store_callback_timeout` (e.g. `"10m"`) for a store callback.
pub fn onprem(fake: &FakeOnPrem, store_callback_timeout: &str) -> String {
    table(
        "onprem",
        "onprem",
        &[
            ("api_url", &fake.base_url()),
            ("username", fake.username()),
            ("password", fake.password()),
            ("webhook_token", ONPREM_WEBHOOK_TOKEN),
            ("store_callback_timeout", store_callback_timeout),
        ],
    )
}

/// The URL the On-Premises client must post webhooks and store callbacks
/// to (its `webhooks.url`) for a daemon at `base_url`: the token in the
/// query, as the README says.
pub fn onprem_webhook_url(base_url: &str) -> String {
    format!("{base_url}/webhooks/onprem?token={ONPREM_WEBHOOK_TOKEN}")
}

/// Account `cloud` on the fake Cloud API.
pub fn cloud_api(fake: &FakeCloudApi) -> String {
    cloud_api_at(&fake.graph_url(), fake.access_token(), fake.app_secret())
}

/// Account `cloud` on a Graph API at `graph_url`.
pub fn cloud_api_at(graph_url: &str, access_token: &str, app_secret: &str) -> String {
    table(
        "cloud",
        "cloudapi",
        &[
            ("graph_url", graph_url),
            ("access_token", access_token),
            ("app_secret", app_secret),
            ("verify_token", CLOUD_VERIFY_TOKEN),
        ],
    ) + LOCAL_DOWNLOADS
}

/// Account `nx` on the fake NXCloud, signing its API calls with
/// `access_secret` (the fake's, or a wrong one).
pub fn nxcloud(fake: &FakeNxcloud, access_secret: &str) -> String {
    table(
        "nx",
        "nxcloud",
        &[
            ("api_url", &fake.base_url()),
            ("access_key", fake.access_key()),
            ("access_secret", access_secret),
            ("business_phone", &format!("+{BUSINESS_PHONE}")),
        ],
    ) + LOCAL_DOWNLOADS
}

/// Account `waha` on the fake WAHA, webhooks signed with `hmac_key` (the
/// fake's, or a wrong one). No download hosts: the fake is the account's
/// own gateway (`api_url`), reached on 127.0.0.1 without
/// `allow_private_networks`.
pub fn waha(fake: &FakeWaha) -> String {
    table(
        "waha",
        "waha",
        &[
            ("api_url", &fake.base_url()),
            ("session", test_support::waha::SESSION),
            ("api_key", fake.api_key()),
            ("webhook_hmac_key", fake.hmac_key()),
        ],
    )
}

/// Downloads from the fakes, which listen on 127.0.0.1.
const LOCAL_DOWNLOADS: &str = "allowed_download_hosts = [\"127.0.0.1\"]\n";

/// An `[[accounts]]` table: its name, its provider, and string keys.
fn table(name: &str, provider: &str, keys: &[(&str, &str)]) -> String {
    let mut out = format!("\n[[accounts]]\nname = \"{name}\"\nprovider = \"{provider}\"\n");
    for (key, value) in keys {
        out.push_str(&format!("{key} = \"{value}\"\n"));
    }
    out
}
