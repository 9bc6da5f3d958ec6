//! Building and running the api: the router (a function, so tests can drive it), and
//! the tasks beside it (outbox relay, notifier, presence heartbeat), all stopped by one
//! shutdown token.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context;
use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request},
    middleware,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::{Notify, mpsc},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnFailure, TraceLayer},
};

use commcenter_shared::{
    domain::push::VapidKey,
    ledger::events::{self, Event},
    ledger::jobs::kinds,
    ledger::relay::Relay,
    platform::blob::BlobStore,
    platform::broker::Topology,
    platform::db,
    platform::http_server,
    platform::settings::Settings,
};

use crate::{
    deadline, error,
    group_commit::GroupCommit,
    health::Health,
    limits::Limits,
    metrics::{self, ApiMetrics},
    notifier::{self, Hub, Notifier},
    presence::Presence,
    routes,
};

/// Typing indicators waiting for the notifier to publish them; beyond this many, new
/// ones are dropped (they expire in seconds anyway).
const EPHEMERAL_BUFFER: usize = 1024;

use crate::state::AppState;

pub struct App {
    pub state: AppState,
    listener: TcpListener,
    ephemeral: mpsc::Receiver<Event>,
}

impl App {
    /// Creates the database if needed, applies migrations, binds the listener
    /// (`API_ADDR`; port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.auth.refuse_weak_secret()?;
        db::ensure_database(&settings.database).await?;
        let pool = db::connect(&settings.database).await?;
        db::migrate(&pool).await?;
        let vapid = Arc::new(
            VapidKey::load(&pool, settings.push.vapid_private_key.as_ref())
                .await
                .context("the Web Push key (VAPID_PRIVATE_KEY)")?,
        );
        let listener = listen(settings.http.addr, settings.http.listen_backlog)
            .with_context(|| format!("cannot listen on {} (API_ADDR)", settings.http.addr))?;
        let blobs = Arc::new(BlobStore::from_settings(&settings.storage)?);
        let metrics = Arc::new(ApiMetrics::new(
            pool.clone(),
            settings.broker.clone(),
            topology(&settings),
        ));
        let outbox = Arc::new(Notify::new());
        let presence = Arc::new(Presence::new(
            pool.clone(),
            settings.http.presence_heartbeat,
            settings.http.presence_ttl,
            settings.http.ws_max_per_user,
            outbox.clone(),
        ));
        let (ephemeral, ephemeral_rx) = mpsc::channel(EPHEMERAL_BUFFER);
        let limits = Arc::new(Limits::new(&settings.http.rate_limits));
        let sends = GroupCommit::start(pool.clone());
        let health = Arc::new(Health::new(pool.clone()));
        let state = AppState {
            metrics,
            pool,
            blobs,
            hub: Arc::new(Hub::new(settings.http.ws_buffer)),
            settings: Arc::new(settings),
            broker_up: Arc::new(AtomicBool::new(false)),
            outbox,
            presence,
            ephemeral,
            health,
            limits,
            sends,
            vapid,
        };
        Ok(Self {
            state,
            listener,
            ephemeral: ephemeral_rx,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.settings.http.addr)
    }

    /// Serves until `shutdown`, then stops accepting, finishes open requests and stops
    /// the relay and the notifier.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let settings = self.state.settings.clone();
        let topology = topology(&settings);
        let relay = Relay {
            pool: self.state.pool.clone(),
            broker: settings.broker.clone(),
            topology: topology.clone(),
            settings: settings.relay.clone(),
            kinds: kinds::ALL.iter().map(|k| (*k).to_owned()).collect(),
            wake: self.state.outbox.clone(),
        };
        let relay = tokio::spawn(relay.run(shutdown.clone()));
        // Before the first WebSocket: what the notifier owes them comes after it.
        let start = events::head(&self.state.pool)
            .await
            .context("cannot read the event log's head")?;
        let notifier = Notifier {
            hub: self.state.hub.clone(),
            pool: self.state.pool.clone(),
            start,
            settings: settings.broker.clone(),
            topology,
            broker_up: self.state.broker_up.clone(),
        };
        let notifier = tokio::spawn(notifier::run(notifier, self.ephemeral, shutdown.clone()));
        let presence = tokio::spawn(self.state.presence.clone().run(shutdown.clone()));
        let health = {
            let (health, shutdown) = (self.state.health.clone(), shutdown.clone());
            tokio::spawn(async move { health.run(shutdown).await })
        };
        tracing::info!(%addr, "api listening");
        let stop = shutdown.clone();
        let limits = settings.http.connection_limits();
        let app = router(self.state);
        http_server::serve(
            self.listener,
            limits,
            // The client's address, for the per-address limit.
            move |peer| {
                ServiceBuilder::new()
                    .map_request(move |mut request: axum::http::Request<_>| {
                        request.extensions_mut().insert(ConnectInfo(peer));
                        request
                    })
                    .service(app.clone())
            },
            stop,
        )
        .await;
        presence.await.ok();
        health.await.ok();
        relay.await.ok();
        notifier.await.ok();
        Ok(())
    }
}

/// A listener with `backlog` (`HTTP_LISTEN_BACKLOG`): `TcpListener::bind` gives 128.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `bind` does: a restarted api takes its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

pub fn topology(settings: &Settings) -> Topology {
    Topology::new(
        &settings.broker.prefix,
        settings.jobs.retry_tiers.clone(),
        settings.jobs.delivery_limit,
    )
}

pub fn router(state: AppState) -> Router {
    let max_body = state.settings.http.max_body_bytes;
    routes::router()
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(
            crate::middleware::unstorable_text::refuse_nul_in_url,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::database::refuse_while_down,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::rate_limit::limit,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            deadline::body_deadline,
        ))
        .layer(middleware::from_fn(error::method_not_allowed_as_json))
        .layer(middleware::from_fn_with_state(
            state.settings.http.max_header_bytes,
            error::headers_within_limit,
        ))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        // A 5xx is not news at ERROR here: an internal error logs its cause where it is
        // rendered, and a 503 (a dependency down, readiness while starting) is an answer.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        // Outermost: every request has an `x-request-id` (the caller's, or a new
        // UUID) before its span is made, and the answer carries it back.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The span of one request: what every log line it causes carries (in JSON logs,
/// under `span`). The route template, not the URI: a WebSocket URI holds a token.
fn request_span(request: &Request) -> tracing::Span {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(metrics::UNMATCHED_ROUTE, MatchedPath::as_str);
    tracing::info_span!(
        "request",
        request_id = header("x-request-id"),
        method = %request.method(),
        route,
    )
}
