//! What every request handler can reach: the state the router is built with. Apart
//! from [`crate::startup`], which builds it, so that routes depend on what they use,
//! not on how the api starts.

use std::sync::{Arc, atomic::AtomicBool};

use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};

use commcenter_shared::{
    domain::push::VapidKey, ledger::events::Event, platform::blob::BlobStore,
    platform::settings::Settings,
};

use crate::{
    group_commit::GroupCommit, health::Health, limits::Limits, metrics::ApiMetrics, notifier::Hub,
    presence::Presence,
};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    /// Where uploads are streamed to and downloads read from.
    pub blobs: Arc<BlobStore>,
    /// Wakes this instance's outbox relay after a request commits a job.
    pub outbox: Arc<Notify>,
    /// Whether the notifier is connected to RabbitMQ (for `/readyz`).
    pub broker_up: Arc<AtomicBool>,
    /// This instance's registry, served at `/metrics`.
    pub metrics: Arc<ApiMetrics>,
    /// Who is online on any api instance; admits and counts WebSocket connections.
    pub presence: Arc<Presence>,
    /// Ephemeral events (typing) for the notifier to publish to every instance.
    pub ephemeral: mpsc::Sender<Event>,
    /// Whether PostgreSQL is reachable, kept by a background check.
    pub health: Arc<Health>,
    /// The rate limits' buckets.
    pub limits: Arc<Limits>,
    /// Writes plain sends together, one commit for many ([`GroupCommit`]).
    pub sends: GroupCommit,
    /// The Web Push key pair every instance signs with.
    pub vapid: Arc<VapidKey>,
}
