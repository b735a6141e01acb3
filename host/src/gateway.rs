//! The OpenClaw gateway as an agent driver: a turn is one `POST /hooks/agent` with
//! `waitForCompletion`, instead of a subprocess per turn (`openclaw agent ...` starts Node each
//! time). The contract is OpenClaw's `docs/gateway/config-hooks.md` (2026.9.6).
//!
//! The gateway returns no model output, so the agent still replies through `/send` with the
//! instructions in its prompt. It has no API to cancel a run either: a timeout, a cancel or a
//! shutdown ends the turn here, and the gateway's run may go on.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use crate::agent_process::{Ending, Outcome, RunError};
use crate::config::Gateway;

/// A turn as the gateway gets it.
pub struct GatewayTurn {
    /// The prompt (with the reply instructions).
    pub prompt: String,
    /// The conversation: the session key is `<prefix><thread>`.
    pub thread_id: String,
    /// Stable across HTTP retries of one run, new for a rerun (which has a new reply token).
    pub run_key: String,
    /// The route's timeout: the gateway's `timeoutSeconds`, and how long the turn waits.
    pub timeout: Duration,
    /// Notified to give up waiting (the task was cancelled).
    pub cancel: Option<std::sync::Arc<tokio::sync::Notify>>,
}

/// Longest wait between two tries of a run the gateway did not admit (503, 409, 429).
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Runs one turn through the gateway; the outcome as a subprocess's would be.
pub async fn run(g: &Gateway, client: &crate::tls::HttpsClient, turn: GatewayTurn) -> Outcome {
    let started = Instant::now();
    let deadline = started + turn.timeout;
    let body = json!({
        "message": turn.prompt,
        "name": "agent-inbox",
        "agentId": g.agent_id,
        "sessionKey": format!("{}{}", g.session_prefix, turn.thread_id),
        "sessionMode": "persistent",
        "idempotencyKey": turn.run_key,
        "waitForCompletion": true,
        "deliver": false,
        "timeoutSeconds": turn.timeout.as_secs().max(1),
    })
    .to_string();
    let canceled = async {
        match &turn.cancel {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(canceled);
    let mut backoff = Duration::from_secs(1);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let req = http::Request::post(g.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", g.token.expose()),
            )
            .header("idempotency-key", turn.run_key.as_str())
            .body(Full::new(Bytes::from(body.clone())));
        let Ok(req) = req else {
            return failed(
                started,
                "cannot build the gateway request".into(),
                String::new(),
            );
        };
        let exchange = async {
            let resp = client.request(req).await?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = match Limited::new(resp.into_body(), 64 * 1024).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, text))
        };
        let answer = tokio::select! {
            r = tokio::time::timeout(left, exchange) => r,
            () = &mut canceled => return ended(started, Ending::Canceled, Some(RunError::Canceled), String::new()),
        };
        let (status, retry_after, text) = match answer {
            Err(_) => {
                return ended(
                    started,
                    Ending::TimedOut,
                    Some(RunError::TimedOut(turn.timeout)),
                    "the gateway's run may still be going on: it has no cancel".into(),
                );
            }
            Ok(Err(e)) => {
                // The gateway is down or restarting: like not admitted, try again while there is time.
                tracing::warn!(error = %e, tries, "gateway unreachable; retrying");
                (0, None, format!("unreachable: {e}"))
            }
            Ok(Ok(a)) => a,
        };
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let error = parsed["error"].as_str().unwrap_or(text.trim()).to_owned();
        match status {
            200..=299 => return completed(started, &parsed, text),
            // Not admitted (no slot within its 15 s, or the session is busy), throttled, or not
            // reachable: wait and try the same run again.
            0 | 409 | 429 | 503 => {
                let wait = retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
                if Instant::now() + wait >= deadline {
                    return ended(
                        started,
                        Ending::TimedOut,
                        Some(RunError::TimedOut(turn.timeout)),
                        format!(
                            "the gateway never admitted the run ({tries} tries; last: {status} {error})"
                        ),
                    );
                }
                tracing::info!(
                    status,
                    tries,
                    wait_ms = wait.as_millis() as u64,
                    "gateway did not admit the run; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut canceled => return ended(started, Ending::Canceled, Some(RunError::Canceled), String::new()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            401 => {
                return failed(
                    started,
                    "the gateway refused the hook token (401): check token_env against the gateway's hooks.token".into(),
                    text,
                );
            }
            400 => {
                return failed(
                    started,
                    format!(
                        "the gateway refused the run (400): {error}; check hooks.allowedAgentIds, allowRequestSessionKey and allowedSessionKeyPrefixes"
                    ),
                    text,
                );
            }
            other => {
                return failed(
                    started,
                    format!("the gateway answered {other}: {error}"),
                    text,
                );
            }
        }
    }
}

/// A 2xx: the run was admitted and waited for; `completion.status` says how it ended.
fn completed(started: Instant, v: &Value, text: String) -> Outcome {
    match v["completion"]["status"].as_str() {
        Some("ok") => ended(started, Ending::Done, None, text),
        Some("skipped") => failed(
            started,
            "the gateway skipped the run (completion.status = skipped)".into(),
            text,
        ),
        Some("error") => {
            let words = v["completion"]["error"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or("no detail given");
            failed(started, format!("the gateway's run failed: {words}"), text)
        }
        other => failed(
            started,
            format!("the gateway answered without a completion status ({other:?})"),
            text,
        ),
    }
}

fn failed(started: Instant, why: String, text: String) -> Outcome {
    ended(started, Ending::Failed, Some(RunError::Gateway(why)), text)
}

fn ended(started: Instant, ending: Ending, error: Option<RunError>, text: String) -> Outcome {
    Outcome {
        ending,
        exit_code: None,
        signal: None,
        duration: started.elapsed(),
        // What the gateway said, for the turn's record (never secrets: it returns none).
        stdout_tail: text.chars().take(4096).collect(),
        stderr_tail: String::new(),
        error,
    }
}
