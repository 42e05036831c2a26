//! The accept loop: every TCP connection (through TLS when configured)
//! served by hyper's HTTP/1 server with a header-read timeout, each
//! request under the request timeout, with its peer address in the
//! request's extensions (`ConnectInfo`, read only by `api::client_addr`);
//! graceful shutdown when the shutdown future resolves.
//!
//! Why not `axum::serve`: it offers neither TLS nor a header-read timeout,
//! so a client that sends its headers one byte a second would hold its
//! connection (and a task) for ever.

use crate::edge::Edge;
use crate::error::ApiError;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// connections in flight finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    edge: &Edge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = match &edge.tls {
        Some(files) => {
            Some(crate::tls::acceptor(files).map_err(|e| std::io::Error::other(format!("{e:#}")))?)
        }
        None => None,
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(edge.header_read_timeout);
    let request_timeout = edge.request_timeout;
    let handshake_timeout = edge.header_read_timeout;
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: the listener is
                    // fine, a moment later there is room again.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req| handle(app.clone(), peer, request_timeout, req));
        let http = http.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => match handshake(&tls, stream, handshake_timeout).await {
                    Some(stream) => {
                        watcher
                            .watch(http.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                    None => return,
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The TLS handshake, bounded like the headers that follow it.
async fn handshake(
    tls: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// One request: the peer address added, the answer started within
/// `limit` (a request that takes longer, body reading included, is
/// answered 408).
async fn handle(
    app: Router,
    peer: SocketAddr,
    limit: Duration,
    mut req: hyper::Request<Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    req.extensions_mut().insert(ConnectInfo(peer));
    match tokio::time::timeout(limit, app.oneshot(req)).await {
        Ok(answer) => answer,
        Err(_) => Ok(axum::response::IntoResponse::into_response(
            ApiError::Timeout(format!(
                "the request took longer than {} s; send it faster or in smaller parts",
                limit.as_secs()
            )),
        )),
    }
}
