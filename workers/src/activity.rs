//! The operators' live chart, from the workers' side: every [`EVERY`], add the jobs
//! this process finished to `job_activity` and sample every queue's depth into
//! `queue_depths` (`shared::ops::activity`). At shutdown, a last write.
//!
//! Counts that cannot be written (the database is down) are kept for the next round; a
//! broker that cannot be reached leaves a gap in the depths, not an error.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use commcenter_shared::{
    ledger::jobs::kinds,
    ops,
    platform::broker::{self, Topology},
    platform::settings::BrokerSettings,
};

use crate::metrics::JobMetrics;

/// How often counts are written and queues sampled.
pub const EVERY: Duration = Duration::from_secs(5);

pub struct Recorder {
    pub pool: PgPool,
    pub broker: BrokerSettings,
    pub topology: Topology,
    /// Where the runtime counts the jobs it finishes.
    pub metrics: Arc<JobMetrics>,
    pub every: Duration,
}

impl Recorder {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut connection: Option<lapin::Connection> = None;
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                () = shutdown.cancelled() => true,
                _ = ticks.tick() => false,
            };
            self.write_counts().await;
            if stopping {
                if let Some(connection) = connection {
                    connection.close(200, "stopping".into()).await.ok();
                }
                return;
            }
            if let Err(error) = self.sample_queues(&mut connection).await {
                tracing::debug!(error = format!("{error:#}"), "queue depths not sampled");
                connection = None;
            }
        }
    }

    async fn write_counts(&self) {
        let counts = self.metrics.take_activity();
        if let Err(error) = ops::add_job_counts(&self.pool, &counts).await {
            tracing::warn!(%error, "job activity not written; kept for the next round");
            self.metrics.restore_activity(counts);
        }
    }

    /// Every work queue, delay tier and the dead-letter queue, on one connection kept
    /// between rounds.
    async fn sample_queues(
        &self,
        connection: &mut Option<lapin::Connection>,
    ) -> anyhow::Result<()> {
        let open = match connection.take() {
            Some(open) if open.status().connected() => open,
            _ => {
                let opened = broker::connect(&self.broker, "commcenter-workers-activity").await?;
                self.topology.declare_on(&opened, kinds::ALL).await?;
                opened
            }
        };
        let connection = connection.insert(open);
        let mut names: Vec<String> = kinds::ALL
            .iter()
            .map(|kind| self.topology.work_queue(kind))
            .collect();
        names.extend(
            self.topology
                .tiers
                .iter()
                .map(|t| self.topology.delay_queue(*t)),
        );
        names.push(self.topology.dead_queue());
        let mut depths = Vec::with_capacity(names.len());
        for name in names {
            let look = broker::look(connection, &name).await?;
            if look.exists {
                depths.push((look.queue, i64::from(look.messages)));
            }
        }
        ops::record_queue_depths(&self.pool, Utc::now(), &depths).await?;
        Ok(())
    }
}
