//! `POST /mcp`: the agent's MCP tools over Streamable HTTP (rmcp's server), on the inbox itself.
//! Stateless: no session ids, so any host of a cluster answers any request; each request is
//! authenticated by the agent's own bearer token before rmcp reads a byte, and each tool reaches
//! the inbox's use cases in this process ([`InboxApi`]), as that agent. `GET` and `DELETE`
//! answer 405 (no server-initiated stream, no session to end). A drain ends a waiting `ask`
//! with a tool error that says where its answer will come.

use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::extract::{Req, bearer, body};
use super::{ApiError, Body};
use crate::config::{LocalAgent, Secret};
use crate::inbox::{Inbox, Reader};
use crate::mcp::{AgentApi, Feed, Listing, Reads, Refusal, Tools};
use crate::snapshot::Snapshot;
use crate::store::MessageFilter;
use crate::wire::{Ack, AdminSendBody, AgentMe, SendBody};

/// How often a waiting feed looks whether the inbox drains.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// Answers one MCP request (a JSON-RPC message) as the agent whose token it carries.
pub(super) async fn serve(
    inbox: &Arc<Inbox>,
    snap: &Snapshot,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    let token = bearer(req)
        .filter(|t| snap.config.agent_by_token(t).is_some())
        .ok_or(ApiError::Unauthorized)?;
    let token = Secret::new(String::from_utf8_lossy(token).into_owned());
    // MCP's body is JSON, declared (rmcp refuses an undeclared one in plain text).
    if !req.parts.headers.contains_key(CONTENT_TYPE) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = body(req, snap.config.server.max_body_bytes).await?;
    // A frame that is not JSON-RPC gets a JSON-RPC error (rmcp would answer 415 in plain text).
    let frame = serde_json::from_slice::<Value>(&bytes)
        .map_err(|e| (PARSE_ERROR, format!("Parse error: {e}")))
        .and_then(|v| {
            serde_json::from_value::<ClientJsonRpcMessage>(v)
                .map_err(|e| (INVALID_REQUEST, format!("Invalid Request: {e}")))
        });
    if let Err((code, message)) = frame {
        return Ok(rpc_error(StatusCode::BAD_REQUEST, code, &message));
    }
    let mut request = http::Request::new(Full::new(bytes));
    *request.method_mut() = req.parts.method.clone();
    *request.uri_mut() = req.parts.uri.clone();
    *request.headers_mut() = req.parts.headers.clone();
    let api = InboxApi {
        inbox: inbox.clone(),
        token: Arc::new(token),
    };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // The bearer token is the guard here: a page a rebound name loads cannot present it.
        .disable_allowed_hosts();
    // One service per request: it holds the caller's identity, and nothing outlives the answer.
    let service = StreamableHttpService::new(
        move || Ok(Tools::new(api.clone()).watching_every(None)),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let resp = service.handle(request).await;
    let plain = resp.status().is_client_error()
        && !resp
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"));
    let (parts, body) = resp.into_parts();
    if plain {
        // rmcp's own refusals (406, 415) are plain text: the same words, as a JSON-RPC error.
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&text);
        return Ok(rpc_error(parts.status, INVALID_REQUEST, message.trim()));
    }
    Ok(Response::from_parts(parts, Body::boxed(body)))
}

/// JSON-RPC's code for a body that is not JSON.
const PARSE_ERROR: i32 = -32700;
/// JSON-RPC's code for JSON that is not a request, notification or response.
const INVALID_REQUEST: i32 = -32600;

/// A JSON-RPC error with no id (none could be read), as MCP's transport allows in an HTTP error.
fn rpc_error(status: StatusCode, code: i32, message: &str) -> Response<Body> {
    super::json(
        status,
        &json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}}),
    )
}

/// The inbox's use cases, as the agent holding `token`. The token is looked up again on each
/// call, so a reload that revokes it stops a request already under way.
#[derive(Clone)]
struct InboxApi {
    inbox: Arc<Inbox>,
    token: Arc<Secret>,
}

/// An inbox error as the tools report it: the code and message the HTTP API would answer.
fn refusal(e: impl Into<ApiError>) -> Refusal {
    let e = e.into();
    Refusal {
        code: e.code().to_owned(),
        message: e.public_message(),
    }
}

impl InboxApi {
    /// The config now, and this agent in it.
    fn agent(&self) -> Result<(Arc<Snapshot>, LocalAgent), Refusal> {
        let snap = self.inbox.snapshot();
        let agent = snap
            .config
            .agent_by_token(self.token.expose().as_bytes())
            .cloned()
            .ok_or_else(|| refusal(ApiError::Unauthorized))?;
        Ok((snap, agent))
    }
}

fn value(v: &impl serde::Serialize) -> Result<Value, Refusal> {
    serde_json::to_value(v).map_err(|e| Refusal {
        code: "internal".into(),
        message: e.to_string(),
    })
}

impl Reads for InboxApi {
    type Feed = InboxFeed;

    async fn messages(&self, listing: &Listing) -> Result<Value, Refusal> {
        let (_, agent) = self.agent()?;
        let filter = MessageFilter {
            route: listing.route.clone(),
            thread: listing.thread.clone(),
            limit: listing.limit.clamp(1, 500),
            ..MessageFilter::default()
        };
        let list = self
            .inbox
            .list(&Reader::Agent(agent.name), filter)
            .await
            .map_err(refusal)?;
        value(&list)
    }

    async fn show(&self, id: &str) -> Result<Value, Refusal> {
        let (_, agent) = self.agent()?;
        let detail = self
            .inbox
            .show(&Reader::Agent(agent.name), id)
            .await
            .map_err(refusal)?;
        value(&detail)
    }

    async fn events(&self, thread: &str) -> Result<InboxFeed, Refusal> {
        let (_, agent) = self.agent()?;
        // Subscribed first, so nothing that happens while the thread is checked is missed.
        let rx = self.inbox.subscribe();
        if !self
            .inbox
            .agent_reads(&agent.name, thread)
            .await
            .map_err(refusal)?
        {
            return Err(refusal(ApiError::NOT_FOUND));
        }
        let mut drain = tokio::time::interval(DRAIN_CHECK);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(InboxFeed {
            rx,
            thread: thread.to_owned(),
            inbox: self.inbox.clone(),
            drain,
        })
    }
}

impl AgentApi for InboxApi {
    async fn me(&self) -> Result<AgentMe, Refusal> {
        let (snap, agent) = self.agent()?;
        Ok(self.inbox.agent_me(&snap, &agent).await)
    }

    async fn send(&self, body: AdminSendBody) -> Result<Ack, Refusal> {
        let (snap, agent) = self.agent()?;
        self.inbox
            .agent_send(&snap, &agent, body)
            .await
            .map_err(refusal)
    }

    async fn reply(&self, message_id: &str, body: Value) -> Result<Ack, Refusal> {
        let (snap, agent) = self.agent()?;
        // The same parse as `POST /agent/messages/{id}/reply`, limits included.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        if bytes.len() > snap.config.server.max_body_bytes {
            return Err(refusal(ApiError::BodyTooLarge(
                snap.config.server.max_body_bytes,
            )));
        }
        let reply = SendBody::parse(&bytes, snap.config.server.max_json_depth)
            .map_err(ApiError::Body)
            .map_err(refusal)?;
        self.inbox
            .agent_reply(&snap, &agent, message_id, reply)
            .await
            .map_err(refusal)
    }
}

/// One thread's events, from the inbox's own broadcast; it ends when the inbox drains.
struct InboxFeed {
    rx: broadcast::Receiver<crate::events::Event>,
    thread: String,
    inbox: Arc<Inbox>,
    drain: tokio::time::Interval,
}

impl Feed for InboxFeed {
    async fn next(&mut self) -> Option<Result<Value, Refusal>> {
        loop {
            tokio::select! {
                e = self.rx.recv() => match e {
                    // An agent never sees another turn's output, nor its own agent's.
                    Ok(e) if !e.admin_only()
                        && super::event_stream::matches(&e, None, Some(&self.thread)) => {
                        return Some(value(&e));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Some(Ok(json!({"event": "lagged", "missed": n})));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.drain.tick() => {
                    if self.inbox.is_draining() {
                        return None;
                    }
                }
            }
        }
    }
}
