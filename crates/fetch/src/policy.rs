/// Which hosts an account may download from (the first half of the SSRF
/// guard; the second half, on addresses, lives in the resolver).
///
/// Patterns are case-insensitive. `*.whatsapp.net` matches every subdomain
/// of `whatsapp.net` at any depth but not `whatsapp.net` itself (list it too
/// if wanted); any other pattern matches exactly. IP literals may be listed
/// as plain addresses (`127.0.0.1`, `::1` or `[::1]`).
///
/// The policy fails closed: an empty policy allows no host, and a pattern
/// that names no host (`""`, `"."`, `"*."`) matches nothing. (It used to be
/// dropped, and a list of only such entries read as "no list, allow every
/// host", so `allowed_download_hosts = [""]` switched the guard off.)
/// Config validation refuses such patterns up front with
/// [`HostPolicy::check_pattern`].
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    patterns: Vec<Pattern>,
    /// The host of the account's own gateway API (normalized), set by
    /// [`HostPolicy::with_gateway_api`]: allowed, and its addresses not
    /// checked.
    gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// Stored with its leading dot: `.whatsapp.net`.
    Subdomains(String),
}

impl HostPolicy {
    /// Builds a policy from host patterns. Patterns that name no host are
    /// left out, and never widen the policy.
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let patterns = patterns
            .into_iter()
            .filter_map(|p| {
                let p = p.into();
                Self::check_pattern(&p).ok()?;
                let p = normalize(&p);
                Some(match p.strip_prefix("*.") {
                    Some(rest) => Pattern::Subdomains(format!(".{rest}")),
                    None => Pattern::Exact(p),
                })
            })
            .collect();
        Self {
            patterns,
            gateway: None,
        }
    }

    /// Exactly the host of `api_url` ([`HostPolicy::with_gateway_api`]),
    /// for a file the self-hosted gateway's API serves itself.
    pub fn gateway_api(api_url: &url::Url) -> Self {
        Self::default().with_gateway_api(api_url)
    }

    /// This policy, and also the host of `api_url`: the self-hosted
    /// gateway's API that the operator wrote into the account's config
    /// (WAHA, Evolution, CodeChat, On-Premises), whose files the account
    /// downloads. The address half of the guard (no private, loopback or
    /// link-local addresses) is there against URLs that arrive in webhooks;
    /// this host was chosen by the operator, not by a webhook, and usually
    /// sits on the operator's own network, where the gateway's other API
    /// calls already reach it. So the addresses of this one host are not
    /// checked, whatever `fetch.allow_private_networks` says; every other
    /// host, the policy's own patterns and a redirect's included, keeps
    /// the whole guard. The exemption is per account: each account's
    /// policy names its own `api_url`.
    pub fn with_gateway_api(self, api_url: &url::Url) -> Self {
        Self {
            gateway: api_url.host_str().map(normalize).filter(|h| !h.is_empty()),
            ..self
        }
    }

    /// Whether `host`'s addresses skip the private-network check (see
    /// [`HostPolicy::with_gateway_api`]).
    pub(crate) fn trusts_addresses_of(&self, host: &str) -> bool {
        self.gateway
            .as_deref()
            .is_some_and(|gateway| gateway == normalize(host))
    }

    /// Whether `pattern` names a host: a domain name or IP literal, or
    /// `*.` followed by one. The error says what is wrong, for a config
    /// error that names the key.
    pub fn check_pattern(pattern: &str) -> Result<(), &'static str> {
        let p = normalize(pattern);
        let host = p.strip_prefix("*.").unwrap_or(&p);
        if host.is_empty() || host.bytes().all(|b| b == b'.') {
            Err("names no host (write a host such as `media.example.com` or `*.example.com`)")
        } else if host.contains('*') {
            Err("may use `*` only as a leading `*.`")
        } else if host.starts_with('.') || host.contains("..") || host.contains(char::is_whitespace)
        {
            Err("is not a host name")
        } else {
            Ok(())
        }
    }

    /// Whether `host` (a domain name or an IP literal) may be downloaded from.
    pub fn allows(&self, host: &str) -> bool {
        let host = normalize(host);
        if host.is_empty() {
            return false;
        }
        self.trusts_addresses_of(&host)
            || self.patterns.iter().any(|p| match p {
                Pattern::Exact(h) => *h == host,
                Pattern::Subdomains(suffix) => {
                    host.len() > suffix.len() && host.ends_with(suffix.as_str())
                }
            })
    }
}

fn normalize(host: &str) -> String {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_subdomains_not_apex() {
        let p = HostPolicy::new(["*.whatsapp.net", "lookaside.fbsbx.com"]);
        assert!(p.allows("mmg.whatsapp.net"));
        assert!(p.allows("MMG.WhatsApp.NET"));
        assert!(p.allows("a.b.whatsapp.net"));
        assert!(p.allows("mmg.whatsapp.net."));
        assert!(!p.allows("whatsapp.net"));
        assert!(!p.allows("evilwhatsapp.net"));
        assert!(!p.allows("whatsapp.net.evil.com"));
        assert!(p.allows("lookaside.fbsbx.com"));
        assert!(!p.allows("x.lookaside.fbsbx.com"));
        assert!(!p.allows("fbsbx.com"));
        assert!(!p.allows(""));
    }

    #[test]
    fn a_gateway_api_policy_allows_its_host_only_and_trusts_only_it() {
        let api = url::Url::parse("http://evolution.internal:8080/base/").unwrap();
        let p = HostPolicy::gateway_api(&api);
        assert!(p.allows("evolution.internal"));
        assert!(p.trusts_addresses_of("evolution.internal"));
        assert!(!p.allows("mmg.whatsapp.net"));
        assert!(!p.trusts_addresses_of("mmg.whatsapp.net"));
        let listed = HostPolicy::new(["evolution.internal"]);
        assert!(!listed.trusts_addresses_of("evolution.internal"));
    }

    #[test]
    fn a_policy_with_the_gateway_api_trusts_that_host_only() {
        let api = url::Url::parse("http://WAHA.internal.:3000/").unwrap();
        let p = HostPolicy::new(["*.s3.example.com", "localhost"]).with_gateway_api(&api);
        assert!(p.allows("waha.internal") && p.trusts_addresses_of("waha.internal"));
        // The listed hosts stay allowed, and stay guarded.
        assert!(p.allows("bucket.s3.example.com") && p.allows("localhost"));
        assert!(!p.trusts_addresses_of("bucket.s3.example.com"));
        assert!(!p.trusts_addresses_of("localhost"));
        // Not a subdomain, a look-alike, or another account's gateway.
        for other in [
            "x.waha.internal",
            "waha.internal.evil",
            "waha",
            "127.0.0.1",
            "",
        ] {
            assert!(!p.trusts_addresses_of(other), "{other}");
        }
        let other_account = HostPolicy::new(["waha.internal"]);
        assert!(!other_account.trusts_addresses_of("waha.internal"));

        let ip = url::Url::parse("http://[::1]:3000/").unwrap();
        let p = HostPolicy::default().with_gateway_api(&ip);
        assert!(p.allows("::1") && p.trusts_addresses_of("[::1]"));
        assert!(!p.allows("127.0.0.1"));
    }

    #[test]
    fn an_empty_policy_allows_nothing() {
        let p = HostPolicy::new(Vec::<String>::new());
        assert!(!p.allows("anything.example"));
    }

    #[test]
    fn patterns_that_name_no_host_never_widen_the_policy() {
        for junk in [
            "",
            " ",
            ".",
            "..",
            "*.",
            "*..",
            "*",
            "*.*",
            ".example.com",
            "a..b",
        ] {
            assert!(HostPolicy::check_pattern(junk).is_err(), "{junk:?}");
            let p = HostPolicy::new([junk]);
            for host in ["anything.example", "127.0.0.1", "example.com"] {
                assert!(!p.allows(host), "{junk:?} allowed {host}");
            }
        }
        for good in [
            "*.whatsapp.net",
            "lookaside.fbsbx.com",
            "127.0.0.1",
            "[::1]",
            "Host.Example.",
        ] {
            assert_eq!(HostPolicy::check_pattern(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn ip_literals() {
        let p = HostPolicy::new(["127.0.0.1", "[::1]"]);
        assert!(p.allows("127.0.0.1"));
        assert!(p.allows("::1"));
        assert!(p.allows("[::1]"));
        assert!(!p.allows("127.0.0.2"));
    }
}
