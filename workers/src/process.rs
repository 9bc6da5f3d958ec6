//! A workers process: the job runtime with every handler this process runs, and the
//! clocks beside it (retention, the live chart's counts, the rescuer, dispatch
//! reminders, the fallback sweep, the periodic imports), until `shutdown`. The
//! `commcenter-workers` binary is this, with settings from the environment.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use commcenter_shared::{
    ledger::jobs::payloads, ledger::retry::RetryPolicy, platform::blob::BlobStore,
    platform::broker::Topology, platform::db, platform::settings::Settings,
};

use crate::{
    Runtime, activity, handlers, metrics,
    retention::{Keep, Retention},
    schedule::{self, DispatchReminders, Fallbacks, Periodic, Rescuer},
};

/// Migrates, then runs until `shutdown` and the in-flight jobs have drained.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    db::ensure_database(&settings.database).await?;
    let pool = db::connect(&settings.database).await?;
    db::migrate(&pool).await?;

    let blobs = Arc::new(BlobStore::from_settings(&settings.storage)?);
    let registry = handlers::registry(&settings, blobs)?.only(&settings.jobs.kinds)?;
    let runtime = Arc::new(Runtime {
        pool,
        broker: settings.broker.clone(),
        topology: Topology::new(
            &settings.broker.prefix,
            settings.jobs.retry_tiers.clone(),
            settings.jobs.delivery_limit,
        ),
        policy: RetryPolicy {
            tiers: settings.jobs.retry_tiers.clone(),
            base: settings.jobs.retry_base,
            max_attempts: settings.jobs.max_attempts,
        },
        registry,
        prefetch: settings.jobs.prefetch,
        batch_size: settings.jobs.batch_size,
        job_timeout: settings.jobs.timeout,
        shutdown_grace: settings.http.shutdown_grace,
        worker_name: format!("worker-{}", std::process::id()),
        record_dead_letters: true,
        relay: settings.relay.clone(),
        outbox: Default::default(),
        max_deferral: crate::runtime::DEFAULT_MAX_DEFERRAL,
        metrics: Default::default(),
    });

    if let Some(addr) = settings.metrics.addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (METRICS_ADDR)"))?;
        tracing::info!(%addr, "serving /metrics");
        let (metrics, token) = (runtime.metrics.clone(), settings.metrics.token.clone());
        let limits = settings.http.connection_limits();
        tokio::spawn(metrics::serve(
            metrics,
            token,
            listener,
            limits,
            shutdown.clone(),
        ));
    }
    tokio::spawn(
        activity::Recorder {
            pool: runtime.pool.clone(),
            broker: runtime.broker.clone(),
            topology: runtime.topology.clone(),
            metrics: runtime.metrics.clone(),
            every: activity::EVERY,
        }
        .run(shutdown.clone()),
    );
    tokio::spawn(
        Retention {
            pool: runtime.pool.clone(),
            keep: Keep {
                jobs: settings.jobs.retention,
                idempotency_keys: settings.jobs.idempotency_retention,
                events: settings.jobs.event_retention,
                locations: settings.crews.location_retention,
            },
        }
        .run(shutdown.clone()),
    );
    tokio::spawn(
        Fallbacks {
            pool: runtime.pool.clone(),
            settings: schedule::fallback_settings(&settings),
            outbox: runtime.outbox.clone(),
        }
        .run(shutdown.clone()),
    );
    tokio::spawn(
        Rescuer {
            pool: runtime.pool.clone(),
            after: settings.jobs.rescue_after,
            outbox: runtime.outbox.clone(),
            metrics: runtime.metrics.clone(),
        }
        .run(shutdown.clone()),
    );
    tokio::spawn(
        DispatchReminders {
            pool: runtime.pool.clone(),
            ack_after: settings.crews.dispatch_ack,
            max_attempts: settings.jobs.max_attempts,
            outbox: runtime.outbox.clone(),
        }
        .run(shutdown.clone()),
    );
    if let (true, Some(every)) = (
        settings.ringcentral.configured(),
        settings.ringcentral.call_log_import_every,
    ) {
        tokio::spawn(
            Periodic {
                pool: runtime.pool.clone(),
                every,
                max_attempts: settings.jobs.max_attempts,
                outbox: runtime.outbox.clone(),
                job: payloads::ImportCallLog::default(),
            }
            .run(shutdown.clone()),
        );
    }
    if let (true, Some(every)) = (settings.gmail.configured(), settings.gmail.poll_every) {
        tokio::spawn(
            Periodic {
                pool: runtime.pool.clone(),
                every,
                max_attempts: settings.jobs.max_attempts,
                outbox: runtime.outbox.clone(),
                job: payloads::SyncMailbox::default(),
            }
            .run(shutdown.clone()),
        );
    }
    runtime.run(shutdown).await;
    tracing::info!("workers stopped");
    Ok(())
}
