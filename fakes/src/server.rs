//! The HTTP plumbing both fakes share: an accept loop that serves each connection itself
//! (so a scripted fault can close one without answering), the log of received requests,
//! the added latency, and a minimal `multipart/*` splitter.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The largest request body a fake reads: above Gmail's 35 MiB upload limit, so that
/// limit is answered in Gmail's own words rather than cut off here.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How long a stopping server lets in-flight requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data valid.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One request as a fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status answered; `None` while in flight or when the connection was dropped.
    pub status: Option<u16>,
}

impl Recorded {
    /// A header's value, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// What every fake observes and every request passes through: the request log and the
/// latency added to each answer.
#[derive(Default)]
pub(crate) struct Observer {
    requests: Mutex<Vec<Recorded>>,
    latency: Mutex<Duration>,
}

impl Observer {
    pub(crate) fn new(latency: Duration) -> Self {
        Self {
            requests: Mutex::default(),
            latency: Mutex::new(latency),
        }
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        lock(&self.requests).clone()
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    fn latency(&self) -> Duration {
        *lock(&self.latency)
    }
}

/// Records every provider request (not the `/_fake/` control API), then delays it by
/// the configured latency.
async fn observe(State(observer): State<Arc<Observer>>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/_fake/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large for the fake",
        )
            .into_response();
    };
    let index = {
        let mut requests = lock(&observer.requests);
        requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: body.clone(),
            status: None,
        });
        requests.len() - 1
    };
    let latency = observer.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    lock(&observer.requests)[index].status = Some(response.status().as_u16());
    response
}

/// Put into every request's extensions: lets a handler close the connection the request
/// came on without answering, as a server that crashes after doing the work would.
#[derive(Clone, Default)]
pub(crate) struct Connection(Arc<Notify>);

impl Connection {
    /// Closes the connection unanswered. Never returns: the connection's task drops this
    /// handler together with the socket.
    pub(crate) async fn drop_unanswered(&self) -> Response {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// A running fake server: stops (gracefully, with a short grace) when dropped or shut down.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Binds `addr` (`None`: 127.0.0.1 on a free port); the fake builds its router knowing
    /// its own URL, then calls [`Server::start`].
    pub(crate) async fn bind(addr: Option<SocketAddr>) -> anyhow::Result<TcpListener> {
        let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        TcpListener::bind(addr)
            .await
            .map_err(|error| anyhow::anyhow!("binding {addr}: {error}"))
    }

    /// Serves `router` (with the observer's layer) on `listener` until stopped.
    pub(crate) fn start(
        listener: TcpListener,
        router: Router,
        observer: Arc<Observer>,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let router = router
            .layer(middleware::from_fn_with_state(observer, observe))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(accept_loop(listener, router, stop.clone(), tasks.clone()));
        Ok(Self { addr, stop, tasks })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (at most a few seconds), returns.
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, self.tasks.wait()).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "fake server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tasks.spawn(serve_connection(stream, router.clone(), stop.clone()));
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, router: Router, stop: CancellationToken) {
    let connection = Connection::default();
    let handle = connection.clone();
    let service = router.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(handle.clone());
        request
    });
    let serving = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(serving);
    tokio::select! {
        result = serving.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "fake server: connection ended with an error");
            }
        }
        // Returning drops `serving` and with it the socket, leaving the request unanswered.
        () = connection.0.notified() => {}
        () = stop.cancelled() => {
            serving.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, serving).await;
        }
    }
}

/// One part of a `multipart/*` body.
pub(crate) struct Part {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl Part {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The media type without parameters, lower-cased (`text/plain` when absent, per RFC 2046).
    pub(crate) fn media_type(&self) -> String {
        self.header("content-type")
            .map_or_else(|| "text/plain".to_owned(), media_type)
    }

    /// The file name from `Content-Disposition` or else from `Content-Type`'s `name`.
    pub(crate) fn file_name(&self) -> Option<String> {
        ["content-disposition", "content-type"]
            .into_iter()
            .filter_map(|header| self.header(header))
            .find_map(|value| {
                parameter(
                    value,
                    if value.contains("filename") {
                        "filename"
                    } else {
                        "name"
                    },
                )
            })
    }
}

/// A header value's media type, lower-cased and without parameters.
pub(crate) fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A parameter (`boundary`, `filename`, …) of a structured header value, unquoted.
pub(crate) fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|item| {
        let (key, value) = item.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// Splits a `multipart/*` body (RFC 2046) into its parts; `None` if it is not well formed.
pub(crate) fn split_multipart(content_type: &str, body: &Bytes) -> Option<Vec<Part>> {
    if !media_type(content_type).starts_with("multipart/") {
        return None;
    }
    let delimiter = format!("--{}", parameter(content_type, "boundary")?);
    let delimiter = delimiter.as_bytes();
    let mut position = find(body, delimiter, 0)?;
    let mut parts = Vec::new();
    loop {
        let after = position + delimiter.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Some(parts);
        }
        let start = after + skip_line_end(&body[after..])?;
        let next = find(body, delimiter, start)?;
        // The CRLF before a delimiter belongs to the delimiter.
        let end = if body[..next].ends_with(b"\r\n") {
            next - 2
        } else {
            next.checked_sub(1)?
        };
        parts.push(parse_part(body.slice(start..end.max(start)))?);
        position = next;
    }
}

fn skip_line_end(rest: &[u8]) -> Option<usize> {
    let line_end = rest.iter().position(|&byte| byte == b'\n')?;
    Some(line_end + 1)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|index| index + from)
}

fn parse_part(raw: Bytes) -> Option<Part> {
    let (header_end, body_start) = match find(&raw, b"\r\n\r\n", 0) {
        Some(index) => (index, index + 4),
        None if raw.starts_with(b"\r\n") => (0, 2),
        None => return None,
    };
    let headers = std::str::from_utf8(&raw[..header_end])
        .ok()?
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Part {
        headers,
        body: raw.slice(body_start..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parts_with_their_headers_and_exact_bodies() {
        let body = Bytes::from_static(
            b"preamble\r\n--b1\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n--b1\r\n\
              Content-Type: image/png\r\nContent-Disposition: attachment; filename=\"x.png\"\r\n\r\n\x89PNG\r\n\r\n--b1--\r\n",
        );
        let parts = split_multipart("multipart/mixed; boundary=b1", &body).expect("well formed");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].media_type(), "application/json");
        assert_eq!(&parts[0].body[..], b"{\"a\":1}");
        assert_eq!(parts[1].file_name().as_deref(), Some("x.png"));
        assert_eq!(&parts[1].body[..], b"\x89PNG\r\n");
    }

    #[test]
    fn refuses_bodies_that_are_not_multipart_or_not_terminated() {
        let body = Bytes::from_static(b"--b1\r\nContent-Type: text/plain\r\n\r\nhello");
        assert!(split_multipart("multipart/mixed; boundary=b1", &body).is_none());
        assert!(split_multipart("application/json", &body).is_none());
        assert!(split_multipart("multipart/mixed", &body).is_none());
    }
}
