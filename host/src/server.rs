//! The accept loop: connection limit, HTTP/1.1 per connection, graceful drain on shutdown.
//!
//! A permit is taken *before* `accept`, so past `max_connections` new clients wait in the kernel's
//! backlog instead of costing memory here. On shutdown the listener closes first, then hyper finishes
//! the requests in flight on each connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http;
use crate::inbox::Inbox;

/// How long a client may take to send its request headers (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests in flight get to finish after shutdown starts.
const DRAIN_REQUESTS: Duration = Duration::from_secs(10);

/// Serves until `shutdown` completes, then drains the connections.
pub async fn serve(
    listener: TcpListener,
    inbox: Arc<Inbox>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections));
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
        // Acks are small; waiting for Nagle would add latency to every one.
        let _ = stream.set_nodelay(true);
        let inbox = inbox.clone();
        let svc = service_fn(move |req| http::handle(inbox.clone(), remote.ip(), req));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
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
