//! `ops.bulk`: one batch of an operator's bulk replay or discard. Each batch is a job
//! of its own, committed with its progress, so a replay of 10,000 jobs holds no
//! request open, no transaction holds more than a batch of rows, a crashed worker
//! resumes where the last batch ended, and the api's progress view moves as it goes.

use async_trait::async_trait;
use sqlx::PgConnection;

use commcenter_shared::ops::{self, BulkBatch};

use crate::job::{Handler, JobContext, JobError};

/// Jobs acted on per batch (one transaction).
pub const BATCH: i64 = 500;

pub struct BulkBatchHandler {
    pub batch: i64,
    /// For the next batch's job.
    pub max_attempts: i32,
}

#[async_trait]
impl Handler<BulkBatch> for BulkBatchHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        &BulkBatch { action_id }: &BulkBatch,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        ops::run_bulk_batch(conn, action_id, self.batch, self.max_attempts)
            .await
            .map_err(|e| JobError::transient(format!("bulk action {action_id}: {e:#}")))?;
        Ok(())
    }

    async fn on_dead(
        &self,
        conn: &mut PgConnection,
        &BulkBatch { action_id }: &BulkBatch,
        _job: &JobContext,
        reason: &str,
    ) -> anyhow::Result<()> {
        ops::fail_bulk(conn, action_id, reason).await?;
        Ok(())
    }
}
