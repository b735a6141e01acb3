//! Outbox delivery: POSTs replies to peers' inboxes with retries, backoff and a stable idempotency id.
//!
//! The store is the queue: a delivery is due when its `next_attempt_at` has passed. One loop picks due
//! deliveries, runs at most `max_in_flight` attempts at once, and records each outcome; what is not
//! delivered when the host stops is picked up again on the next start.

pub mod a2a;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use rand::Rng;
use tokio::sync::{Notify, Semaphore, watch};

use crate::a2a_client::error_chain;
use crate::config::{Peer, PeerAuth};
use crate::events::{Event, Events};
use crate::model::{AttemptOutcome, DeliveryState, Outbound, now_ms};
use crate::snapshot::Active;
use crate::store::{DueDelivery, Hold, Store, StoreError};
use crate::tls::HttpsClient;

/// Longest `Retry-After` honoured; a peer asking for more is retried after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long the loop sleeps when nothing is scheduled (a safety net; new work wakes it).
const IDLE_POLL: Duration = Duration::from_secs(30);

/// What one attempt's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: done.
    Delivered,
    /// Connection error, timeout, 408, 429 or 5xx: try again, not before `retry_after` if given.
    Retry {
        /// The peer's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Any other status: retrying would get the same answer.
    GiveUp,
}

/// Classifies a peer's HTTP status.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry { retry_after },
        _ => Verdict::GiveUp,
    }
}

/// Delay before the next attempt after `attempts` attempts, or `None` when the schedule is spent.
///
/// `jitter` in [0, 1) spreads retries by ±10% so peers that come back are not hit all at once; a
/// `Retry-After` longer than the scheduled delay wins.
pub fn next_delay(
    schedule: &[Duration],
    attempts: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let base = *schedule.get(attempts as usize)?;
    let jittered = base.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0));
    Some(match retry_after {
        Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
        None => jittered,
    })
}

/// Parses `Retry-After` given in seconds (the HTTP-date form is ignored: peers here send seconds).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The result of one attempt.
#[derive(Debug)]
struct Attempted {
    status: Option<u16>,
    verdict: Verdict,
    error: Option<String>,
}

async fn attempt(
    client: &HttpsClient,
    peer: &Peer,
    body: Bytes,
    outbound_id: &str,
    timeout: Duration,
) -> Attempted {
    let (Some(url), Some(secret)) = (peer.url.clone(), peer.current_secret()) else {
        return Attempted {
            status: None,
            verdict: Verdict::GiveUp,
            error: Some(format!(
                "peer {} has no url (it only calls this inbox over A2A)",
                peer.name
            )),
        };
    };
    let mut req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", outbound_id)
        .header(
            http::header::USER_AGENT,
            concat!("agent-inbox/", env!("CARGO_PKG_VERSION")),
        );
    req = match &peer.auth {
        PeerAuth::Secret => req.header("x-shared-secret", secret.expose()),
        PeerAuth::StandardWebhooks { sign: keys, .. } => {
            // The id is the outbound message's, the same on every attempt; the timestamp is this
            // attempt's. During a rotation every key signs, the new one first.
            let now = now_ms() / 1000;
            req.header("webhook-id", outbound_id)
                .header("webhook-timestamp", now)
                .header(
                    "webhook-signature",
                    crate::signature::sign(keys, outbound_id, now, &body),
                )
        }
    };
    let req = match req.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => {
            return Attempted {
                status: None,
                verdict: Verdict::GiveUp,
                error: Some(format!("cannot build the request: {e}")),
            };
        }
    };
    exchange(client.request(req), timeout).await
}

/// Waits (within `timeout`) for the answer to a sent request and classifies it.
async fn exchange(
    sent: impl Future<
        Output = Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    >,
    timeout: Duration,
) -> Attempted {
    let exchange = async {
        let resp = sent.await?;
        let status = resp.status().as_u16();
        let ra = retry_after(resp.headers());
        // Read a little of the body for the record, and so the connection can be reused.
        let text = match Limited::new(resp.into_body(), 2048).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        Ok::<_, hyper_util::client::legacy::Error>((status, ra, text))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Attempted {
            status: None,
            verdict: Verdict::Retry { retry_after: None },
            error: Some(format!("no answer within {}s", timeout.as_secs())),
        },
        Ok(Err(e)) => Attempted {
            status: None,
            verdict: Verdict::Retry { retry_after: None },
            error: Some(format!("connection failed: {}", error_chain(&e))),
        },
        Ok(Ok((status, ra, text))) => {
            let verdict = classify(status, ra);
            // The peer's words are kept for the operator, escaped: a body with a CR, LF or a
            // terminal escape would otherwise forge lines in the log, the CLI and the console.
            let error = (verdict != Verdict::Delivered).then(|| {
                let excerpt: String = text.chars().take(300).collect();
                // Another inbox (or any API in its style) says why in `error.code`: named
                // first, since it is what the operator acts on (`unknown_type`: add a route).
                let code = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .filter(|c| c.len() <= 64)
                    .map(|c| format!(" {}", crate::model::escape_controls(&c)))
                    .unwrap_or_default();
                format!(
                    "peer answered {status}{code}: {}",
                    crate::model::escape_controls(&excerpt)
                )
            });
            Attempted {
                status: Some(status),
                verdict,
                error,
            }
        }
    }
}

/// The event that announces `outbound` on its way to `peers`.
fn queued(outbound: &Outbound, peers: &[String]) -> Event {
    Event::OutboundQueued {
        id: outbound.id.clone(),
        in_reply_to: outbound.in_reply_to.clone(),
        thread_id: outbound.thread_id.clone(),
        msg_type: outbound.msg_type.clone(),
        peers: peers.to_vec(),
    }
}

/// Delivers the outbox; [`Relay::enqueue`] gives it new work.
pub struct Relay {
    store: Store,
    active: Active,
    events: Events,
    client: HttpsClient,
    /// For push URLs a client gave: reaches public addresses only.
    public: crate::ssrf::PublicClient,
    wake: Notify,
    slots: Arc<Semaphore>,
    /// For peers that are A2A agents, shared with the scheduler (one budget per remote).
    a2a: Arc<crate::a2a_client::A2aClient>,
}

impl Relay {
    /// A relay over `store`, reading peers and the schedule from the active snapshot.
    pub fn new(
        store: Store,
        active: Active,
        events: Events,
        max_in_flight: usize,
        a2a: Arc<crate::a2a_client::A2aClient>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            active,
            events,
            client: crate::tls::client(),
            public: crate::ssrf::public_client(),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(max_in_flight)),
            a2a,
        })
    }

    /// Records an outbound message with a delivery to each peer, and starts delivering it.
    pub async fn enqueue(&self, outbound: Outbound, peers: Vec<String>) -> Result<(), StoreError> {
        let event = queued(&outbound, &peers);
        self.store.insert_outbound(outbound, peers, None).await?;
        self.events.publish(event);
        self.wake();
        Ok(())
    }

    /// Records an agent's reply (held for a person if `hold`), fenced by its attempt; `false` if
    /// that attempt was superseded (nothing written). A reply not held is announced and
    /// delivered like [`Relay::enqueue`]'s.
    pub async fn enqueue_reply(
        &self,
        outbound: Outbound,
        peers: Vec<String>,
        hold: Option<Hold>,
        attempt: crate::store::Lease,
    ) -> Result<bool, StoreError> {
        let held = hold.is_some();
        let event = queued(&outbound, &peers);
        if !self
            .store
            .insert_reply(outbound, peers, hold, attempt)
            .await?
        {
            return Ok(false);
        }
        if !held {
            self.events.publish(event);
            self.wake();
        }
        Ok(true)
    }

    /// Records an outbound message whose deliveries wait for a person ([`Relay::released`]
    /// starts them once approved). Nothing is announced: the reply is not on its way yet.
    pub async fn hold(
        &self,
        outbound: Outbound,
        peers: Vec<String>,
        hold: Hold,
    ) -> Result<(), StoreError> {
        self.store
            .insert_outbound(outbound, peers, Some(hold))
            .await
    }

    /// Announces a held outbound message a person approved (its deliveries are due now) and
    /// starts delivering it.
    pub fn released(&self, outbound: &Outbound, peers: Vec<String>) {
        self.events.publish(queued(outbound, &peers));
        self.wake();
    }

    /// Tells the loop that something may be due (e.g. a dead letter made due again).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown` turns true; attempts still in flight then are retried on the next start.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = self.dispatch_due().await {
                tracing::error!(error = %e, "relay: cannot read due deliveries");
            }
            // Deliveries already due are in flight or waiting for a slot, and a finished attempt wakes
            // us; so sleep until the next one that is not due yet.
            let now = now_ms();
            let sleep = match self.store.next_due(now).await {
                Ok(Some(at)) => Duration::from_millis((at - now).max(1) as u64).min(IDLE_POLL),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn dispatch_due(self: &Arc<Self>) -> Result<(), StoreError> {
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        // Claimed deliveries are ours until their attempt is recorded, so none is sent twice at
        // once; at most `free` are claimed, so each gets a slot.
        for d in self.store.claim_deliveries(now_ms(), free).await? {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                // Cannot happen (only this loop takes slots); give the claim back all the same.
                self.store.release_delivery(&d.outbound.id, &d.peer).await?;
                continue;
            };
            let relay = self.clone();
            tokio::spawn(async move {
                relay.deliver(d).await;
                drop(permit);
                relay.wake();
            });
        }
        Ok(())
    }

    async fn deliver(&self, d: DueDelivery) {
        let snap = self.active.load_full();
        let relay_cfg = &snap.config.relay;
        let n = d.attempts + 1;
        let started = std::time::Instant::now();
        let push = crate::model::parse_push_target(&d.peer);
        let config = match push {
            Some((task, id)) => self.store.push_config(task, id).await,
            None => Ok(None),
        };
        let record = match (push, config, snap.config.peers.get(&d.peer)) {
            (Some(_), Err(e), _) => {
                tracing::error!(error = %e, "relay: cannot read a push config");
                if let Err(e) = self.store.release_delivery(&d.outbound.id, &d.peer).await {
                    tracing::error!(error = %e, "cannot release a delivery; it is retried after a restart");
                }
                return;
            }
            (Some(_), Ok(None), _) => AttemptOutcome::Dead {
                status: None,
                error: "the push config was deleted".into(),
            },
            (Some(_), Ok(Some(config)), _) => {
                let allow_private = snap
                    .config
                    .a2a
                    .as_ref()
                    .is_some_and(|a| a.allow_private_push_urls);
                let a = self
                    .push(
                        &config,
                        &d.outbound,
                        allow_private,
                        relay_cfg.attempt_timeout,
                    )
                    .await;
                self.outcome(a, &relay_cfg.retry_schedule, n)
            }
            (None, _, None) => AttemptOutcome::Dead {
                status: None,
                error: format!("peer {:?} is no longer in the config", d.peer),
            },
            (
                None,
                _,
                Some(
                    peer @ Peer {
                        a2a_out: Some(a), ..
                    },
                ),
            ) => {
                let a = a2a::attempt(
                    &self.a2a,
                    &self.store,
                    peer,
                    a,
                    &d.outbound,
                    &d.thread_alias,
                    relay_cfg.attempt_timeout,
                )
                .await;
                self.outcome(a, &relay_cfg.retry_schedule, n)
            }
            (None, _, Some(peer)) => {
                // A peer with its own CA has its own client (built with the snapshot).
                let client = snap.peer_clients.get(&d.peer).unwrap_or(&self.client);
                let a = attempt(
                    client,
                    peer,
                    crate::wire::relayed(&d.outbound, &d.thread_alias),
                    &d.outbound.id,
                    relay_cfg.attempt_timeout,
                )
                .await;
                self.outcome(a, &relay_cfg.retry_schedule, n)
            }
        };
        match &record {
            AttemptOutcome::Delivered { status } => tracing::info!(
                outbound = %d.outbound.id, peer = %d.peer, attempt = n, status, "delivered"
            ),
            AttemptOutcome::Retry {
                status,
                error,
                next_at,
            } => tracing::warn!(
                outbound = %d.outbound.id, peer = %d.peer, attempt = n, ?status, %error,
                retry_in_ms = next_at - now_ms(), "delivery failed; will retry"
            ),
            AttemptOutcome::Dead { status, error } => tracing::error!(
                outbound = %d.outbound.id, peer = %d.peer, attempt = n, ?status, %error, "delivery failed for good: dead letter"
            ),
        }
        let (state, status, error) = match &record {
            AttemptOutcome::Delivered { status } => (DeliveryState::Delivered, Some(*status), None),
            AttemptOutcome::Retry { status, error, .. } => {
                (DeliveryState::Retrying, *status, Some(error))
            }
            AttemptOutcome::Dead { status, error } => (DeliveryState::Dead, *status, Some(error)),
        };
        // What the feed says of the failure: one bounded line (a NOTIFY carries the event).
        let error = error.map(|e| {
            crate::model::escape_controls(&e.chars().take(300).collect::<String>()).into_owned()
        });
        // Every push target counts as one peer: a label per task would be unbounded.
        let peer = if push.is_some() {
            "a2a-push"
        } else {
            d.peer.as_str()
        };
        let metrics = crate::metrics::get();
        metrics
            .attempts
            .get_or_create(&crate::metrics::PeerOutcome {
                peer: peer.to_owned(),
                outcome: match state {
                    DeliveryState::Delivered => "delivered",
                    DeliveryState::Retrying | DeliveryState::Pending => "retry",
                    DeliveryState::Dead => "dead",
                    // Not outcomes of an attempt; listed so a new state is a compile error here.
                    DeliveryState::Held | DeliveryState::Withheld => "other",
                }
                .to_owned(),
            })
            .inc();
        metrics
            .attempt_seconds
            .get_or_create(&crate::metrics::Peer {
                peer: peer.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        match self
            .store
            .record_attempt(&d.outbound.id, &d.peer, record)
            .await
        {
            Ok(()) => self.events.publish(Event::DeliveryAttempted {
                id: d.outbound.id.clone(),
                peer: d.peer.clone(),
                thread_id: Some(d.outbound.thread_id.clone()),
                attempt: n,
                state,
                status,
                error,
            }),
            Err(e) => {
                // The delivery stays due in the store, so it is tried again: at least once, never
                // lost.
                tracing::error!(outbound = %d.outbound.id, peer = %d.peer, error = %e, "cannot record a delivery attempt");
                if let Err(e) = self.store.release_delivery(&d.outbound.id, &d.peer).await {
                    tracing::error!(error = %e, "cannot release a delivery; it is retried after a restart");
                }
            }
        }
    }

    /// The attempt's record: delivered, dead, or retried on the schedule (`n` attempts made).
    fn outcome(&self, a: Attempted, schedule: &[Duration], n: u32) -> AttemptOutcome {
        match a.verdict {
            Verdict::Delivered => AttemptOutcome::Delivered {
                status: a.status.unwrap_or(200),
            },
            Verdict::GiveUp => AttemptOutcome::Dead {
                status: a.status,
                error: a.error.unwrap_or_default(),
            },
            Verdict::Retry { retry_after } => {
                let jitter = rand::rng().random::<f64>();
                match next_delay(schedule, n, retry_after, jitter) {
                    Some(delay) => AttemptOutcome::Retry {
                        status: a.status,
                        error: a.error.unwrap_or_default(),
                        next_at: now_ms() + delay.as_millis() as i64,
                    },
                    None => AttemptOutcome::Dead {
                        status: a.status,
                        error: format!(
                            "gave up after {n} attempt{}: {}",
                            if n == 1 { "" } else { "s" },
                            a.error.unwrap_or_default()
                        ),
                    },
                }
            }
        }
    }

    /// One push: the outbound message's payload (a `StreamResponse`) POSTed to the config's URL
    /// with its credentials, through the client that reaches only public addresses unless
    /// `allow_private`.
    async fn push(
        &self,
        config: &crate::model::PushConfig,
        outbound: &Outbound,
        allow_private: bool,
        timeout: Duration,
    ) -> Attempted {
        let give_up = |error: String| Attempted {
            status: None,
            verdict: Verdict::GiveUp,
            error: Some(error),
        };
        let Ok(uri) = config.url.parse::<http::Uri>() else {
            return give_up(format!("{:?} is not a URL", config.url));
        };
        if !allow_private && crate::ssrf::literal_not_public(&uri) {
            return give_up(format!("{uri} is not a public address"));
        }
        let mut req = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/a2a+json")
            .header("idempotency-key", outbound.id.as_str())
            .header(
                http::header::USER_AGENT,
                concat!("agent-inbox/", env!("CARGO_PKG_VERSION")),
            );
        if let (Some(scheme), Some(credentials)) = (&config.auth_scheme, &config.credentials) {
            req = req.header(
                http::header::AUTHORIZATION,
                format!("{scheme} {credentials}"),
            );
        }
        if let Some(token) = &config.token {
            req = req.header("x-a2a-notification-token", token.as_str());
        }
        let req = match req.body(Full::new(Bytes::from(outbound.payload.clone()))) {
            Ok(r) => r,
            Err(_) => return give_up("the push's headers are not valid HTTP".into()),
        };
        if allow_private {
            exchange(self.client.request(req), timeout).await
        } else {
            exchange(self.public.request(req), timeout).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let ra = Some(Duration::from_secs(7));
        let cases = [
            (200, Verdict::Delivered),
            (202, Verdict::Delivered),
            (408, Verdict::Retry { retry_after: ra }),
            (429, Verdict::Retry { retry_after: ra }),
            (500, Verdict::Retry { retry_after: ra }),
            (503, Verdict::Retry { retry_after: ra }),
            (400, Verdict::GiveUp),
            (401, Verdict::GiveUp),
            (404, Verdict::GiveUp),
            (410, Verdict::GiveUp),
            (422, Verdict::GiveUp),
            (301, Verdict::GiveUp),
        ];
        for (status, want) in cases {
            assert_eq!(classify(status, ra), want, "{status}");
        }
    }

    #[test]
    fn delays_follow_the_schedule_with_jitter_and_retry_after() {
        let s = [0, 5, 300].map(Duration::from_secs);
        // After the first attempt the second entry applies.
        assert_eq!(next_delay(&s, 1, None, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(
            next_delay(&s, 1, None, 0.0),
            Some(Duration::from_millis(4500))
        );
        assert_eq!(
            next_delay(&s, 1, None, 1.0),
            Some(Duration::from_millis(5500))
        );
        assert_eq!(next_delay(&s, 2, None, 0.5), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(&s, 3, None, 0.5), None, "schedule spent");
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(60)), 0.5),
            Some(Duration::from_secs(60)),
            "a longer Retry-After wins"
        );
        assert_eq!(
            next_delay(&s, 2, Some(Duration::from_secs(1)), 0.5),
            Some(Duration::from_secs(300)),
            "a shorter one does not"
        );
    }
}
