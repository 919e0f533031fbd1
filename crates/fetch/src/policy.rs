/// Which hosts an account may download from (the first half of the SSRF
/// guard; the second half, on addresses, lives in the resolver).
///
/// Patterns are case-insensitive. `*.whatsapp.net` matches every subdomain
/// of `whatsapp.net` at any depth but not `whatsapp.net` itself (list it too
/// if wanted); any other pattern matches exactly. IP literals may be listed
/// as plain addresses (`127.0.0.1`, `::1` or `[::1]`). An empty policy allows
/// every host; the daemon always passes the account's list or the provider
/// defaults.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// Stored with its leading dot: `.whatsapp.net`.
    Subdomains(String),
}

impl HostPolicy {
    /// Builds a policy from host patterns.
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let patterns = patterns
            .into_iter()
            .filter_map(|p| {
                let p = normalize(&p.into());
                if p.is_empty() {
                    None
                } else if let Some(rest) = p.strip_prefix("*.") {
                    Some(Pattern::Subdomains(format!(".{rest}")))
                } else {
                    Some(Pattern::Exact(p))
                }
            })
            .collect();
        Self { patterns }
    }

    /// Whether `host` (a domain name or an IP literal) may be downloaded from.
    pub fn allows(&self, host: &str) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let host = normalize(host);
        if host.is_empty() {
            return false;
        }
        self.patterns.iter().any(|p| match p {
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
    fn empty_policy_allows_everything() {
        let p = HostPolicy::new(Vec::<String>::new());
        assert!(p.allows("anything.example"));
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
