//! The life of one claimed turn: the prompt (built in or a render-turn plugin), the agent run with
//! its lease renewed, the record of how it ended, and the failure notice.

use std::time::Duration;

use crate::agent_process::{self, Ending, Invocation, Vars};
use crate::config::{AgentSettings, Driver};
use crate::events::Event;
use crate::gateway::{self, GatewayTurn};
use crate::model::{Message, ReplyContext, TurnEnd, TurnError, TurnState, now_ms};
use crate::snapshot::Snapshot;
use crate::store::{Claimed, Lease, StoreError};
use crate::{hooks, prompt};

use super::Turns;

/// Runs a claimed turn to its end and records it.
pub(super) async fn run(
    turns: &Turns,
    snap: &Snapshot,
    route_name: &str,
    claimed: Claimed,
    token: String,
) -> Result<(), StoreError> {
    let Claimed { message, lease } = claimed;
    let id = message.id.as_str();
    let route = snap.config.routes.get(route_name);
    let (Some(route), Some(settings)) = (route, route.and_then(|r| r.agent())) else {
        let end = TurnEnd::failed(
            TurnState::Failed,
            TurnError::new(
                "route_removed",
                format!("route {route_name} is no longer an agent route in the config"),
            ),
        );
        tracing::warn!(message_id = %id, route = %route_name, "turn failed: route removed");
        if finish(turns, &lease, &message, end.clone(), now_ms()).await? {
            // The route's reply_to is gone with it; tell the sender, so it does not wait forever.
            let to = Turns::sender_if_peer(snap, &message);
            turns.notify_failure(&message, route_name, &end, to).await?;
        }
        return Ok(());
    };
    let grace = snap.config.server.reply_grace;
    // What ends the turn if it fails before its agent starts.
    let unstarted = Unstarted {
        turns,
        lease: &lease,
        message: &message,
        route,
        settings,
        grace,
    };
    let url = format!("{}/send", turns.public_url(snap));
    let deadline_ms = now_ms() + (settings.timeout + grace).as_millis() as i64;
    // A subprocess agent reads its credential from a private file (`curl -H @file`), so no token
    // is ever on a command line, where every user of the machine could read it. The gateway's
    // agent cannot read our files: its prompt carries the header, in an HTTP body only.
    let auth_file = match &settings.driver {
        Driver::Command => match auth_header_file(&token) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "cannot write the reply token's header file");
                let error = TurnError::new("auth_file_failed", e.to_string());
                return unstarted.end(error).await;
            }
        },
        Driver::OpenClawGateway(_) | Driver::A2a(_) => None,
    };
    let auth_header = match &auth_file {
        Some(f) => format!("@{}", f.display()),
        None => format!("Authorization: Bearer {token}"),
    };
    let ctx = ReplyContext {
        url: url.clone(),
        auth_header,
        max_replies: settings.max_replies_per_turn,
        reply_types: route.reply_types.clone(),
        deadline: humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(deadline_ms as u64),
        )
        .to_string(),
        ca_file: ca_file(snap),
        mcp_tools: settings.mcp_tools,
    };
    let prompt = match hooks::render_turn(snap, route_name, &message, &ctx).await {
        Ok(Some(text)) => text,
        Ok(None) => prompt::render(&message, &ctx),
        Err(e) => {
            tracing::error!(message_id = %id, error = %e, "render-turn failed");
            return unstarted
                .end(TurnError::new("plugin_failed", e.to_string()))
                .await;
        }
    };
    tracing::info!(message_id = %id, route = %route_name, thread = %message.thread_id, "turn started");
    turns.events.publish(Event::TurnStarted {
        message_id: id.to_owned(),
        route: route_name.to_owned(),
        thread_id: Some(message.thread_id.clone()),
        attempt: lease.generation,
    });
    let cancel = turns.cancels.register(id);
    let outcome = match &settings.driver {
        Driver::Command => {
            let mut inv = invocation(snap, settings, &message, prompt, &url, token);
            if let Some(f) = &auth_file {
                inv.env
                    .push(("INBOX_REPLY_AUTH_FILE".into(), f.display().to_string()));
            }
            inv.cancel = Some(cancel.notify());
            // Sent on as it comes, until the agent ends (the rest goes out then).
            let (_live, tap) = super::live::Live::start(
                turns.events.clone(),
                id.to_owned(),
                route_name.to_owned(),
                message.thread_id.clone(),
            );
            inv.live = Some(tap);
            with_renewals(turns, &lease, agent_process::run(inv)).await
        }
        Driver::OpenClawGateway(g) => {
            let turn = GatewayTurn {
                prompt,
                thread_id: message.thread_id.clone(),
                // A rerun (a new claim, with a new reply token) is a new run for the gateway.
                run_key: format!("{id}:{}", lease.generation),
                timeout: settings.timeout,
                cancel: Some(cancel.notify()),
            };
            with_renewals(turns, &lease, gateway::run(g, &turns.client, turn)).await
        }
        // The remote agent gets the message itself, not the prompt: its answers come back as
        // the task's artifacts, so it needs no reply instructions.
        Driver::A2a(agent) => {
            drop(prompt);
            let stop = &cancel;
            let interrupted = move || stop.interrupted();
            let turn = super::remote::RemoteTurn {
                turns,
                agent,
                route: route_name,
                message: &message,
                attempt: lease.generation,
                token: &token,
                timeout: settings.timeout,
                cancel: cancel.notify(),
                interrupted: &interrupted,
            };
            with_renewals(turns, &lease, super::remote::run(turn)).await
        }
    };
    let interrupted = cancel.interrupted();
    drop(cancel);
    // The agent has ended: its credential file goes (its token stops working after the grace).
    drop(auth_file);
    if interrupted {
        // The inbox is stopping and could not wait for this agent: the turn is settled as a
        // restart would settle it, now, so the next start (or another host) finds it queued or
        // failed, never running with a live agent.
        tracing::warn!(message_id = %id, route = %route_name, "the inbox is stopping; the turn's agent was ended");
        if let Some(t) = turns.store.interrupt(&lease).await? {
            turns.settle(snap, t, "the inbox stopped").await?;
        }
        return Ok(());
    }
    let state = match outcome.ending {
        Ending::Done => TurnState::Done,
        Ending::Failed => TurnState::Failed,
        Ending::TimedOut => TurnState::TimedOut,
        Ending::Canceled => TurnState::Canceled,
    };
    let end = TurnEnd {
        state,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        error: outcome
            .error
            .as_ref()
            .map(|e| TurnError::new(e.code(), e.to_string()))
            .or_else(|| {
                exit_error(
                    state,
                    outcome.exit_code,
                    outcome.signal,
                    &outcome.stderr_tail,
                )
            }),
        duration_ms: outcome.duration.as_millis() as i64,
        stdout_tail: outcome.stdout_tail,
        stderr_tail: outcome.stderr_tail,
    };
    tracing::info!(
        message_id = %id, route = %route_name, state = state.as_str(), exit_code = ?end.exit_code,
        duration_ms = end.duration_ms, error = ?end.error.as_ref().map(ToString::to_string),
        "turn ended"
    );
    let token_expires = now_ms() + grace.as_millis() as i64;
    if finish(turns, &lease, &message, end.clone(), token_expires).await?
        && state != TurnState::Done
        && settings.on_failure.notifies()
    {
        turns
            .notify_failure(&message, route_name, &end, route.reply_to.clone())
            .await?;
    }
    Ok(())
}

/// Why a turn whose agent ran and exited badly failed, when the run itself raised no error: a
/// stable code for machines and peers, and a detail (with the last stderr line) for the admin.
fn exit_error(
    state: TurnState,
    exit_code: Option<i32>,
    signal: Option<i32>,
    stderr: &str,
) -> Option<TurnError> {
    if state != TurnState::Failed {
        return None;
    }
    let (code, mut detail) = match (exit_code, signal) {
        (_, Some(sig)) => (
            "agent_killed",
            format!("the agent was killed by signal {sig}"),
        ),
        (Some(code), None) => (
            "agent_exited",
            format!("the agent exited with status {code}"),
        ),
        (None, None) => ("agent_failed", "the agent failed".to_string()),
    };
    if let Some(line) = super::last_line(stderr) {
        detail.push_str("; stderr: ");
        detail.push_str(&line);
    }
    Some(TurnError::new(code, detail))
}

/// A claimed turn that fails before its agent starts (no prompt, no credential file).
struct Unstarted<'a> {
    turns: &'a Turns,
    lease: &'a Lease,
    message: &'a Message,
    route: &'a crate::config::Route,
    settings: &'a AgentSettings,
    grace: Duration,
}

impl Unstarted<'_> {
    /// Records the turn `failed` with `error`, and tells the route's `reply_to` when its
    /// `on_failure` says so.
    async fn end(self, error: TurnError) -> Result<(), StoreError> {
        let end = TurnEnd::failed(TurnState::Failed, error);
        let token_expires = now_ms() + self.grace.as_millis() as i64;
        if finish(
            self.turns,
            self.lease,
            self.message,
            end.clone(),
            token_expires,
        )
        .await?
            && self.settings.on_failure.notifies()
        {
            self.turns
                .notify_failure(
                    self.message,
                    &self.route.name,
                    &end,
                    self.route.reply_to.clone(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Runs `work` while renewing the turn's lease; a lost lease is logged (the end is then refused
/// by the store's fence).
async fn with_renewals<T>(turns: &Turns, lease: &Lease, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let (length, every) = turns.lease_times();
    let mut renew = tokio::time::interval(every);
    renew.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = renew.tick() => match turns.store.renew_lease(lease, length).await {
                Ok(true) => {}
                // Cancelled on another host, or taken over after this host was cut off past its
                // lease: either way the agent must stop (its end will be refused).
                Ok(false) => {
                    tracing::warn!(message_id = %lease.message_id, "this host lost the turn's lease (cancelled, or taken over); stopping its agent");
                    turns.cancel(&lease.message_id);
                }
                Err(e) => tracing::warn!(message_id = %lease.message_id, error = %e, "cannot renew the turn's lease"),
            },
        }
    }
}

/// Records the end, fenced by the lease; `false` if another holder owns the turn now.
async fn finish(
    turns: &Turns,
    lease: &Lease,
    message: &Message,
    end: TurnEnd,
    token_expires_at: i64,
) -> Result<bool, StoreError> {
    let state = end.state;
    let ran = std::time::Duration::from_millis(end.duration_ms.max(0) as u64);
    // A database that is away for a while (a shared store) gets the end once it is back, still
    // fenced by the lease: if another host took the turn over meanwhile, the end is refused.
    let mut waited = 0;
    let recorded = loop {
        match turns
            .store
            .end_turn(lease, end.clone(), token_expires_at)
            .await
        {
            Err(StoreError::Unavailable(why)) if waited < END_RETRIES => {
                if waited == 0 {
                    tracing::warn!(message_id = %message.id, error = %why, "the store is unavailable; the turn's end waits for it");
                }
                waited += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            other => break other?,
        }
    };
    if !recorded {
        if state == TurnState::Canceled {
            tracing::info!(message_id = %message.id, "turn cancelled");
        } else {
            tracing::warn!(message_id = %message.id, "turn ended after its lease was lost (or its task was cancelled); its result is not recorded");
        }
        return Ok(false);
    }
    turns.events.publish(Event::TurnEnded {
        message_id: message.id.clone(),
        route: message.route.clone(),
        thread_id: Some(message.thread_id.clone()),
        state,
        exit_code: end.exit_code,
        error: end.error.as_ref().map(|e| e.code.clone()),
    });
    let m = crate::metrics::get();
    m.turns
        .get_or_create(&crate::metrics::RouteState {
            route: message.route.clone(),
            state: state.as_str().to_owned(),
        })
        .inc();
    m.turn_seconds
        .get_or_create(&crate::metrics::Route {
            route: message.route.clone(),
        })
        .observe(ran.as_secs_f64());
    Ok(true)
}

/// Seconds a turn's end waits for an unavailable store before it is given up (the turn is then
/// settled by `on_interrupt` once its lease has run out).
const END_RETRIES: u32 = 600;

/// A new private (0600) file holding the reply's `Authorization` header line, for `curl -H
/// @file`; removed when dropped.
fn auth_header_file(token: &str) -> std::io::Result<tempfile::TempPath> {
    use std::io::Write as _;
    // tempfile creates its files 0600, readable by the inbox's user (the agent's) only.
    let mut f = tempfile::Builder::new()
        .prefix("inbox-auth-")
        .suffix(".header")
        .tempfile()?;
    writeln!(f, "Authorization: Bearer {token}")?;
    f.flush()?;
    Ok(f.into_temp_path())
}

/// `[server] tls_ca`, when the inbox serves TLS with a certificate no public root verifies.
fn ca_file(snap: &Snapshot) -> Option<String> {
    let ca = snap.config.server.tls.as_ref()?.ca.as_ref()?;
    Some(ca.display().to_string())
}

/// `INBOX_AGENT_ID`, `INBOX_AGENT_TOKEN` and `INBOX_URL` for a route with `agent_id`.
fn agent_env(snap: &Snapshot, route: &str, reply_url: &str) -> Vec<(String, String)> {
    let agent = snap
        .config
        .routes
        .get(route)
        .and_then(|r| r.agent_id.as_ref())
        .and_then(|id| snap.config.agents.get(id));
    let (Some(agent), Some(token)) = (agent, agent.and_then(|a| a.tokens.first())) else {
        return Vec::new();
    };
    vec![
        ("INBOX_AGENT_ID".into(), agent.name.clone()),
        ("INBOX_AGENT_TOKEN".into(), token.expose().to_owned()),
        (
            "INBOX_URL".into(),
            reply_url.trim_end_matches("/send").to_owned(),
        ),
    ]
}

fn invocation(
    snap: &Snapshot,
    settings: &AgentSettings,
    m: &Message,
    prompt: String,
    url: &str,
    token: String,
) -> Invocation {
    Invocation {
        command: settings.command.clone(),
        prompt,
        vars: Vars {
            message_id: m.id.clone(),
            thread_id: m.thread_id.clone(),
            route: m.route.clone(),
            msg_type: m.msg_type.clone(),
        },
        stdin: settings.stdin,
        env: vec![
            ("INBOX_MESSAGE_ID".into(), m.id.clone()),
            ("INBOX_THREAD_ID".into(), m.thread_id.clone()),
            ("INBOX_ROUTE".into(), m.route.clone()),
            ("INBOX_MESSAGE_TYPE".into(), m.msg_type.clone()),
            ("INBOX_REPLY_URL".into(), url.to_owned()),
            ("INBOX_REPLY_TOKEN".into(), token),
        ]
        .into_iter()
        // The route's local agent: its identity and token, so the agent can start threads of
        // its own (`agent-inbox send`) under the same name its replies carry.
        .chain(agent_env(snap, &m.route, url))
        // The id the sender gave its message (an A2A messageId, or /message's `id`).
        .chain(
            m.sender_ref
                .clone()
                .map(|r| ("INBOX_SENDER_MESSAGE_ID".to_owned(), r)),
        )
        // The inbox's private CA, for agents that reach /send their own way: INBOX_CA_FILE to
        // pass on (`curl --cacert "$INBOX_CA_FILE"`), and Node's NODE_EXTRA_CA_CERTS, which adds
        // to the public roots (OpenClaw is Node). Nothing that replaces the public roots (such
        // as SSL_CERT_FILE): the agent's other HTTPS calls must keep working.
        .chain(ca_file(snap).into_iter().flat_map(|ca| {
            [
                ("INBOX_CA_FILE".to_owned(), ca.clone()),
                ("NODE_EXTRA_CA_CERTS".to_owned(), ca),
            ]
        }))
        .collect(),
        env_remove: snap.config.secret_vars.clone(),
        timeout: settings.timeout,
        kill_grace: settings.kill_grace,
        output_cap: settings.output_cap,
        // Relative paths in the command resolve against routes.toml's directory, like every path in it.
        work_dir: Some(snap.config.base_dir.clone()),
        temp_dir: None,
        cancel: None,
        live: None,
    }
}
