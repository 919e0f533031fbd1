use url::Url;

/// A URL as it may appear in a log line or an error: `scheme://host[:port]/path`.
///
/// The query (signed URLs carry their signature there), the fragment and any
/// user info are dropped. Green API puts its instance token in the path
/// (`/waInstance{id}/{method}/{token}`), so the segment after a
/// `waInstance…/<method>/` prefix is replaced with `***`.
pub fn redact_url(url: &Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    if url.cannot_be_a_base() {
        // e.g. `data:` or `mailto:`: the "path" is the payload.
        return format!("{}:…", url.scheme());
    }
    let mut segments: Vec<&str> = url.path().split('/').skip(1).collect();
    if let Some(i) = segments.iter().position(|s| {
        s.len() >= "waInstance".len() && s[.."waInstance".len()].eq_ignore_ascii_case("waInstance")
    }) && let Some(token) = segments.get_mut(i + 2)
    {
        *token = "***";
    }
    for segment in segments {
        out.push('/');
        out.push_str(segment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact_url(&Url::parse(s).unwrap())
    }

    #[test]
    fn drops_query_fragment_and_credentials() {
        assert_eq!(
            r("https://user:pw@bucket.aliyuncs.com:8443/a/b.jpg?Signature=abc&Expires=1#x"),
            "https://bucket.aliyuncs.com:8443/a/b.jpg"
        );
        assert_eq!(
            r("https://mmg.whatsapp.net/v/t62/x.enc?oh=1&oe=2"),
            "https://mmg.whatsapp.net/v/t62/x.enc"
        );
    }

    #[test]
    fn masks_green_api_token_in_path() {
        assert_eq!(
            r(
                "https://1101.api.green-api.com/waInstance1101000001/downloadFile/d75b3a66374942c5b3c019c698abc2067e151558acbd412345"
            ),
            "https://1101.api.green-api.com/waInstance1101000001/downloadFile/***"
        );
        assert_eq!(
            r("https://api.green-api.com/v3/waInstance1101/getMessage/secret-token"),
            "https://api.green-api.com/v3/waInstance1101/getMessage/***"
        );
        // Nothing to mask when the token segment is absent.
        assert_eq!(
            r("http://127.0.0.1:9/waInstance1/getMessage"),
            "http://127.0.0.1:9/waInstance1/getMessage"
        );
    }

    #[test]
    fn keeps_ordinary_paths() {
        assert_eq!(
            r("https://sw-media.storage.yandexcloud.net/1103912412/a6679d42.png"),
            "https://sw-media.storage.yandexcloud.net/1103912412/a6679d42.png"
        );
        assert_eq!(r("data:text/plain,secret"), "data:…");
    }
}
