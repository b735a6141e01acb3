//! Authentication-failure limiting: after `max` failed credentials from one client address within
//! a window, that address gets 429 for that kind of credential until the window ends, and its
//! credentials are not even checked meanwhile.
//!
//! Six kinds of credential are counted apart (peers, the admin secret, console sign-ins, reply
//! tokens, local agents' tokens, A2A tokens), so a peer's bad secrets never lock the operator's
//! CLI out on the same address, and a flood of bad reply tokens cannot block the peers. Memory is
//! bounded: past `CAPACITY` addresses, expired entries go first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client addresses tracked at once.
const CAPACITY: usize = 10_000;

/// Which kind of credential failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    /// A peer's secret or signature (and a request that names no credential at all).
    Peer,
    /// The admin secret as a bearer: the CLI and the admin API.
    Admin,
    /// A console sign-in, or a console session cookie.
    Console,
    /// A reply token on `/send`.
    Token,
    /// A local agent's token (`[agents.NAME]`) on `/send`.
    Agent,
    /// A peer's A2A bearer token on `/a2a`.
    A2a,
    /// A pairing code (`/pair/join`), or a pairing key (`/pair/confirm`, `/pair/cancel`).
    Pairing,
}

impl Credential {
    /// Its name in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Credential::Peer => "peer",
            Credential::Admin => "admin",
            Credential::Console => "console",
            Credential::Token => "reply_token",
            Credential::Agent => "agent_token",
            Credential::A2a => "a2a_token",
            Credential::Pairing => "pairing_code",
        }
    }
}

/// The settings in force (from the config snapshot, so a reload changes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures allowed in one window; 0 turns limiting off.
    pub max: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Instant,
    failures: u32,
}

/// Failure counts per (address, kind of credential).
#[derive(Debug)]
pub struct AuthLimiter {
    entries: Mutex<HashMap<(IpAddr, Credential), Entry>>,
    capacity: usize,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl AuthLimiter {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, Credential), Entry>> {
        // Plain counters: a panic mid-update cannot leave them unusable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(retry after)` while `ip` is limited for `kind`.
    pub fn check(
        &self,
        policy: Policy,
        ip: IpAddr,
        kind: Credential,
        now: Instant,
    ) -> Result<(), Duration> {
        if policy.max == 0 {
            return Ok(());
        }
        match self.lock().get(&(ip, kind)) {
            Some(e) if e.failures >= policy.max && now < e.since + policy.window => {
                Err(e.since + policy.window - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed credential from `ip`; `true` when this failure starts a lockout (once
    /// per address, kind and window, so the caller logs it once).
    pub fn failed(&self, policy: Policy, ip: IpAddr, kind: Credential, now: Instant) -> bool {
        if policy.max == 0 {
            return false;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&(ip, kind)) {
            entries.retain(|_, e| now < e.since + policy.window);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.since).map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
        let e = entries.entry((ip, kind)).or_insert(Entry {
            since: now,
            failures: 0,
        });
        if now >= e.since + policy.window {
            *e = Entry {
                since: now,
                failures: 0,
            };
        }
        e.failures += 1;
        e.failures == policy.max
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client's address: the socket's, or, when the socket's is a trusted proxy, the last address
/// in `X-Forwarded-For` that is not itself a trusted proxy (the one the nearest untrusted hop
/// connected from; addresses further left are whatever the client wrote).
pub fn client_ip(socket: IpAddr, forwarded_for: Option<&[u8]>, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&socket) {
        return socket;
    }
    let Some(header) = forwarded_for.and_then(|h| std::str::from_utf8(h).ok()) else {
        return socket;
    };
    let mut client = socket;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A hop we cannot read: stop at the last one we could.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        max: 3,
        window: Duration::from_secs(60),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn an_address_is_limited_after_max_failures_until_the_window_ends() {
        let l = AuthLimiter::default();
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for n in 1..=3 {
            assert_eq!(l.check(POLICY, a, Credential::Peer, t0), Ok(()));
            // The failure that starts the lockout says so, once.
            assert_eq!(l.failed(POLICY, a, Credential::Peer, t0), n == 3);
        }
        assert!(!l.failed(POLICY, a, Credential::Peer, t0));
        assert_eq!(
            l.check(POLICY, a, Credential::Peer, t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(50))
        );
        // The other kinds of credential and other addresses are not affected.
        for other in [
            Credential::Admin,
            Credential::Console,
            Credential::Token,
            Credential::Agent,
            Credential::A2a,
        ] {
            assert_eq!(l.check(POLICY, a, other, t0), Ok(()), "{}", other.name());
        }
        assert_eq!(
            l.check(POLICY, ip("10.0.0.2"), Credential::Peer, t0),
            Ok(())
        );
        // After the window, a fresh count.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.check(POLICY, a, Credential::Peer, later), Ok(()));
        l.failed(POLICY, a, Credential::Peer, later);
        assert_eq!(l.check(POLICY, a, Credential::Peer, later), Ok(()));
        // Off.
        let off = Policy { max: 0, ..POLICY };
        for _ in 0..10 {
            l.failed(off, ip("10.0.0.9"), Credential::Peer, t0);
        }
        assert_eq!(l.check(off, ip("10.0.0.9"), Credential::Peer, t0), Ok(()));
    }

    #[test]
    fn memory_stays_bounded() {
        let l = AuthLimiter::with_capacity(100);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(i));
            l.failed(
                POLICY,
                a,
                Credential::Peer,
                t0 + Duration::from_millis(i.into()),
            );
        }
        assert!(l.len() <= 100, "{}", l.len());
    }

    #[test]
    fn the_forwarded_address_counts_only_behind_a_trusted_proxy() {
        let proxies: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().expect("net")];
        let xff = Some(b"1.2.3.4, 10.9.9.9".as_slice());
        assert_eq!(client_ip(ip("127.0.0.1"), xff, &proxies), ip("10.9.9.9"));
        assert_eq!(client_ip(ip("127.0.0.1"), None, &proxies), ip("127.0.0.1"));
        assert_eq!(
            client_ip(ip("192.0.2.1"), xff, &proxies),
            ip("192.0.2.1"),
            "untrusted socket"
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), xff, &[]),
            ip("127.0.0.1"),
            "no proxies trusted"
        );
        let chain: Vec<ipnet::IpNet> = vec![
            "127.0.0.1/32".parse().expect("net"),
            "10.0.0.0/8".parse().expect("net"),
        ];
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some(b"1.2.3.4, 10.1.1.1"), &chain),
            ip("1.2.3.4"),
            "both proxies trusted: the client before them"
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some(b"junk, 10.1.1.1"), &chain),
            ip("10.1.1.1")
        );
    }
}
