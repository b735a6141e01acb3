//! `agent-inbox mcp`: the inbox's tools for an agent as an MCP server on stdio, a client of the
//! running inbox's HTTP API with the agent's own token (`INBOX_URL`, `INBOX_AGENT_TOKEN`), never
//! of its database or its config. Logs go to stderr; stdout is the protocol's.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rmcp::ServiceExt as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::client::{AdminClient, EventStream};
use crate::mcp::{AgentApi, Feed, Listing, Reads, Refusal, Tools};
use crate::wire::{Ack, AdminSendBody, AgentMe, ErrorBody};

#[derive(clap::Args)]
pub(super) struct Args {
    /// The inbox's base URL, e.g. http://127.0.0.1:8700.
    #[arg(long, env = "INBOX_URL")]
    url: String,
    /// The agent's own token (`[agents.NAME]`). Read from the environment: a token in argv
    /// would be visible to every process on the machine.
    #[arg(long = "token-env", default_value = "INBOX_AGENT_TOKEN")]
    token_env: String,
    /// The CA file that verifies the inbox's certificate.
    #[arg(long, env = "INBOX_CA_FILE")]
    cacert: Option<PathBuf>,
    /// How often to ask the inbox whether what the agent may do changed, in seconds.
    #[arg(long, default_value_t = 5)]
    watch_secs: u64,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let token = std::env::var(&args.token_env).with_context(|| {
        format!(
            "the agent's token is read from ${}, which is not set",
            args.token_env
        )
    })?;
    let url = args.url.trim_end_matches('/').trim_end_matches("/send");
    let client = AdminClient::with_token(url, &token, args.cacert.as_deref())?;
    let api = HttpApi::new(client);
    // Fail now, with a clear message, rather than at the client's first call.
    let me = api
        .me()
        .await
        .map_err(|r| anyhow::anyhow!("{url}/agent/me: {} ({})", r.message, r.code))?;
    tracing::info!(agent = %me.name, inbox = %url, "MCP server on stdio");
    let service = Tools::new(api)
        .watching_every(Some(Duration::from_secs(args.watch_secs.max(1))))
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP handshake on stdio")?;
    service.waiting().await.context("the MCP session")?;
    Ok(ExitCode::SUCCESS)
}

/// The inbox's HTTP API, as the agent (or, for `send --wait`, as the operator).
pub(super) struct HttpApi {
    client: AdminClient,
}

fn unreachable(e: anyhow::Error) -> Refusal {
    Refusal {
        code: "unreachable".into(),
        message: format!("{e:#}"),
    }
}

impl HttpApi {
    pub(super) fn new(client: AdminClient) -> Self {
        HttpApi { client }
    }

    pub(super) fn client(&self) -> &AdminClient {
        &self.client
    }

    /// The events feed at `path` (`/events...`).
    pub(super) async fn feed(&self, path: &str) -> Result<HttpFeed, Refusal> {
        Ok(HttpFeed(
            self.client.events(path).await.map_err(unreachable)?,
        ))
    }

    /// A refusal as the command line reports it.
    pub(super) fn error(r: Refusal) -> anyhow::Error {
        anyhow::anyhow!("{} ({})", r.message, r.code)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, Refusal> {
        let (status, bytes) = self
            .client
            .request(method, path, body)
            .await
            .map_err(unreachable)?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => Refusal {
                    code: e.error.code,
                    message: e.error.message,
                },
                Err(_) => Refusal {
                    code: format!("http_{}", status.as_u16()),
                    message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Refusal {
            code: "bad_answer".into(),
            message: format!("the inbox's answer to {path} does not read: {e}"),
        })
    }
}

/// `GET /events`, read as it comes.
pub(super) struct HttpFeed(EventStream);

impl Feed for HttpFeed {
    async fn next(&mut self) -> Option<Result<Value, Refusal>> {
        Some(self.0.next().await?.map_err(unreachable))
    }
}

impl Reads for HttpApi {
    type Feed = HttpFeed;

    async fn messages(&self, listing: &Listing) -> Result<Value, Refusal> {
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(thread) = &listing.thread {
                q.append_pair("thread", thread);
            }
            if let Some(route) = &listing.route {
                q.append_pair("route", route);
            }
            q.append_pair("limit", &listing.limit.to_string());
            q.finish()
        };
        self.call(http::Method::GET, &format!("/messages?{query}"), None)
            .await
    }

    async fn show(&self, id: &str) -> Result<Value, Refusal> {
        let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        self.call(http::Method::GET, &format!("/messages/{id}"), None)
            .await
    }

    async fn events(&self, thread: &str) -> Result<HttpFeed, Refusal> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("thread", thread)
            .finish();
        self.feed(&format!("/events?{query}")).await
    }
}

impl AgentApi for HttpApi {
    async fn me(&self) -> Result<AgentMe, Refusal> {
        self.call(http::Method::GET, "/agent/me", None).await
    }

    async fn send(&self, body: AdminSendBody) -> Result<Ack, Refusal> {
        self.call(http::Method::POST, "/send", Some(body.to_json()))
            .await
    }

    async fn reply(&self, message_id: &str, body: Value) -> Result<Ack, Refusal> {
        let id =
            percent_encoding::utf8_percent_encode(message_id, percent_encoding::NON_ALPHANUMERIC);
        self.call(
            http::Method::POST,
            &format!("/agent/messages/{id}/reply"),
            Some(body),
        )
        .await
    }
}
