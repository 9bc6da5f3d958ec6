//! The handler vocabulary: what a job kind implements ([`Handler`] over its payload
//! type), how it fails ([`JobError`]), what it is told ([`JobContext`]), and the
//! [`Registry`] of the kinds a worker runs. The runtime only sees [`AnyHandler`].

use std::{collections::HashMap, marker::PhantomData, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use commcenter_shared::{
    domain::communications::writes,
    ledger::jobs::{Job, ProviderReport},
};

/// How a handler failed: the runtime retries the first and dead-letters the second.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another try later; `retry_after` is the provider's own minimum wait.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Will never succeed as it is.
    #[error("{0}")]
    Permanent(String),
    /// Not this job's failure: another delivery of it is doing the work right now (a
    /// provider call under way). Only an outside phase may say so: the delivery waits in
    /// a delay tier at least `retry_after` and comes back, and no attempt is spent.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after: Duration,
    },
}

impl JobError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }
}

/// A database error inside a handler is presumed passing (connection lost, deadlock,
/// serialization failure): retry.
impl From<sqlx::Error> for JobError {
    fn from(error: sqlx::Error) -> Self {
        Self::transient(format!("database error: {error}"))
    }
}

/// What a handler is told about the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: Uuid,
    pub kind: String,
    pub payload: Value,
    /// 1-based number of this attempt.
    pub attempt: i32,
    /// What a provider answered during this attempt; the runtime records it on the
    /// attempt row, whatever the outcome.
    provider: Arc<std::sync::Mutex<ProviderReport>>,
    /// Set by a poll that found nothing to do ([`JobContext::found_nothing`]).
    idle: Arc<std::sync::atomic::AtomicBool>,
}

impl JobContext {
    pub fn new(id: Uuid, kind: impl Into<String>, payload: Value, attempt: i32) -> Self {
        Self {
            id,
            kind: kind.into(),
            payload,
            attempt,
            provider: Arc::default(),
            idle: Arc::default(),
        }
    }

    /// This context with another attempt number, sharing the provider's answer noted so
    /// far: the outside phase read the attempt number without the row lock.
    pub(crate) fn renumbered(&self, attempt: i32) -> Self {
        Self {
            attempt,
            ..self.clone()
        }
    }

    /// Notes the provider's answer for this attempt's row (the last note wins).
    pub fn report_provider(&self, report: ProviderReport) {
        if let Ok(mut slot) = self.provider.lock() {
            *slot = report;
        }
    }

    /// Says this run was a poll that found nothing (no new mail, no new calls). If it
    /// succeeds at its first attempt, its job is marked idle, with no attempt row
    /// (`jobs::IDLE`): operators' listings and stats leave it out, retention removes it
    /// after ten minutes, and the metrics count it as `idle`. A poll that failed before
    /// stays an ordinary row with its history.
    pub fn found_nothing(&self) {
        self.idle.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn was_idle(&self) -> bool {
        self.idle.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn provider_report(&self) -> ProviderReport {
        self.provider.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The payload as its job type; a payload that does not fit is permanent.
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| JobError::permanent(format!("payload does not fit {}: {e}", self.kind)))
    }
}

/// One job kind's work, over its payload type `J`: the registry decodes the payload
/// (one that does not fit is a permanent failure) and erases the kind. `run` must be
/// idempotent: it may see the same job again after a crash, and runs inside a
/// transaction that also records the outcome.
#[async_trait]
pub trait Handler<J: Job>: Send + Sync + 'static {
    async fn run(
        &self,
        conn: &mut PgConnection,
        job: &J,
        context: &JobContext,
    ) -> Result<(), JobError>;

    /// Whether deliveries of this kind that are ready together may run in one
    /// transaction (each in its own savepoint; `WORKER_BATCH_SIZE`). For quick jobs
    /// that only write to the database: a batch holds its rows' locks until its last
    /// job is done. Default: no.
    fn batches(&self) -> bool {
        false
    }

    /// Whether this kind does its slow part in [`Handler::outside`]. Its jobs then hold
    /// no job slot (a pooled connection, and the job's row lock) while they wait on a
    /// provider, so a worker overlaps as many calls as its prefetch, not its pool.
    fn works_outside(&self) -> bool {
        false
    }

    /// The slow part, run before the job's transaction, holding no connection of the
    /// runtime's while it waits (a provider call). Another delivery of the same job may
    /// run it at the same time, and the process may die anywhere in it, so it commits
    /// its own evidence (on connections of its own) and must be safe to repeat; `run`
    /// then only records the outcome, in the transaction. Its error fails the attempt
    /// without `run` being called.
    async fn outside(&self, _job: &J, _context: &JobContext) -> Result<(), JobError> {
        Ok(())
    }

    /// Runs in the transaction that marks the job dead (permanent failure, attempts
    /// exhausted, or dead-lettered by the broker), so what else the job served (beyond
    /// the communication it carries out, [`Job::delivers`], failed by the runtime)
    /// shows as failed. Default: nothing.
    async fn on_dead(
        &self,
        _conn: &mut PgConnection,
        _job: &J,
        _context: &JobContext,
        _reason: &str,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A [`Handler`] of `J` as the runtime sees it: the payload decoded once, here.
struct Typed<J, H> {
    handler: H,
    job: PhantomData<fn() -> J>,
}

#[async_trait]
impl<J: Job, H: Handler<J>> AnyHandler for Typed<J, H> {
    fn kind(&self) -> &'static str {
        J::KIND
    }

    async fn run(&self, conn: &mut PgConnection, context: &JobContext) -> Result<(), JobError> {
        let job = context.decode::<J>()?;
        self.handler.run(conn, &job, context).await
    }

    fn batches(&self) -> bool {
        self.handler.batches()
    }

    fn works_outside(&self) -> bool {
        self.handler.works_outside()
    }

    async fn outside(&self, context: &JobContext) -> Result<(), JobError> {
        let job = context.decode::<J>()?;
        self.handler.outside(&job, context).await
    }

    async fn on_dead(
        &self,
        conn: &mut PgConnection,
        context: &JobContext,
        reason: &str,
    ) -> anyhow::Result<()> {
        // A payload that never fit served nothing that could be marked failed.
        let Ok(job) = context.decode::<J>() else {
            return Ok(());
        };
        if let Some(communication) = job.delivers() {
            writes::fail(conn, communication, reason).await?;
        }
        self.handler.on_dead(conn, &job, context, reason).await
    }
}

/// The runtime's view of a handler: any kind, the payload as JSON. Production kinds
/// implement [`Handler`] over their payload type and are erased by [`Registry::with`];
/// implement this directly only for a kind with no payload type (the runtime's own
/// tests, which send it what they like).
#[async_trait]
pub trait AnyHandler: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    async fn run(&self, conn: &mut PgConnection, job: &JobContext) -> Result<(), JobError>;

    /// Whether deliveries of this kind that are ready together may run in one
    /// transaction (each in its own savepoint; `WORKER_BATCH_SIZE`). For quick jobs
    /// that only write to the database: a batch holds its rows' locks until its last
    /// job is done. Default: no.
    fn batches(&self) -> bool {
        false
    }

    /// Whether this kind does its slow part in [`AnyHandler::outside`]. Its jobs then hold
    /// no job slot (a pooled connection, and the job's row lock) while they wait on a
    /// provider, so a worker overlaps as many calls as its prefetch, not its pool.
    fn works_outside(&self) -> bool {
        false
    }

    /// The slow part, run before the job's transaction, holding no connection of the
    /// runtime's while it waits (a provider call). Another delivery of the same job may
    /// run it at the same time, and the process may die anywhere in it, so it commits
    /// its own evidence (on connections of its own) and must be safe to repeat; `run`
    /// then only records the outcome, in the transaction. Its error fails the attempt
    /// without `run` being called.
    async fn outside(&self, _job: &JobContext) -> Result<(), JobError> {
        Ok(())
    }

    /// Runs in the transaction that marks the job dead (permanent failure, attempts
    /// exhausted, or dead-lettered by the broker), so what the job served shows as
    /// failed and the sender hears of it. Default: nothing.
    async fn on_dead(
        &self,
        _conn: &mut PgConnection,
        _job: &JobContext,
        _reason: &str,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The handlers a worker process runs, by kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn AnyHandler>>,
}

impl Registry {
    /// Registers `handler` for its job type's kind.
    pub fn with<J: Job, H: Handler<J>>(self, handler: H) -> Self {
        self.with_any(erase(handler))
    }

    /// Registers a handler already erased (see [`AnyHandler`]).
    pub fn with_any(mut self, handler: Arc<dyn AnyHandler>) -> Self {
        self.handlers.insert(handler.kind(), handler);
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn AnyHandler>> {
        self.handlers.get(kind)
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.handlers.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }

    /// Keeps only the named kinds (`WORKER_KINDS`); an unknown name is an error.
    pub fn only(mut self, kinds: &[String]) -> anyhow::Result<Self> {
        if kinds.is_empty() {
            return Ok(self);
        }
        for kind in kinds {
            anyhow::ensure!(
                self.handlers.contains_key(kind.as_str()),
                "WORKER_KINDS names unknown job kind {kind:?}"
            );
        }
        self.handlers
            .retain(|k, _| kinds.iter().any(|wanted| wanted == k));
        Ok(self)
    }
}

/// `handler` as the runtime sees it (for [`Registry::with_any`]).
pub fn erase<J: Job, H: Handler<J>>(handler: H) -> Arc<dyn AnyHandler> {
    Arc::new(Typed {
        handler,
        job: PhantomData,
    })
}
