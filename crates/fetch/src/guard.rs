//! The address half of the SSRF guard: which IP addresses a download may
//! connect to, and a DNS resolver that refuses names resolving to others.
//!
//! Checking the addresses the resolver hands to the connector (rather than
//! resolving once to check and letting the client resolve again) leaves no
//! DNS-rebinding window: what was checked is what is connected to. IP-literal
//! hosts bypass resolvers, so the fetcher checks those directly with
//! [`forbidden_reason`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a download may not connect to `ip`, or `None` if it may.
pub(crate) fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("cloud metadata")
    } else if o[0] == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("carrier-grade NAT")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if o[0] >= 240 {
        Some("reserved or broadcast")
    } else if (o[0], o[1], o[2]) == (192, 0, 0) || (o[0] == 198 && (o[1] & 0xfe) == 18) {
        Some("reserved")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("cloud metadata")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("unique-local")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some("site-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if s[..6] == [0; 6] || (s[0], s[1], s[2], s[3], s[4], s[5]) == (0x64, 0xff9b, 0, 0, 0, 0)
    {
        // IPv4-compatible (deprecated) and NAT64 (64:ff9b::/96): judge the
        // embedded IPv4 address.
        v4_reason(embedded_v4(s[6], s[7]))
    } else if s[0] == 0x2002 {
        // 6to4 carries an IPv4 address in bits 16..48.
        v4_reason(embedded_v4(s[1], s[2]))
    } else {
        None
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// A name resolved to an address downloads may not connect to. Travels
/// through reqwest's error chain and is turned back into
/// `FetchError::Blocked` by the fetcher.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {addr}, a {reason} address")]
pub(crate) struct BlockedAddress {
    pub(crate) host: String,
    pub(crate) addr: IpAddr,
    pub(crate) reason: &'static str,
}

/// The system resolver, with every answer checked by [`forbidden_reason`].
/// If any address of a name is forbidden the whole name is refused: a public
/// name with a private address among its answers is not a configuration to
/// trust.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub(crate) allow_private_networks: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private_networks;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                for a in &addrs {
                    if let Some(reason) = forbidden_reason(a.ip()) {
                        return Err(Box::new(BlockedAddress {
                            host,
                            addr: a.ip(),
                            reason,
                        }) as _);
                    }
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> Option<&'static str> {
        forbidden_reason(s.parse().unwrap())
    }

    #[test]
    fn blocks_special_ipv4() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved or broadcast"),
        ] {
            assert_eq!(reason(ip), Some(why), "{ip}");
        }
    }

    #[test]
    fn allows_public_ipv4() {
        for ip in [
            "8.8.8.8",
            "157.240.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "100.63.255.255",
            "51.250.1.1",
        ] {
            assert_eq!(reason(ip), None, "{ip}");
        }
    }

    #[test]
    fn blocks_special_ipv6() {
        for (ip, why) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fd12:3456::1", "unique-local"),
            ("fc00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("64:ff9b::a00:1", "private"),
            ("2002:c0a8:0101::1", "private"),
        ] {
            assert_eq!(reason(ip), Some(why), "{ip}");
        }
        assert_eq!(reason("2a03:2880:f12f:83:face:b00c::25de"), None);
        assert_eq!(reason("::ffff:8.8.8.8"), None);
    }
}
