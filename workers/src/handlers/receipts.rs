//! `receipt.apply`: a delivered or read receipt moves a communication's status
//! forward; a late receipt (delivered after read) changes nothing and says nothing.

use async_trait::async_trait;
use sqlx::PgConnection;

use commcenter_shared::{
    events::{self, Event, EventBody},
    jobs::payloads,
    store,
};

use super::messages::customer_of;
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
        let Some(communication) = store::find_communication(conn, payload.communication_id).await?
        else {
            return Err(JobError::permanent(format!(
                "communication {} does not exist",
                payload.communication_id
            )));
        };
        let status = payload.receipt.status();
        let Some(previous) = store::advance_status_by(
            conn,
            communication.id,
            status,
            None,
            Some(payload.by_user.as_str()),
        )
        .await?
        else {
            tracing::debug!(
                current = communication.status.as_str(),
                wanted = status.as_str(),
                "receipt would not move the status forward"
            );
            return Ok(());
        };
        let event = Event::now(
            customer_of(&communication.customer_id)?,
            EventBody::CommunicationStatus {
                communication_id: communication.id,
                status,
                previous,
                reason: None,
            },
        );
        events::record(conn, &event).await?;
        Ok(())
    }
}
