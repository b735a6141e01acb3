//! The CLI's client for a running inbox: admin requests (or an agent's `send`) over HTTP, and their output as tables.
//!
//! The CLI goes through the server (not the database) so every record, retry and log line is made by
//! the one process that owns the store.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{Config, Secret};
use crate::model::Delivery;
use crate::wire::{ApprovalList, Detail, ErrorBody, MessageList, Outbox};

/// Talks to the inbox a config describes, as its admin.
pub struct AdminClient {
    base: String,
    secret: Secret,
    client: crate::tls::HttpsClient,
}

impl AdminClient {
    /// Reaches the server at `public_url` (or `listen`) with the config's admin secret.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let secret = config
            .server
            .admin_secrets
            .first()
            .cloned()
            .context("the config sets no admin secret ([server] admin_secret_env)")?;
        let base = match &config.server.public_url {
            Some(u) => u.clone(),
            None => {
                let mut addr = config.server.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let scheme = if config.server.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{addr}")
            }
        };
        // An inbox whose certificate a private CA signed is reached trusting that CA.
        let client = match config.server.tls.as_ref().and_then(|t| t.ca.as_ref()) {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
                crate::tls::client_trusting(&pem)
                    .with_context(|| format!("server.tls_ca {}", ca.display()))?
            }
            None => crate::tls::client(),
        };
        Ok(Self {
            base,
            secret,
            client,
        })
    }

    /// Reaches the inbox at `url` with a bearer `token` (a local agent's), trusting `ca` if given
    /// and the public roots otherwise.
    pub fn with_token(
        url: &str,
        token: &str,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let client = match ca {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
                crate::tls::client_trusting(&pem).with_context(|| format!("CA {}", ca.display()))?
            }
            None => crate::tls::client(),
        };
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            secret: Secret::new(token),
            client,
        })
    }

    /// Sends a request and returns the status and the body.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let url = format!("{}{path}", self.base);
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.secret.expose()))
            .header("content-type", "application/json")
            .body(Full::new(bytes))?;
        let resp = self.send(req, &url).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends a built request; the answer's head within 30 s, or an error naming the URL.
    async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
        url: &str,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .with_context(|| format!("{url}: no answer within 30s"))?
            .with_context(|| {
                format!("cannot reach the inbox at {url}; is `agent-inbox serve` running?")
            })
    }

    /// Opens `GET path` as a Server-Sent Events stream (`/events`).
    pub async fn events(&self, path: &str) -> anyhow::Result<EventStream> {
        let url = format!("{}{path}", self.base);
        let req = http::Request::get(&url)
            .header("authorization", format!("Bearer {}", self.secret.expose()))
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))?;
        let resp = self.send(req, &url).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let msg = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => e.error.message,
                Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
            };
            bail!("the inbox answered {status}: {msg}");
        }
        Ok(EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }

    /// Sends a request and parses a 2xx answer as `T`; any other answer is an error carrying the
    /// server's message, and an answer that does not parse as `T` is an error saying so.
    pub async fn expect<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        let (status, bytes) = self.request(method, path, body).await?;
        if !status.is_success() {
            let msg = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => e.error.message,
                Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
            };
            bail!("the inbox answered {status}: {msg}");
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "cannot read the inbox's answer to {path} ({} bytes) as {}",
                bytes.len(),
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("JSON")
            )
        })
    }
}

/// Lays rows out in aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{c:<w$}  "));
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn time(ms: Option<i64>) -> String {
    ms.map(|ms| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
            .to_string()
    })
    .unwrap_or_else(|| "-".into())
}

/// `GET /messages` as a table.
pub fn messages_table(list: &MessageList) -> String {
    let rows: Vec<Vec<String>> = list
        .messages
        .iter()
        .map(|m| {
            let short: String = m.payload.to_string().chars().take(60).collect();
            vec![
                m.id.clone(),
                time(Some(m.received_at)),
                m.sender.clone(),
                m.route.clone(),
                m.msg_type.clone(),
                if m.mailbox {
                    "mailbox".into()
                } else {
                    opt(&m.turn_state)
                },
                short,
            ]
        })
        .collect();
    table(
        &["ID", "RECEIVED", "FROM", "ROUTE", "TYPE", "TURN", "PAYLOAD"],
        &rows,
    )
}

/// `GET /messages/{id}` as text: the message, its turn, its replies and their deliveries.
pub fn message_detail(detail: &Detail) -> String {
    let mut out = String::new();
    let d = match detail {
        Detail::Outbound(o) => {
            let r = &o.reply;
            out.push_str(&format!(
                "reply {}  type {}  thread {}  in reply to {}\npayload: {}\n\n",
                r.id,
                r.msg_type,
                r.thread_id,
                opt(&r.in_reply_to),
                r.payload
            ));
            out.push_str(&deliveries_table(
                r.deliveries.as_deref().unwrap_or_default(),
            ));
            return out;
        }
        Detail::Message(d) => d.as_ref(),
    };
    let m = &d.message;
    out.push_str(&format!(
        "message {}\n  from {}  route {}  type {}  thread {}  hops {}\n  received {}\n  payload: {}\n",
        m.id, m.sender, m.route, m.msg_type, m.thread_id, m.hops, time(Some(m.received_at)), m.payload
    ));
    if let Some(t) = &d.turn {
        out.push_str(&format!(
            "\nturn: {}  attempts {}  exit {}  signal {}  duration {} ms\n",
            t.state,
            t.attempts,
            opt(&t.exit_code),
            opt(&t.signal),
            opt(&t.duration_ms)
        ));
        if let Some(e) = &t.error {
            out.push_str(&format!("  error: {e}\n"));
        }
        for (name, text) in [("stdout", &t.stdout_tail), ("stderr", &t.stderr_tail)] {
            let text = text.as_deref().unwrap_or("").trim_end();
            if !text.is_empty() {
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                out.push_str(&format!("  {name} (last lines):\n"));
                for l in tail.into_iter().rev() {
                    out.push_str(&format!("    {l}\n"));
                }
            }
        }
    }
    for r in &d.replies {
        out.push_str(&format!(
            "\nreply {}  type {}\n  payload: {}\n",
            r.id, r.msg_type, r.payload
        ));
        out.push_str(&deliveries_table(
            r.deliveries.as_deref().unwrap_or_default(),
        ));
    }
    out
}

fn deliveries_table(deliveries: &[Delivery]) -> String {
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            vec![
                d.peer.clone(),
                d.state.to_string(),
                d.attempts.to_string(),
                opt(&d.last_status),
                time(d.next_attempt_at),
                opt(&d.last_error),
            ]
        })
        .collect();
    table(
        &["  PEER", "STATE", "ATTEMPTS", "STATUS", "NEXT", "ERROR"],
        &rows,
    )
}

/// `GET /admin/outbox` as a table.
pub fn outbox_table(outbox: &Outbox) -> String {
    let rows: Vec<Vec<String>> = outbox
        .outbox
        .iter()
        .map(|item| {
            let (r, d) = (&item.reply, &item.delivery);
            vec![
                r.id.clone(),
                time(Some(r.created_at)),
                r.msg_type.clone(),
                d.peer.clone(),
                d.state.to_string(),
                d.attempts.to_string(),
                opt(&d.last_status),
                opt(&d.last_error).chars().take(60).collect(),
            ]
        })
        .collect();
    table(
        &[
            "REPLY", "CREATED", "TYPE", "PEER", "STATE", "ATTEMPTS", "STATUS", "ERROR",
        ],
        &rows,
    )
}

/// `GET /admin/approvals` as a table: what waits, what it is, and (for decided ones) who said.
pub fn approvals_table(list: &ApprovalList) -> String {
    let rows: Vec<Vec<String>> = list
        .approvals
        .iter()
        .map(|item| {
            let a = &item.approval;
            let (what, payload) = match (&item.reply, &item.message) {
                (Some(r), _) if r.route.is_none() => (
                    format!(
                        "{} from agent {}",
                        r.msg_type,
                        r.agent.as_deref().unwrap_or("?")
                    ),
                    r.payload.to_string(),
                ),
                (Some(r), _) => (format!("reply {}", r.msg_type), r.payload.to_string()),
                (None, Some(m)) => (
                    format!("{} from {}", m.msg_type, m.sender),
                    m.payload.to_string(),
                ),
                (None, None) => ("(gone)".to_owned(), String::new()),
            };
            let decided = match (&a.decided_by, &a.decision_reason) {
                (Some(by), Some(why)) => format!("{} by {by}: {why}", a.state),
                (Some(by), None) => format!("{} by {by}", a.state),
                _ => format!("until {}", time(Some(a.expires_at))),
            };
            vec![
                a.id.clone(),
                a.kind.to_string(),
                if a.route.is_empty() { "-" } else { &a.route }.to_owned(),
                what,
                payload.chars().take(50).collect(),
                decided.chars().take(60).collect(),
            ]
        })
        .collect();
    table(&["ID", "KIND", "ROUTE", "WHAT", "PAYLOAD", "STATE"], &rows)
}

/// An open `/events` stream: one JSON value per event.
pub struct EventStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the server ends the stream.
    pub async fn next(&mut self) -> Option<anyhow::Result<Value>> {
        loop {
            // One event per blank-line-terminated block; only its `data:` lines count.
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(
                    serde_json::from_str(&data.join("\n")).context("an event that is not JSON"),
                );
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Some(d) = frame.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}
