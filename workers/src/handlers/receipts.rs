//! `receipt.apply`: a delivered or read receipt moves a communication's status
//! forward; a late receipt (delivered after read) changes nothing and says nothing.

use async_trait::async_trait;
use sqlx::PgConnection;

use commcenter_shared::{
    domain::communications::writes::{self, Why},
    ledger::jobs::payloads,
};

use super::messages::existing;
use crate::job::{Handler, JobContext, JobError};

pub struct ApplyReceiptHandler;

#[async_trait]
impl Handler<payloads::ApplyReceipt> for ApplyReceiptHandler {
    /// A few quick writes: ready deliveries run together in one transaction.
    fn batches(&self) -> bool {
        true
    }

    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::ApplyReceipt,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        let communication = existing(conn, payload.communication_id).await?;
        let status = payload.receipt.status();
        let by = Why {
            reason: None,
            by: Some(payload.by_user.as_str()),
        };
        if writes::advance(conn, communication.id, status, by)
            .await?
            .is_none()
        {
            tracing::debug!(
                current = communication.status.as_str(),
                wanted = status.as_str(),
                "receipt would not move the status forward"
            );
        }
        Ok(())
    }
}
