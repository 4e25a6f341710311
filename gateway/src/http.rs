//! Serving the API over HTTP/1.1 with the limits `axum::serve` does not set: a deadline for each
//! request's headers (hyper's `header_read_timeout`, which needs a timer that `axum::serve` does
//! not give it, so a client trickling headers would otherwise hold a connection for ever), and
//! the listener gate's caps on connections per source address and in all.
//!
//! Each request carries the peer's address as `ConnectInfo<SocketAddr>`, so handlers can
//! throttle by source.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use wardengate_protocols::listener::{accept_loop, Gate};

/// Serve `router` on `listener` (over TLS with `tls`) until `shutdown`; then let requests in
/// flight finish (up to `drain`).
pub async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    router: Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let header_timeout = gate.limits().auth_timeout;
    let tracker = TaskTracker::new();
    let stop = shutdown.clone();
    accept_loop(
        listener,
        gate,
        tracker.clone(),
        shutdown,
        move |socket, peer, slot| {
            let router = router.clone();
            let stop = stop.clone();
            let tls = tls.clone();
            async move {
                // The slot is held for the connection's life: API connections count per source
                // whether or not they carry a valid token.
                let _ = socket.set_nodelay(true);
                match tls {
                    None => connection(socket, peer, router, header_timeout, stop).await,
                    Some(acceptor) => {
                        // The handshake is before the headers: the same deadline.
                        match slot.within(acceptor.accept(socket)).await {
                            Some(Ok(s)) => connection(s, peer, router, header_timeout, stop).await,
                            Some(Err(e)) => tracing::debug!(%peer, "api TLS handshake failed: {e}"),
                            None => tracing::debug!(%peer, "api TLS handshake timed out"),
                        }
                    }
                }
                drop(slot);
            }
        },
    )
    .await;
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!("some API connections did not finish within {drain:?}");
    }
}

/// One HTTP/1.1 connection (plain or TLS) until it ends or the gateway stops.
async fn connection<S>(
    socket: S,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        router.call(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    let conn = builder
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "api connection ended: {e}");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The peer address of a request (set by [`serve`]); unspecified when absent (tests calling
/// the router directly).
pub fn peer<B>(req: &axum::http::Request<B>) -> SocketAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Who is asking: the peer, or — when the peer is one of `[api] trusted_proxies` and says whom
/// it forwards — that address (port 0). What the sign-in and token guards count, and what the
/// audit names; a trusted proxy without a usable `X-Forwarded-For` is itself the source.
pub fn client<B>(cfg: &crate::config::Loaded, req: &axum::http::Request<B>) -> SocketAddr {
    let peer = peer(req);
    let trusted = crate::access::trusted(cfg);
    if trusted.is_empty() {
        return peer;
    }
    crate::access::client_address(peer, req.headers(), &trusted)
        .map(|ip| SocketAddr::new(ip, 0))
        .unwrap_or(peer)
}
