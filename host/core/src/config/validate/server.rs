//! `[server]` and `[relay]`.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Checker, parse_duration, schema, secs};
use crate::config::defaults::*;
use crate::config::{ConfigError, Postgres, Relay, Secret, Server, SslMode, StoreConfig, Tls};
use crate::model::Synchronous;

pub(super) fn server(c: &mut Checker<'_>, s: &schema::Server) -> Server {
    let listen_text = s.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        c.invalid(
            "server.listen",
            format!("{listen_text:?} is not an address such as \"127.0.0.1:8700\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 8700))
    });
    let public_url = s
        .public_url
        .as_ref()
        .map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &public_url {
        match u.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
            _ => c.invalid("server.public_url", format!("{u:?} is not an http(s) URL")),
        }
    }
    let synchronous = match s.synchronous.as_deref().map(str::parse::<Synchronous>) {
        None => Synchronous::Full,
        Some(Ok(Synchronous::Off)) => {
            c.warnings.push(
                "server.synchronous = \"off\": acked messages can be lost on a crash; benchmarks only".into(),
            );
            Synchronous::Off
        }
        Some(Ok(mode)) => mode,
        Some(Err(e)) => {
            c.invalid(
                "server.synchronous",
                format!("{:?} is not \"full\", \"normal\" or \"off\"", e.value),
            );
            Synchronous::Full
        }
    };
    let max_json_depth = c.positive(
        "server.max_json_depth",
        s.max_json_depth,
        DEFAULT_MAX_JSON_DEPTH,
    );
    if max_json_depth > MAX_JSON_DEPTH {
        c.invalid(
            "server.max_json_depth",
            format!("at most {MAX_JSON_DEPTH}: deeper payloads cannot be read back"),
        );
    }
    let tls = tls(c, s, public_url.as_deref());
    let retention_days = c.positive(
        "server.retention_days",
        s.retention_days,
        DEFAULT_RETENTION_DAYS,
    );
    Server {
        listen,
        public_url,
        max_body_bytes: c.positive(
            "server.max_body_bytes",
            s.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
        ) as usize,
        max_json_depth,
        admin_secrets: c.secrets(
            "server.admin_secret",
            s.admin_secret_env.as_ref(),
            s.admin_secret_file.as_ref(),
            s.admin_secret.as_ref(),
        ),
        signature_tolerance: secs(s.signature_tolerance_secs, DEFAULT_SIGNATURE_TOLERANCE),
        auth_failure_limit: s.auth_failure_limit.unwrap_or(DEFAULT_AUTH_FAILURE_LIMIT),
        auth_failure_window: Duration::from_secs(c.positive(
            "server.auth_failure_window_secs",
            s.auth_failure_window_secs,
            DEFAULT_AUTH_FAILURE_WINDOW.as_secs(),
        )),
        trusted_proxies: trusted_proxies(c, s.trusted_proxies.as_deref().unwrap_or_default()),
        max_hops: c.positive("server.max_hops", s.max_hops, DEFAULT_MAX_HOPS),
        data_dir: c
            .base_dir
            .join(s.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)),
        reply_grace: secs(s.reply_grace_secs, DEFAULT_REPLY_GRACE),
        max_connections: c.positive(
            "server.max_connections",
            s.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        ),
        max_connections_per_ip: s
            .max_connections_per_ip
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP),
        synchronous,
        drain: secs(s.drain_secs, DEFAULT_DRAIN),
        dedup_window: secs(s.dedup_window_secs, DEFAULT_DEDUP_WINDOW),
        retention: Duration::from_secs(24 * 3600 * retention_days),
        tls,
        host_id: host_id(c, s, listen),
    }
}

/// `host_id`, else the machine's name and the port: stable across restarts, and two inboxes on
/// one machine differ by port.
fn host_id(c: &mut Checker<'_>, s: &schema::Server, listen: SocketAddr) -> String {
    match &s.host_id {
        Some(id) if id.is_empty() || id.contains('/') || id.len() > 100 => {
            c.invalid(
                "server.host_id",
                "1 to 100 characters, without '/' (it is followed by a start id in leases)",
            );
            id.clone()
        }
        Some(id) => id.clone(),
        None => {
            let name = nix::unistd::gethostname()
                .ok()
                .and_then(|n| n.into_string().ok())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{name}:{}", listen.port())
        }
    }
}

/// `[store]`: SQLite (the default; its keys may also stay in `[server]`) or PostgreSQL. Its
/// `data_dir` and `synchronous`, when given, set the server's.
pub(super) fn store(c: &mut Checker<'_>, s: &schema::Store, server: &mut Server) -> StoreConfig {
    let kind = s.kind.as_deref().unwrap_or("sqlite");
    let pg_keys = [
        ("url_env", s.url_env.is_some()),
        ("url_file", s.url_file.is_some()),
        ("url", s.url.is_some()),
        ("pool_size", s.pool_size.is_some()),
        ("sslmode", s.sslmode.is_some()),
        ("ca_file", s.ca_file.is_some()),
        ("schema", s.schema.is_some()),
        ("lease_secs", s.lease_secs.is_some()),
        ("renew_secs", s.renew_secs.is_some()),
    ];
    match kind {
        "sqlite" => {
            for (key, set) in pg_keys {
                if set {
                    c.invalid(format!("store.{key}"), "only for kind = \"postgres\"");
                }
            }
            if let Some(d) = &s.data_dir {
                server.data_dir = c.base_dir.join(d);
            }
            if let Some(mode) = &s.synchronous {
                match mode.parse::<Synchronous>() {
                    Ok(m) => server.synchronous = m,
                    Err(e) => c.invalid(
                        "store.synchronous",
                        format!("{:?} is not \"full\", \"normal\" or \"off\"", e.value),
                    ),
                }
            }
            StoreConfig::Sqlite
        }
        "postgres" => {
            for (key, set) in [
                ("data_dir", s.data_dir.is_some()),
                ("synchronous", s.synchronous.is_some()),
            ] {
                if set {
                    c.invalid(format!("store.{key}"), "only for kind = \"sqlite\"");
                }
            }
            let one = |v: &Option<String>| v.clone().map(schema::OneOrMany::One);
            let (env, file, literal) = (one(&s.url_env), one(&s.url_file), one(&s.url));
            if env.is_none() && file.is_none() && literal.is_none() {
                c.invalid(
                    "store.url_env",
                    "kind = \"postgres\" needs url_env or url_file (or url)",
                );
            }
            let url = c
                .secrets("store.url", env.as_ref(), file.as_ref(), literal.as_ref())
                .first()
                .map(|u| u.expose().to_owned());
            let sslmode = match s.sslmode.as_deref() {
                None | Some("disable") => SslMode::Disable,
                Some("require") => SslMode::Require,
                Some("verify-full") => SslMode::VerifyFull,
                Some(other) => {
                    c.invalid(
                        "store.sslmode",
                        format!("{other:?} is not \"disable\", \"require\" or \"verify-full\""),
                    );
                    SslMode::Disable
                }
            };
            let ca_file = s.ca_file.as_deref().map(|p| c.base_dir.join(p));
            if ca_file.is_some() && sslmode != SslMode::VerifyFull {
                c.invalid("store.ca_file", "only with sslmode = \"verify-full\"");
            }
            if s.schema.as_ref().is_some_and(|n| {
                !(1..=63).contains(&n.len())
                    || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }) {
                c.invalid("store.schema", "letters, digits and '_', at most 63");
            }
            let lease = Duration::from_secs(c.positive(
                "store.lease_secs",
                s.lease_secs,
                DEFAULT_LEASE.as_secs(),
            ));
            let renew = Duration::from_secs(c.positive(
                "store.renew_secs",
                s.renew_secs,
                DEFAULT_LEASE_RENEWAL.as_secs(),
            ));
            if renew * 2 > lease {
                c.invalid(
                    "store.renew_secs",
                    "at most half of lease_secs, so one late renewal does not lose the lease",
                );
            }
            StoreConfig::Postgres(Postgres {
                url: Secret::new(url.unwrap_or_default()),
                pool_size: c.positive("store.pool_size", s.pool_size, DEFAULT_POOL_SIZE),
                sslmode,
                ca_file,
                schema: s.schema.clone(),
                lease,
                renew,
            })
        }
        other => {
            c.invalid(
                "store.kind",
                format!("{other:?} is not \"sqlite\" or \"postgres\""),
            );
            StoreConfig::Sqlite
        }
    }
}

/// `tls_cert` and `tls_key` together, or neither; `tls_ca` only with them.
fn tls(c: &mut Checker<'_>, s: &schema::Server, public_url: Option<&str>) -> Option<Tls> {
    let path = |p: &Option<String>| p.as_deref().map(|p| c.base_dir.join(p));
    let (cert, key, ca) = (path(&s.tls_cert), path(&s.tls_key), path(&s.tls_ca));
    match (cert, key) {
        (Some(cert), Some(key)) => {
            if let Some(u) = public_url
                && !u.starts_with("https://")
            {
                c.invalid(
                    "server.public_url",
                    format!("{u:?}: the inbox serves TLS (tls_cert), so agents must reach it at https://"),
                );
            }
            Some(Tls { cert, key, ca })
        }
        (None, None) => {
            if ca.is_some() {
                c.invalid("server.tls_ca", "needs tls_cert and tls_key");
            }
            None
        }
        _ => {
            c.invalid("server.tls_cert", "tls_cert and tls_key go together");
            None
        }
    }
}

pub(super) fn relay(c: &mut Checker<'_>, r: &schema::Relay) -> Relay {
    let schedule_text: Vec<String> = r.retry_schedule.clone().unwrap_or_else(|| {
        DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    if schedule_text.is_empty() {
        c.errors.push(ConfigError::Empty {
            at: "relay.retry_schedule".into(),
        });
    }
    let mut retry_schedule = Vec::new();
    for (i, t) in schedule_text.iter().enumerate() {
        match parse_duration(t) {
            Ok(d) => retry_schedule.push(d),
            Err(e) => c.invalid(format!("relay.retry_schedule[{i}]"), e),
        }
    }
    Relay {
        retry_schedule,
        attempt_timeout: Duration::from_secs(c.positive(
            "relay.attempt_timeout_secs",
            r.attempt_timeout_secs,
            DEFAULT_ATTEMPT_TIMEOUT_SECS,
        )),
        max_in_flight: c.positive(
            "relay.max_in_flight",
            r.max_in_flight,
            DEFAULT_MAX_IN_FLIGHT,
        ),
    }
}

/// Addresses (`"10.0.0.1"`) or networks (`"10.0.0.0/8"`).
fn trusted_proxies(c: &mut Checker<'_>, raw: &[String]) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => nets.push(net),
            Err(_) => c.invalid(
                format!("server.trusted_proxies[{i}]"),
                format!("{text:?} is not an address or a network such as \"10.0.0.0/8\""),
            ),
        }
    }
    nets
}
