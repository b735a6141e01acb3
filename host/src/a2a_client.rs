//! The inbox as an A2A client: JSON-RPC calls to the remote agents the config names (a route's
//! `driver = "a2a"`, a peer's `a2a_url`), each within a deadline and a body cap, and every call
//! to one remote within one budget a minute, shared by all its users, so that the inbox's polls
//! never trip a remote's rate limit (OpenClaw's 30 a minute per peer counts them). A remote that
//! asks to slow down (HTTP 429, or a JSON-RPC "rate limited" error under 200) closes the budget
//! until it said, or a backoff.
//!
//! Where a remote is comes only from the config. A card (a URL ending in `.json`) is read for
//! its JSON-RPC interface and whether it streams; it is kept and re-read with `If-None-Match`
//! when it is a minute old, so a changed card (a new ETag) is picked up. A card may name its own
//! origin; an endpoint at any other origin must be a public address (the SSRF guard), checked
//! when the card is read and again at connect time.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::a2a::remote::{self, Answer, RemoteTask, StreamEvent};
use crate::config::A2aRemote;
use crate::ssrf;
use crate::tls::HttpsClient;

/// Most bytes of one JSON-RPC answer (and of one card, and of one stream event).
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Longest single call, whatever the deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a card is used before it is re-validated.
const CARD_FRESH: Duration = Duration::from_secs(60);
/// The budget's window.
const WINDOW: Duration = Duration::from_secs(60);
/// How long a remote that asked to slow down without saying how long is left alone.
const DEFAULT_SLOW_DOWN: Duration = Duration::from_secs(10);

/// Why a call to a remote agent failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The remote asked the inbox to slow down (429, or a JSON-RPC rate-limit error), or the
    /// budget has no call left before the deadline.
    #[error("the remote agent is rate limiting the inbox: {0}")]
    RateLimited(String),
    /// The remote does not know the task (it forgot it, e.g. across a restart).
    #[error("the remote agent does not know task {0}")]
    TaskNotFound(String),
    /// A JSON-RPC error.
    #[error("the remote agent answered error {code}: {message}")]
    Rpc { code: i64, message: String },
    /// An HTTP status other than 200 (401: a wrong bearer).
    #[error("the remote agent answered HTTP {status}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    Http { status: u16, detail: String },
    /// No connection.
    #[error("the remote agent cannot be reached: {0}")]
    Unreachable(String),
    /// No answer within the time left.
    #[error("the remote agent did not answer in time")]
    TimedOut,
    /// An answer the inbox cannot read.
    #[error("the remote agent's answer is not A2A: {0}")]
    BadAnswer(String),
    /// The card cannot be used (no JSON-RPC interface, a private address at another origin).
    #[error("the remote agent's card: {0}")]
    Card(String),
}

impl CallError {
    /// Worth trying again later in the same turn or follow-up: the remote may be restarting,
    /// busy, or asking to slow down.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::RateLimited(_) | CallError::Unreachable(_) | CallError::TimedOut => true,
            CallError::Http { status, .. } => *status >= 500 || *status == 408,
            _ => false,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            CallError::RateLimited(_) => "rate_limited",
            CallError::TaskNotFound(_) => "task_not_found",
            CallError::Rpc { .. } => "rpc_error",
            CallError::Http { .. } => "http_error",
            CallError::Unreachable(_) => "unreachable",
            CallError::TimedOut => "timed_out",
            CallError::BadAnswer(_) | CallError::Card(_) => "bad_answer",
        }
    }
}

/// Where to send JSON-RPC, as the config or the card says.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: http::Uri,
    /// The card says `capabilities.streaming` (an endpoint given directly is not asked).
    pub streaming: bool,
    /// At an origin the card named other than its own: connect to public addresses only.
    guarded: bool,
}

/// Calls to remote A2A agents.
pub struct A2aClient {
    http: HttpsClient,
    public: ssrf::PublicClient,
    budgets: Mutex<HashMap<String, Budget>>,
    cards: Mutex<HashMap<String, Card>>,
}

/// A card as last read.
#[derive(Clone)]
struct Card {
    endpoint: Endpoint,
    etag: Option<String>,
    read_at: Instant,
    /// What it says of the agent.
    about: crate::model::CardAbout,
}

/// The calls made to one remote in the last minute, and when it may be called again.
#[derive(Default)]
struct Budget {
    calls: VecDeque<Instant>,
    closed_until: Option<Instant>,
    /// What the remote turned out to allow a minute (a little under the calls it had seen when
    /// it said to slow down), and since when: below the configured budget, it keeps the calls
    /// that wait out a slow-down from all going at once and being refused again.
    learned: Option<(usize, Instant)>,
}

/// How long a limit learned from a remote is kept before the configured budget applies again.
const LEARNED_FOR: Duration = Duration::from_secs(300);

impl Budget {
    /// Takes a call at `now` within `per_minute`, or says when to ask again.
    fn take(&mut self, now: Instant, per_minute: usize) -> Result<(), Instant> {
        while self.calls.front().is_some_and(|t| now - *t >= WINDOW) {
            self.calls.pop_front();
        }
        if let Some(t) = self.closed_until.filter(|t| *t > now) {
            return Err(t);
        }
        let cap = match self.learned {
            Some((n, since)) if now - since < LEARNED_FOR => n.min(per_minute),
            _ => per_minute,
        };
        if self.calls.len() < cap {
            self.calls.push_back(now);
            return Ok(());
        }
        Err(self.calls.front().map_or(now, |t| *t + WINDOW))
    }

    /// The remote said to slow down at `now`: no call for `wait`, and from then on a little
    /// fewer a minute than it had seen (never more than learned before).
    fn slow_down(&mut self, now: Instant, wait: Duration) {
        let until = now + wait;
        self.closed_until = Some(self.closed_until.map_or(until, |t| t.max(until)));
        let seen = self.calls.len();
        let allowed = (seen * 9 / 10).max(1);
        let allowed = match self.learned {
            Some((n, since)) if now - since < LEARNED_FOR => allowed.min(n),
            _ => allowed,
        };
        self.learned = Some((allowed, now));
    }
}

impl Default for A2aClient {
    fn default() -> Self {
        A2aClient {
            http: crate::tls::client(),
            public: ssrf::public_client(),
            budgets: Mutex::new(HashMap::new()),
            cards: Mutex::new(HashMap::new()),
        }
    }
}

impl A2aClient {
    /// `SendMessage` with `params`; the task it answers with (a direct message reads as a
    /// completed task with one artifact).
    pub async fn send_message(
        &self,
        r: &Remote<'_>,
        params: Value,
        deadline: Instant,
    ) -> Result<RemoteTask, CallError> {
        let result = self.call(r, "SendMessage", params, deadline).await?;
        remote::parse_send_result(&result).map_err(CallError::BadAnswer)
    }

    /// `GetTask`.
    pub async fn get_task(
        &self,
        r: &Remote<'_>,
        id: &str,
        deadline: Instant,
    ) -> Result<RemoteTask, CallError> {
        let result = self
            .call(r, "GetTask", json!({ "id": id }), deadline)
            .await
            .map_err(|e| not_found(e, id))?;
        remote::parse_task(&result).map_err(CallError::BadAnswer)
    }

    /// `CancelTask`; the task as the remote then shows it.
    pub async fn cancel_task(
        &self,
        r: &Remote<'_>,
        id: &str,
        deadline: Instant,
    ) -> Result<RemoteTask, CallError> {
        let result = self
            .call(r, "CancelTask", json!({ "id": id }), deadline)
            .await
            .map_err(|e| not_found(e, id))?;
        remote::parse_task(&result).map_err(CallError::BadAnswer)
    }

    /// What the remote's card says of it (read, or re-validated, as for a call); `None` when
    /// the config names its endpoint, not its card.
    pub async fn about(
        &self,
        r: &Remote<'_>,
        deadline: Instant,
    ) -> Result<Option<crate::model::CardAbout>, CallError> {
        if !r.config.card {
            return Ok(None);
        }
        self.endpoint(r, deadline).await?;
        let key = r.config.url.to_string();
        Ok(self.lock_cards().get(&key).map(|c| c.about.clone()))
    }

    /// `SubscribeToTask`: the task's events as they come, until it ends or `deadline`.
    pub async fn subscribe(
        &self,
        r: &Remote<'_>,
        id: &str,
        deadline: Instant,
    ) -> Result<Events, CallError> {
        let endpoint = self.endpoint(r, deadline).await?;
        self.spend(r, deadline).await?;
        let body = rpc_body("SubscribeToTask", json!({ "id": id }));
        let req = request(r, &endpoint.url, body, true)?;
        let until = deadline.min(Instant::now() + CALL_TIMEOUT);
        let resp = tokio::time::timeout_at(until, self.send(&endpoint, req))
            .await
            .unwrap_or(Err(CallError::TimedOut));
        let resp = match resp {
            Ok(resp) => resp,
            Err(e) => {
                self.count(r, "SubscribeToTask", &Err::<(), _>(e.clone()));
                return Err(e);
            }
        };
        let status = resp.status().as_u16();
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status != 200 || !is_sse {
            // A JSON answer: an error (the task has ended, streaming not offered), or a refusal.
            let retry = retry_after(resp.headers());
            let text = read_capped(resp.into_body()).await?;
            let e = match answer(status, retry, &text) {
                Ok(_) => CallError::BadAnswer("SubscribeToTask answered without a stream".into()),
                Err(e) => not_found(e, id),
            };
            if let CallError::RateLimited(_) = e {
                self.slow_down(r, retry);
            }
            self.count(r, "SubscribeToTask", &Err::<(), _>(e.clone()));
            return Err(e);
        }
        self.count(r, "SubscribeToTask", &Ok(()));
        Ok(Events {
            body: resp.into_body(),
            buf: Vec::new(),
            data: String::new(),
        })
    }

    /// One JSON-RPC call: within the remote's budget, with its bearer, answered within
    /// `deadline` (and at most [`CALL_TIMEOUT`]); the `result`, or why not.
    pub async fn call(
        &self,
        r: &Remote<'_>,
        method: &str,
        params: Value,
        deadline: Instant,
    ) -> Result<Value, CallError> {
        let endpoint = self.endpoint(r, deadline).await?;
        self.spend(r, deadline).await?;
        let req = request(r, &endpoint.url, rpc_body(method, params), false)?;
        let until = deadline.min(Instant::now() + CALL_TIMEOUT);
        let exchange = async {
            let resp = self.send(&endpoint, req).await?;
            let status = resp.status().as_u16();
            let retry = retry_after(resp.headers());
            let text = read_capped(resp.into_body()).await?;
            Ok::<_, CallError>((status, retry, text))
        };
        let out = match tokio::time::timeout_at(until, exchange).await {
            Err(_) => Err(CallError::TimedOut),
            Ok(Err(e)) => Err(e),
            Ok(Ok((status, retry, text))) => {
                let out = answer(status, retry, &text);
                if let Err(CallError::RateLimited(_)) = &out {
                    self.slow_down(r, retry);
                }
                out
            }
        };
        self.count(r, method, &out);
        out
    }

    /// Where `r`'s JSON-RPC goes: its URL, or the interface its card names.
    pub async fn endpoint(&self, r: &Remote<'_>, deadline: Instant) -> Result<Endpoint, CallError> {
        if !r.config.card {
            return Ok(Endpoint {
                url: r.config.url.clone(),
                streaming: false,
                guarded: false,
            });
        }
        let key = r.config.url.to_string();
        let cached = self.lock_cards().get(&key).cloned();
        if let Some(c) = &cached
            && c.read_at.elapsed() < CARD_FRESH
        {
            return Ok(c.endpoint.clone());
        }
        let read = tokio::time::timeout_at(
            deadline.min(Instant::now() + CALL_TIMEOUT),
            self.read_card(r, cached.as_ref().and_then(|c| c.etag.clone())),
        )
        .await
        .unwrap_or(Err(CallError::TimedOut));
        let card = match read {
            // 304: the card is as it was.
            Ok(None) => match cached {
                Some(mut c) => {
                    c.read_at = Instant::now();
                    c
                }
                None => return Err(CallError::Card("304 to a first read".into())),
            },
            Ok(Some(c)) => c,
            // A card that cannot be read now: the last one read serves meanwhile.
            Err(e) => match cached {
                Some(c) => {
                    tracing::warn!(remote = %r.label, error = %e, "cannot re-read the remote agent's card; using the last one read");
                    return Ok(c.endpoint);
                }
                None => return Err(e),
            },
        };
        self.lock_cards().insert(key, card.clone());
        Ok(card.endpoint)
    }

    /// GETs the card (conditionally, with the ETag held); `None` for 304.
    async fn read_card(
        &self,
        r: &Remote<'_>,
        etag: Option<String>,
    ) -> Result<Option<Card>, CallError> {
        let mut req = http::Request::get(r.config.url.clone()).header(ACCEPT, "application/json");
        if let Some(t) = &etag {
            req = req.header(IF_NONE_MATCH, t.as_str());
        }
        if let Some(b) = &r.config.bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {}", b.expose()));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| CallError::Card(e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| CallError::Unreachable(error_chain(&e)));
        self.count(r, "card", &resp);
        let resp = resp?;
        let status = resp.status().as_u16();
        if status == 304 {
            return Ok(None);
        }
        let new_tag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = read_capped(resp.into_body()).await?;
        if status != 200 {
            return Err(CallError::Http {
                status,
                detail: detail(&text),
            });
        }
        let card: Value =
            serde_json::from_str(&text).map_err(|e| CallError::Card(format!("not JSON: {e}")))?;
        let endpoint = card_endpoint(&r.config.url, &card)?;
        if endpoint.guarded {
            ssrf::check_url(&endpoint.url.to_string(), false)
                .await
                .map_err(|e| CallError::Card(format!("its interface {}: {e}", endpoint.url)))?;
        }
        if etag.is_some() {
            tracing::info!(remote = %r.label, "the remote agent's card changed; re-read");
        }
        Ok(Some(Card {
            endpoint,
            etag: new_tag,
            read_at: Instant::now(),
            about: remote::card_about(&card),
        }))
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, CallError> {
        let resp = if endpoint.guarded {
            self.public.request(req).await
        } else {
            self.http.request(req).await
        };
        resp.map_err(|e| CallError::Unreachable(error_chain(&e)))
    }

    /// Takes one call from `r`'s budget, waiting for one to free up; `RateLimited` if none
    /// does before `deadline`.
    async fn spend(&self, r: &Remote<'_>, deadline: Instant) -> Result<(), CallError> {
        let key = r.config.url.to_string();
        let per_minute = r.config.max_calls_per_minute.max(1) as usize;
        loop {
            let taken = {
                let mut all = self.lock_budgets();
                let b = all.entry(key.clone()).or_default();
                b.take(Instant::now(), per_minute)
            };
            let Err(wait_until) = taken else {
                return Ok(());
            };
            if wait_until > deadline {
                return Err(CallError::RateLimited(format!(
                    "no call left in its budget of {per_minute} a minute before the deadline"
                )));
            }
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// The remote asked to slow down: no call to it until `retry_after` (or a default) passes.
    fn slow_down(&self, r: &Remote<'_>, retry_after: Option<Duration>) {
        let wait = retry_after.unwrap_or(DEFAULT_SLOW_DOWN).min(WINDOW);
        let mut all = self.lock_budgets();
        let b = all.entry(r.config.url.to_string()).or_default();
        b.slow_down(Instant::now(), wait);
    }

    /// Counts a call's outcome under its remote and method.
    fn count<T>(&self, r: &Remote<'_>, method: &str, out: &Result<T, CallError>) {
        let outcome = match out {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        crate::metrics::get()
            .a2a_calls
            .get_or_create(&crate::metrics::RemoteCall {
                remote: r.label.to_owned(),
                method: method.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    fn lock_budgets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Budget>> {
        self.budgets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_cards(&self) -> std::sync::MutexGuard<'_, HashMap<String, Card>> {
        self.cards.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A remote as one caller names it: the config's settings, and the metrics label
/// (`route:NAME`, `peer:NAME`).
#[derive(Debug, Clone, Copy)]
pub struct Remote<'a> {
    pub config: &'a A2aRemote,
    pub label: &'a str,
}

/// A stream of task events (Server-Sent Events, one JSON-RPC response per `data:`).
pub struct Events {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    data: String,
}

impl Events {
    /// The next event; `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, CallError>> {
        loop {
            while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if self.data.is_empty() {
                        continue;
                    }
                    let data = std::mem::take(&mut self.data);
                    return Some(event(&data));
                }
                if let Some(d) = line.strip_prefix("data:") {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            if self.buf.len() + self.data.len() > MAX_ANSWER_BYTES {
                return Some(Err(CallError::BadAnswer(format!(
                    "a stream event over {MAX_ANSWER_BYTES} bytes"
                ))));
            }
            match self.body.frame().await {
                None => return None,
                Some(Err(e)) => return Some(Err(CallError::Unreachable(e.to_string()))),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }
}

fn event(data: &str) -> Result<StreamEvent, CallError> {
    let v: Value =
        serde_json::from_str(data).map_err(|e| CallError::BadAnswer(format!("an event: {e}")))?;
    match remote::parse_answer(&v).map_err(CallError::BadAnswer)? {
        Answer::Result(r) => remote::parse_stream_event(&r).map_err(CallError::BadAnswer),
        Answer::Error { code, message } => Err(rpc_error(code, message)),
    }
}

fn rpc_body(method: &str, params: Value) -> Bytes {
    let id = crate::model::new_id();
    Bytes::from(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string())
}

fn request(
    r: &Remote<'_>,
    url: &http::Uri,
    body: Bytes,
    stream: bool,
) -> Result<http::Request<Full<Bytes>>, CallError> {
    let mut req = http::Request::post(url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header("a2a-version", "1.0")
        .header(
            ACCEPT,
            if stream {
                "text/event-stream"
            } else {
                "application/json"
            },
        );
    if let Some(b) = &r.config.bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {}", b.expose()));
    }
    req.body(Full::new(body))
        .map_err(|e| CallError::BadAnswer(format!("cannot build the request: {e}")))
}

/// What an answer's status and body say.
fn answer(status: u16, retry_after: Option<Duration>, text: &str) -> Result<Value, CallError> {
    if status == 429 {
        let when = retry_after.map_or(String::new(), |d| format!(" (retry after {d:?})"));
        return Err(CallError::RateLimited(format!("HTTP 429{when}")));
    }
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    if status != 200 {
        // Some servers answer JSON-RPC errors with a 4xx/5xx; read them when they do.
        if let Some(Ok(Answer::Error { code, message })) = parsed.as_ref().map(remote::parse_answer)
            && remote::is_rate_limited(code, &message)
        {
            return Err(CallError::RateLimited(message));
        }
        return Err(CallError::Http {
            status,
            detail: detail(text),
        });
    }
    let Some(v) = parsed else {
        return Err(CallError::BadAnswer("not JSON".into()));
    };
    match remote::parse_answer(&v).map_err(CallError::BadAnswer)? {
        Answer::Result(r) => Ok(r),
        Answer::Error { code, message } => Err(rpc_error(code, message)),
    }
}

fn rpc_error(code: i64, message: String) -> CallError {
    if remote::is_rate_limited(code, &message) {
        CallError::RateLimited(message)
    } else if code == remote::TASK_NOT_FOUND {
        CallError::TaskNotFound(message)
    } else {
        CallError::Rpc { code, message }
    }
}

/// A task-not-found error names the task the call asked for.
fn not_found(e: CallError, id: &str) -> CallError {
    match e {
        CallError::TaskNotFound(_) => CallError::TaskNotFound(id.to_owned()),
        other => other,
    }
}

/// The interface a card names for JSON-RPC (v1.0's `supportedInterfaces`, else 0.3's `url`), and
/// whether it is at the card's own origin.
fn card_endpoint(card_url: &http::Uri, card: &Value) -> Result<Endpoint, CallError> {
    let streaming = card["capabilities"]["streaming"].as_bool().unwrap_or(false);
    let from_list = card["supportedInterfaces"].as_array().and_then(|list| {
        list.iter().find_map(|i| {
            let binding = i["protocolBinding"].as_str().unwrap_or("JSONRPC");
            let version = i["protocolVersion"].as_str().unwrap_or("1.0");
            (binding.eq_ignore_ascii_case("JSONRPC") && version.starts_with('1'))
                .then(|| i["url"].as_str())
                .flatten()
        })
    });
    let legacy = card["url"].as_str().filter(|_| {
        card["preferredTransport"]
            .as_str()
            .is_none_or(|t| t.eq_ignore_ascii_case("JSONRPC"))
    });
    let Some(url) = from_list.or(legacy) else {
        return Err(CallError::Card(
            "it names no JSON-RPC interface for A2A 1.0".into(),
        ));
    };
    let url: http::Uri = url
        .parse()
        .map_err(|_| CallError::Card(format!("its interface URL {url:?} is not a URL")))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        return Err(CallError::Card(format!(
            "its interface URL {url} is not http(s)"
        )));
    }
    let same_origin = url.scheme() == card_url.scheme()
        && url.host() == card_url.host()
        && url.port_u16() == card_url.port_u16();
    Ok(Endpoint {
        url,
        streaming,
        guarded: !same_origin,
    })
}

fn retry_after(h: &http::HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

async fn read_capped(body: hyper::body::Incoming) -> Result<String, CallError> {
    match Limited::new(body, MAX_ANSWER_BYTES).collect().await {
        Ok(b) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
        Err(e) => Err(CallError::BadAnswer(format!(
            "the body could not be read within {MAX_ANSWER_BYTES} bytes: {e}"
        ))),
    }
}

/// A short, one-line excerpt of an error body, for the turn's record.
fn detail(text: &str) -> String {
    let v: Option<Value> = serde_json::from_str(text).ok();
    let msg = v
        .as_ref()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or(v["error"].as_str())
                .or(v["message"].as_str())
        })
        .map_or_else(|| text.to_owned(), str::to_owned);
    crate::model::escape_controls(msg.trim())
        .chars()
        .take(300)
        .collect()
}

/// An error with its sources, one line (a TLS or connect failure says why only in its source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_down_closes_the_budget_then_allows_a_little_less_than_the_remote_saw() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        for i in 0..31 {
            assert_eq!(b.take(t0 + Duration::from_millis(i), 100), Ok(()));
        }
        // The remote (30 a minute) refused the 31st.
        let now = t0 + Duration::from_millis(31);
        b.slow_down(now, Duration::from_secs(10));
        let reopen = now + Duration::from_secs(10);
        assert_eq!(b.take(now + Duration::from_secs(1), 100), Err(reopen));
        // Reopened, but the window still holds 31 calls, more than the 27 now allowed: the next
        // call waits for the oldest to leave the window, instead of all of them going at once.
        assert_eq!(b.take(reopen, 100), Err(t0 + WINDOW));
        let later = t0 + WINDOW + Duration::from_millis(10);
        let allowed = (0..40).filter(|_| b.take(later, 100).is_ok()).count();
        assert_eq!(allowed, 27 - 20, "11 of the 31 left the window");
        // A second slow-down never raises what was learned; after a while it is forgotten.
        b.slow_down(later, Duration::ZERO);
        assert_eq!(b.learned.map(|l| l.0), Some(24));
        let much_later = later + LEARNED_FOR + WINDOW;
        assert_eq!(
            (0..100).filter(|_| b.take(much_later, 100).is_ok()).count(),
            100
        );
    }

    #[test]
    fn a_card_names_its_endpoint_and_whether_it_is_foreign() {
        let at: http::Uri = "http://127.0.0.1:9000/.well-known/agent-card.json"
            .parse()
            .unwrap();
        let own = json!({"supportedInterfaces": [
            {"url": "http://127.0.0.1:9000/a2a/grpc", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
            {"url": "http://127.0.0.1:9000/a2a/v1", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "capabilities": {"streaming": true}});
        let e = card_endpoint(&at, &own).unwrap();
        assert_eq!(e.url, "http://127.0.0.1:9000/a2a/v1");
        assert!(e.streaming && !e.guarded);
        let foreign = json!({"supportedInterfaces": [{"url": "http://10.0.0.7/a2a"}]});
        assert!(card_endpoint(&at, &foreign).unwrap().guarded);
        let legacy = json!({"url": "http://127.0.0.1:9000/rpc", "capabilities": {}});
        let e = card_endpoint(&at, &legacy).unwrap();
        assert!(!e.streaming && !e.guarded);
        assert!(card_endpoint(&at, &json!({"name": "x"})).is_err());
        assert!(card_endpoint(&at, &json!({"url": "file:///etc/passwd"})).is_err());
    }

    #[test]
    fn answers_read_as_results_or_errors() {
        let ok = r#"{"jsonrpc":"2.0","id":"1","result":{"id":"t"}}"#;
        assert_eq!(answer(200, None, ok).unwrap()["id"], "t");
        let limited = r#"{"jsonrpc":"2.0","id":"1","error":{"code":-32000,"message":"Peer is rate limited"}}"#;
        assert!(matches!(
            answer(200, None, limited),
            Err(CallError::RateLimited(_))
        ));
        assert!(matches!(
            answer(429, Some(Duration::from_secs(3)), ""),
            Err(CallError::RateLimited(_))
        ));
        let gone =
            r#"{"jsonrpc":"2.0","id":"1","error":{"code":-32001,"message":"Task not found"}}"#;
        assert!(matches!(
            answer(200, None, gone),
            Err(CallError::TaskNotFound(_))
        ));
        assert!(matches!(
            answer(401, None, "{\"error\":\"bad token\"}"),
            Err(CallError::Http { status: 401, .. })
        ));
        assert!(!answer(401, None, "").unwrap_err().is_transient());
        assert!(answer(503, None, "").unwrap_err().is_transient());
        assert!(matches!(
            answer(200, None, "<html>"),
            Err(CallError::BadAnswer(_))
        ));
    }
}
