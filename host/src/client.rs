//! The CLI's client for a running inbox: admin requests over HTTP, and their output as tables.
//!
//! The CLI goes through the server (not the database) so every record, retry and log line is made by
//! the one process that owns the store.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::config::{Config, Secret};

/// Talks to the inbox a config describes, as its admin.
pub struct AdminClient {
    base: String,
    secret: Secret,
    client: crate::relay::Client,
}

impl AdminClient {
    /// Reaches the server at `public_url` (or `listen`) with the config's admin secret.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let secret = config
            .server
            .admin_secret
            .clone()
            .context("the config sets no admin secret ([server] admin_secret_env)")?;
        let base = match &config.server.public_url {
            Some(u) => u.clone(),
            None => {
                let mut addr = config.server.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        };
        Ok(Self {
            base,
            secret,
            client: crate::relay::client(),
        })
    }

    /// Sends a request and returns the status and the JSON answer.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(http::StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.secret.expose()))
            .header("content-type", "application/json")
            .body(Full::new(bytes))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .with_context(|| format!("{url}: no answer within 30s"))?
            .with_context(|| {
                format!("cannot reach the inbox at {url}; is `agent-inbox serve` running?")
            })?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        Ok((status, v))
    }

    /// Like [`AdminClient::request`], but a non-2xx answer is an error carrying the server's message.
    pub async fn expect_ok(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.request(method, path, body).await?;
        if !status.is_success() {
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            bail!("the inbox answered {status}: {msg}");
        }
        Ok(v)
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn time(v: &Value) -> String {
    v.as_i64()
        .map(|ms| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(ms as u64),
            )
            .to_string()
        })
        .unwrap_or_else(|| "-".into())
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

/// `GET /messages` as a table.
pub fn messages_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["messages"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let payload = m["payload"].to_string();
            let short: String = payload.chars().take(60).collect();
            vec![
                s(&m["id"]),
                time(&m["received_at"]),
                s(&m["sender"]),
                s(&m["route"]),
                s(&m["type"]),
                if m["mailbox"] == Value::Bool(true) {
                    "mailbox".into()
                } else {
                    s(&m["turn_state"])
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
pub fn message_detail(v: &Value) -> String {
    let mut out = String::new();
    if let Some(r) = v.get("reply") {
        out.push_str(&format!(
            "reply {}  type {}  thread {}  in reply to {}\npayload: {}\n\n",
            s(&r["id"]),
            s(&r["type"]),
            s(&r["thread_id"]),
            s(&r["in_reply_to"]),
            r["payload"]
        ));
        out.push_str(&deliveries_table(&r["deliveries"]));
        return out;
    }
    let m = &v["message"];
    out.push_str(&format!(
        "message {}\n  from {}  route {}  type {}  thread {}  hops {}\n  received {}\n  payload: {}\n",
        s(&m["id"]), s(&m["sender"]), s(&m["route"]), s(&m["type"]), s(&m["thread_id"]), s(&m["hops"]),
        time(&m["received_at"]), m["payload"]
    ));
    let t = &v["turn"];
    if !t.is_null() {
        out.push_str(&format!(
            "\nturn: {}  attempts {}  exit {}  signal {}  duration {} ms\n",
            s(&t["state"]),
            s(&t["attempts"]),
            s(&t["exit_code"]),
            s(&t["signal"]),
            s(&t["duration_ms"])
        ));
        if !t["error"].is_null() {
            out.push_str(&format!("  error: {}\n", s(&t["error"])));
        }
        for (name, key) in [("stdout", "stdout_tail"), ("stderr", "stderr_tail")] {
            let text = t[key].as_str().unwrap_or("").trim_end();
            if !text.is_empty() {
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                out.push_str(&format!("  {name} (last lines):\n"));
                for l in tail.into_iter().rev() {
                    out.push_str(&format!("    {l}\n"));
                }
            }
        }
    }
    for r in v["replies"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
    {
        out.push_str(&format!(
            "\nreply {}  type {}\n  payload: {}\n",
            s(&r["id"]),
            s(&r["type"]),
            r["payload"]
        ));
        out.push_str(&deliveries_table(&r["deliveries"]));
    }
    out
}

fn deliveries_table(d: &Value) -> String {
    let rows: Vec<Vec<String>> = d
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|d| {
            vec![
                s(&d["peer"]),
                s(&d["state"]),
                s(&d["attempts"]),
                s(&d["last_status"]),
                time(&d["next_attempt_at"]),
                s(&d["last_error"]),
            ]
        })
        .collect();
    table(
        &["  PEER", "STATE", "ATTEMPTS", "STATUS", "NEXT", "ERROR"],
        &rows,
    )
}

/// `GET /admin/outbox` as a table.
pub fn outbox_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["outbox"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|item| {
            let (r, d) = (&item["reply"], &item["delivery"]);
            vec![
                s(&r["id"]),
                time(&r["created_at"]),
                s(&r["type"]),
                s(&d["peer"]),
                s(&d["state"]),
                s(&d["attempts"]),
                s(&d["last_status"]),
                s(&d["last_error"]).chars().take(60).collect(),
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
