//! Accepting connections: axum's `serve` loop, plus the one thing it cannot
//! be told — a deadline for a request's head. Without one, a client that
//! sends half a header block and then nothing (slowloris) holds its
//! connection open forever; with it, hyper closes such a connection after
//! `header_read_timeout`.
//!
//! The deadline is hyper's own header-read timeout, on tokio's timer
//! (`hyper_util::rt::TokioTimer`: a tokio sleep for each request head; a
//! timer of our own saved too little to keep, as last measured:
//! `docs/performance.md#hand-written-fast-paths--ledger`). It runs from the
//! moment a connection is served, so a client that connects and sends
//! nothing is closed too: the connection is hyper's HTTP/1 server itself,
//! not hyper-util's auto-detecting one, which first waits for bytes to tell
//! HTTP/1 from HTTP/2 (the service speaks HTTP/1 only) with no deadline.
//!
//! Each connection is served by hyper's HTTP/1 server with TCP_NODELAY,
//! the peer address as `ConnectInfo` (for the per-IP limit), and graceful
//! shutdown: when `stop` is cancelled the listener closes, connections
//! without a request in flight close (idle, or not yet past a first head),
//! the in-flight requests finish, and `serve` returns once every connection
//! has ended. When `abort` is cancelled too (the shutdown grace is over), the
//! connections still open are dropped with their requests, here and now,
//! while the process can still count and log each (as a 499), not later with
//! the runtime. Knows nothing of routes: it serves any service.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What bounds a listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest wait for a request's head.
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    stop: CancellationToken,
    abort: CancellationToken,
    limits: ConnectionLimits,
) where
    S: tower::Service<Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    // Every connection task holds a receiver; `closed()` resolves when all are gone.
    let (all_closed, connection) = tokio::sync::watch::channel(());
    let ConnectionLimits { header_read_timeout, max_connections } = limits;
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let slot = tokio::select! {
            slot = open.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        // Set once hyper has read the connection's first request head (it
        // calls the service at once): until then nothing is owed (below).
        let asked = std::sync::Arc::new(AtomicBool::new(false));
        let seen = asked.clone();
        let service = app.clone().map_request(move |req: Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let (stop, abort, connection) = (stop.clone(), abort.clone(), connection.clone());
        tokio::spawn(async move {
            // Owns the connection, and with it the request in flight: when
            // `abort` wins, both are dropped before `connection` says so.
            let served = async move {
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .with_upgrades();
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.cancelled() => {
                        // hyper closes an idle kept-alive connection at once
                        // and finishes a request in flight first; but a
                        // connection still waiting for its first request (sent
                        // nothing, or half a head) it would keep up to
                        // `header_read_timeout`. Nothing is owed there: closed now.
                        if asked.load(Ordering::Relaxed) {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.as_mut().await;
                        }
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                // The grace is over: the request in flight is dropped here.
                _ = abort.cancelled() => {}
            }
            drop(connection);
            drop(slot);
        });
    }
    drop(listener);
    drop(connection);
    all_closed.closed().await;
}
