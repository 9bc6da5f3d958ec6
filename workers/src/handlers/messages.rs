//! `message.deliver`: an in-app message reaches the conversation. For in-app messages
//! delivery is the commit itself: the status moves to `sent` and `message.new` goes to
//! everyone who should see it.

use async_trait::async_trait;
use sqlx::PgConnection;

use commcenter_shared::{
    domain::{CommunicationStatus, CustomerId},
    events::{self, Event, EventBody},
    jobs::{kinds, payloads},
    store,
};

use crate::runtime::{Handler, JobContext, JobError};

pub struct DeliverMessage;

#[async_trait]
impl Handler for DeliverMessage {
    fn kind(&self) -> &'static str {
        kinds::MESSAGE_DELIVER
    }

    async fn run(&self, conn: &mut PgConnection, job: &JobContext) -> Result<(), JobError> {
        let payload: payloads::DeliverMessage = job.payload()?;
        let Some(communication) = store::find_communication(conn, payload.communication_id).await?
        else {
            return Err(JobError::permanent(format!(
                "communication {} does not exist",
                payload.communication_id
            )));
        };
        // Already sent (or further): a redelivery; no second effect, no second event.
        let Some(_previous) =
            store::advance_status(conn, communication.id, CommunicationStatus::Sent, None).await?
        else {
            return Ok(());
        };
        let customer = customer_of(&communication.customer_id)?;
        let event = Event::now(
            customer,
            EventBody::MessageNew {
                communication_id: communication.id,
                communication_type: communication.communication_type.clone(),
                sender_id: communication.sender_id.clone(),
                sender_role: communication.sender_role.clone(),
                message: communication.message.clone(),
                status: CommunicationStatus::Sent,
                created_at: communication.created_at,
            },
        );
        events::record(conn, &event).await?;
        Ok(())
    }

    async fn on_dead(
        &self,
        conn: &mut PgConnection,
        job: &JobContext,
        reason: &str,
    ) -> anyhow::Result<()> {
        let Ok(payload) = job.payload::<payloads::DeliverMessage>() else {
            return Ok(());
        };
        fail_communication(conn, payload.communication_id, reason).await
    }
}

/// Marks a communication failed with the reason and tells the conversation, unless it
/// already moved past failing (a message read cannot fail).
pub async fn fail_communication(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    reason: &str,
) -> anyhow::Result<()> {
    let Some(communication) = store::find_communication(conn, id).await? else {
        return Ok(());
    };
    if let Some(previous) =
        store::advance_status(conn, id, CommunicationStatus::Failed, Some(reason)).await?
    {
        let event = Event::now(
            customer_of(&communication.customer_id)?,
            EventBody::CommunicationStatus {
                communication_id: id,
                status: CommunicationStatus::Failed,
                previous,
                reason: Some(reason.to_owned()),
            },
        );
        events::record(conn, &event).await?;
    }
    Ok(())
}

pub(crate) fn customer_of(raw: &str) -> Result<CustomerId, JobError> {
    CustomerId::parse(raw)
        .map_err(|e| JobError::permanent(format!("stored customer id is invalid: {e}")))
}
