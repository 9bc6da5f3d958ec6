//! The api's metrics: HTTP requests by route template, method and status, with their
//! latency; open WebSocket connections; and the backlog (jobs per state, outbox lag,
//! queue depths) read on scrape. Served by [`crate::routes::metrics`].

use std::{sync::Arc, time::Duration, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};

use sqlx::PgPool;

use commcenter_shared::{
    ops::metrics::{self, Backlog, PREFIX, Registry},
    platform::{broker::Topology, settings::BrokerSettings},
};

/// How long a read of the ledger and the queues serves later scrapes.
pub const BACKLOG_MAX_AGE: Duration = Duration::from_secs(5);

/// The route label of a request no route matched: one series for every unknown path,
/// so probing random paths cannot grow the metrics.
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    websocket_connections: Gauge,
    backlog: Backlog,
}

impl ApiMetrics {
    /// A registry of its own; scrapes report the depth of every queue of `topology`.
    pub fn new(pool: PgPool, broker: BrokerSettings, topology: Topology) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(metrics::latency_buckets())) as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (until its headers), by route template and method",
            durations.clone(),
        );
        let websocket_connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "WebSocket connections open on this api instance",
            websocket_connections.clone(),
        );
        let backlog = Backlog::register(&mut registry, pool, broker, topology, BACKLOG_MAX_AGE);
        Self {
            registry,
            requests,
            durations,
            websocket_connections,
            backlog,
        }
    }

    fn record_request(
        &self,
        route: String,
        method: &'static str,
        status: StatusCode,
        took: Duration,
    ) {
        self.durations
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: status.as_u16(),
            })
            .inc();
    }

    /// The text of a scrape: the backlog read again if it is stale, the connection
    /// count as of now.
    pub async fn scrape(&self, websocket_connections: usize) -> String {
        self.websocket_connections
            .set(i64::try_from(websocket_connections).unwrap_or(i64::MAX));
        self.backlog.refresh().await;
        metrics::render(&self.registry)
    }
}

/// Middleware: counts and times every request under its route template (`MatchedPath`),
/// never its raw path, so ids in paths do not make a series each.
pub async fn track(
    State(metrics): State<Arc<ApiMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.record_request(route, method, response.status(), started.elapsed());
    response
}

/// The standard methods by name; any other (clients may send anything) as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(
            method_label(&Method::from_bytes(b"PURGE").unwrap()),
            "other"
        );
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
