//! The accept loop: connection limits, HTTP/1.1 per connection, graceful drain on shutdown.
//!
//! A permit is taken *before* `accept`, so past `max_connections` new clients wait in the kernel's
//! backlog instead of costing memory here. Once half the permits are taken, an address that already
//! holds `max_connections_per_ip` connections gets no more (trusted proxies excepted), so a client
//! that opens thousands of idle or half-sent connections cannot starve the others, while a busy
//! client on a quiet server is never turned away. On shutdown the listener closes
//! first, then hyper finishes the requests in flight on each connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http;
use crate::http::Door;

/// How long a client may take to send its request headers (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests in flight get to finish after shutdown starts.
const DRAIN_REQUESTS: Duration = Duration::from_secs(10);

/// Open connections per client address.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    /// Counts a new connection from `ip`, unless `pressed` (permits are running short) and it
    /// already has `cap` (0: no cap).
    fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize, pressed: bool) -> Option<AddressSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if pressed && cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.clone(),
            ip,
        })
    }
}

/// One connection's place in its address's count; given back when the connection ends.
struct AddressSlot {
    counts: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves one HTTP/1.1 connection over `io` (TCP, or TLS over TCP) until it ends, or until the
/// graceful shutdown `watcher` belongs to ends it.
async fn connection<I>(
    io: I,
    door: Arc<Door>,
    remote: IpAddr,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| http::handle(door.clone(), remote, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    watcher.watch(conn).await
}

/// Serves until `shutdown` completes, then drains the connections.
pub async fn serve(
    listener: TcpListener,
    door: Arc<Door>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let per_address = Arc::new(PerAddress::default());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed; a closed semaphore would mean we are done anyway
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning; the permit is released here.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // One look at the snapshot in force per connection: its per-address cap, and its TLS
        // (so a renewed certificate serves from the next connection on).
        let (cap, tls) = {
            let snap = door.inbox().snapshot();
            let server = &snap.config.server;
            let proxy = server
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&remote.ip()));
            let cap = if proxy {
                0
            } else {
                server.max_connections_per_ip
            };
            (cap, snap.tls.clone())
        };
        let pressed = permits.available_permits() < max_connections / 2;
        let Some(slot) = per_address.admit(remote.ip(), cap, pressed) else {
            // Closed at once: the permit goes back, and the address's other connections go on.
            tracing::debug!(client = %remote.ip(), cap, "too many connections from one address");
            continue;
        };
        // Acks are small; waiting for Nagle would add latency to every one.
        let _ = stream.set_nodelay(true);
        let door = door.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let ip = remote.ip();
            let served = match tls {
                None => connection(stream, door, ip, watcher).await,
                Some(config) => {
                    // The handshake counts against the header timeout, so a client that stalls
                    // in it holds its permit no longer than one that stalls in its headers.
                    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(HEADER_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => connection(tls, door, ip, watcher).await,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %remote.ip(), error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(client = %remote.ip(), "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; draining requests in flight");
    if tokio::time::timeout(DRAIN_REQUESTS, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {}s; closing",
            DRAIN_REQUESTS.as_secs()
        );
    }
}
