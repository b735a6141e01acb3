//! What the hosts of one database tell each other: a connection that `LISTEN`s to
//! `inbox_work` (work queued, deliveries due, cancels, sign-outs) and `inbox_events` (other
//! hosts' events), turned into [`Signal`]s.

use std::time::Duration;

use tokio::sync::broadcast;

/// Something another host (or this one) did that this host may act on, heard through
/// `LISTEN/NOTIFY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A turn of this route became queued.
    Turn(String),
    /// A delivery became due (now or later).
    Delivery,
    /// A running turn was cancelled: the host that runs it stops its agent.
    Cancel(String),
    /// A console session (this id) signed out on some host.
    SignedOut(String),
    /// An event, as JSON, from the process `origin` (`host_id/start id`).
    Event {
        /// Who published it.
        origin: String,
        /// The event.
        json: String,
    },
    /// The listening connection was (re)established: anything may have been missed.
    Resync,
}

/// Signals kept for a slow receiver.
pub(super) const SIGNALS: usize = 1024;

/// Holds a connection that `LISTEN`s to `inbox_work` and `inbox_events` and turns what it hears
/// into [`Signal`]s; reconnects (after a second) when the database goes away, and says `Resync`.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    signals: broadcast::Sender<Signal>,
) {
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                // The connection's messages arrive only while it is polled: poll it beside the
                // LISTEN statement, then on its own.
                let listening = client.batch_execute("LISTEN inbox_work; LISTEN inbox_events");
                tokio::pin!(listening);
                let mut listened = false;
                loop {
                    let message = std::future::poll_fn(|cx| {
                        if !listened && let std::task::Poll::Ready(r) = listening.as_mut().poll(cx)
                        {
                            listened = true;
                            return std::task::Poll::Ready(Some(r.map(|()| None)));
                        }
                        connection.poll_message(cx).map(|m| m.map(|r| r.map(Some)))
                    })
                    .await;
                    match message {
                        Some(Ok(None)) => {
                            let _ = signals.send(Signal::Resync);
                        }
                        Some(Ok(Some(tokio_postgres::AsyncMessage::Notification(n)))) => {
                            let signal = match (n.channel(), n.payload()) {
                                ("inbox_work", "delivery") => Signal::Delivery,
                                ("inbox_work", p) => {
                                    if let Some(route) = p.strip_prefix("turn:") {
                                        Signal::Turn(route.to_owned())
                                    } else if let Some(id) = p.strip_prefix("cancel:") {
                                        Signal::Cancel(id.to_owned())
                                    } else if let Some(id) = p.strip_prefix("signed-out:") {
                                        Signal::SignedOut(id.to_owned())
                                    } else {
                                        continue;
                                    }
                                }
                                ("inbox_events", p) => match p.split_once(' ') {
                                    Some((origin, json)) => Signal::Event {
                                        origin: origin.to_owned(),
                                        json: json.to_owned(),
                                    },
                                    None => continue,
                                },
                                _ => continue,
                            };
                            let _ = signals.send(signal);
                        }
                        Some(Ok(Some(_))) => {}
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "the LISTEN connection failed; reconnecting");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot open the LISTEN connection"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
