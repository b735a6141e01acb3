//! Which addresses a URL that a client supplied (an A2A push URL) may reach: the rules, with no
//! I/O. Public addresses only, unless the config allows private ones; the inbox's `ssrf` checks a
//! name by resolving it, and enforces the rule where the connection is made.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a public unicast address: not loopback, link-local, private (RFC 1918),
/// unique-local (fc00::/7), shared (100.64/10), unspecified, multicast, broadcast, documentation
/// or reserved. An IPv6 address that carries an IPv4 one (see [`embedded_v4`]) is public only if
/// every IPv4 address it carries is: a packet to it ends at that address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // The local-use NAT64 prefix (RFC 8215) may embed its IPv4 address at any of several
            // offsets, and is never routed on the internet anyway.
            if s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001 {
                return false;
            }
            if let Some(carried) = embedded_v4(v6) {
                return carried.iter().all(|v4| v4_is_public(*v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0064 && s[1] == 0xff9b)
                || s[0] == 0x0100)
        }
    }
}

fn v4_is_public(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240)
}

/// The IPv4 addresses an IPv6 address carries, by every form that embeds one: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-compatible (`::/96`, deprecated but still routed to the IPv4 address by
/// some stacks), 6to4 (`2002::/16`, the address in bits 16-47), NAT64's well-known prefix
/// (`64:ff9b::/96`, the last 32 bits) and Teredo (`2001::/32`: its server in bits 32-63, and its
/// client, inverted, in the last 32). `None` for an address that carries none.
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Vec<Ipv4Addr>> {
    let s = v6.segments();
    let o = v6.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(vec![v4]);
    }
    if s[..6].iter().all(|x| *x == 0) {
        // `::` and `::1` fall here too, as 0.0.0.0 and 0.0.0.1: neither is public.
        return Some(vec![last]);
    }
    if s[0] == 0x2002 {
        return Some(vec![Ipv4Addr::new(o[2], o[3], o[4], o[5])]);
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
        return Some(vec![last]);
    }
    if s[0] == 0x2001 && s[1] == 0 {
        let client = Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]);
        return Some(vec![Ipv4Addr::new(o[4], o[5], o[6], o[7]), client]);
    }
    None
}

/// Why a URL may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an absolute http(s) URL.
    #[error("{0:?} is not an http(s) URL")]
    NotHttp(String),
    /// It names, or resolves only to, addresses that are not public.
    #[error(
        "{0} is not a public address (loopback, link-local, private and unique-local ones are refused)"
    )]
    NotPublic(String),
    /// Its name does not resolve.
    #[error("cannot resolve {0}")]
    Unresolved(String),
}

/// What a URL's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP literal (`[...]` taken off an IPv6 one).
    Address(IpAddr),
    /// A name, to resolve.
    Name(String),
}

/// The syntax half of the inbox's `check_url`, with no I/O: an absolute http(s) URL with a host, and what
/// that host is.
pub fn parse_url(url: &str) -> Result<(http::Uri, Target), UrlError> {
    let uri: http::Uri = url.parse().map_err(|_| UrlError::NotHttp(url.into()))?;
    let (Some("http" | "https"), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(UrlError::NotHttp(url.into()));
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let target = match bare.parse::<IpAddr>() {
        Ok(ip) => Target::Address(ip),
        Err(_) => Target::Name(bare.to_owned()),
    };
    Ok((uri, target))
}

/// Whether a URL's host is an IP literal that is not public (a connector that resolves names
/// never sees literals).
pub fn literal_not_public(uri: &http::Uri) -> bool {
    uri.host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .is_some_and(|ip| !is_public(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn ipv6_forms_that_carry_a_private_ipv4_address_are_not_public() {
        // Each form, carrying 127.0.0.1 (or 10.0.0.1), then 8.8.8.8.
        for (private, public) in [
            // IPv4-mapped
            ("::ffff:7f00:1", "::ffff:808:808"),
            // IPv4-compatible (::/96)
            ("::127.0.0.1", "::8.8.8.8"),
            ("::a00:1", "::808:808"),
            // 6to4 (2002::/16): the IPv4 address in bits 16-47
            ("2002:7f00:1::", "2002:808:808::1"),
            ("2002:a00:1:1::5", "2002:808:808:1::5"),
            // NAT64, well-known prefix (64:ff9b::/96)
            ("64:ff9b::7f00:1", "64:ff9b::808:808"),
            // Teredo (2001::/32): server 8.8.8.8 in bits 32-63, client inverted in the last 32
            ("2001:0:808:808::80ff:fffe", "2001:0:808:808::f7f7:f7f7"),
        ] {
            let p: Ipv6Addr = private.parse().unwrap();
            let q: Ipv6Addr = public.parse().unwrap();
            assert!(embedded_v4(p).is_some(), "{private} carries IPv4");
            assert!(!is_public(IpAddr::V6(p)), "{private}");
            assert!(is_public(IpAddr::V6(q)), "{public}");
        }
        // A Teredo address whose server is private is refused whatever its client.
        assert!(!is_public("2001:0:a00:1::f7f7:f7f7".parse().unwrap()));
        // The local-use NAT64 prefix is never public, whatever it embeds.
        assert!(!is_public("64:ff9b:1::808:808".parse().unwrap()));
        assert!(!is_public("64:ff9b:1:7f00:1::".parse().unwrap()));
        // An address that embeds nothing is judged as itself.
        assert_eq!(embedded_v4("2606:4700:4700::1111".parse().unwrap()), None);
    }
}
