//! The CLI's one typed client for a running inbox: admin requests (or an agent's `send`) over
//! HTTP, and the events stream.
//!
//! The CLI goes through the server (not the database) so every record, retry and log line is made by
//! the one process that owns the store.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{Config, Secret};
use crate::wire::ErrorBody;

/// Talks to the inbox a config describes, as its admin.
pub(super) struct AdminClient {
    base: String,
    secret: Secret,
    client: crate::tls::HttpsClient,
}

/// Reads and checks the config at `path`, naming the file in any error.
pub(super) fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

impl AdminClient {
    /// Reaches the inbox at `base` with the admin `secret`, trusting `ca` if given and the
    /// public roots otherwise.
    pub(super) fn new(base: &str, secret: Secret, ca: Option<&Path>) -> anyhow::Result<Self> {
        let client = match ca {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
                crate::tls::client_trusting(&pem).with_context(|| format!("CA {}", ca.display()))?
            }
            None => crate::tls::client(),
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            secret,
            client,
        })
    }

    /// Reaches the inbox at `url` with a bearer `token` (a local agent's), trusting `ca` if given
    /// and the public roots otherwise.
    pub(super) fn with_token(url: &str, token: &str, ca: Option<&Path>) -> anyhow::Result<Self> {
        Self::new(&super::target::base_url(url), Secret::new(token), ca)
    }

    /// Sends a request and returns the status and the body.
    pub(super) async fn request(
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
    pub(super) async fn events(&self, path: &str) -> anyhow::Result<EventStream> {
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
    pub(super) async fn expect<T: DeserializeOwned>(
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

/// An open `/events` stream: one JSON value per event.
pub(super) struct EventStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the server ends the stream.
    pub(super) async fn next(&mut self) -> Option<anyhow::Result<Value>> {
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
