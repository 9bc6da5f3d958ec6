//! The HTTP/1.1 accept loop of the api and of the workers' metrics listener, in place of
//! `axum::serve`, which gives no hold on slow clients:
//!
//! - a connection may hold at most `max_connections` at once; beyond, a new one gets
//!   `503` in our JSON shape and is closed at once;
//! - a request's headers must arrive within `header_timeout`, which also bounds how long
//!   an idle keep-alive connection waits for its next request (hyper times every head
//!   it waits for, the first and the following);
//! - (the api bounds each request body's time in its router: `api/src/deadline.rs`).
//!
//! On shutdown it stops accepting, lets each connection finish the request under way,
//! then returns. Upgraded connections (WebSockets) leave this loop's accounting once
//! upgraded: they have limits of their own.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{io::AsyncWriteExt as _, net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::Service;

/// How long the accept loop waits before trying again after the process ran out of
/// file descriptors (or another accept error).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a connection may hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// The answer to a connection over the cap, written before closing it.
fn over_capacity() -> Vec<u8> {
    let body = r#"{"error":{"code":"unavailable","message":"too many connections; try again in a moment"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `make_service(peer)` on every connection accepted from `listener` until
/// `shutdown`, then waits for open requests to end.
pub async fn serve<S, F, B>(
    listener: TcpListener,
    limits: ConnectionLimits,
    make_service: F,
    shutdown: CancellationToken,
) where
    F: Fn(SocketAddr) -> S,
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let (mut stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Refuse fast: say so, close, and spend nothing more on it.
            connections.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    stream.write_all(&over_capacity()).await?;
                    stream.shutdown().await
                })
                .await;
            });
            continue;
        };
        let service = TowerToHyperService::new(make_service(peer));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let connection = connection.with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}
