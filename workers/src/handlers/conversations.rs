//! `conversation.status`: staff open, close or archive a customer's conversation.

use async_trait::async_trait;
use sqlx::PgConnection;

use commcenter_shared::{
    events::{self, Event, EventBody},
    jobs::{kinds, payloads},
    store,
};

use crate::runtime::{Handler, JobContext, JobError};

pub struct SetConversationStatus;

#[async_trait]
impl Handler for SetConversationStatus {
    fn kind(&self) -> &'static str {
        kinds::CONVERSATION_STATUS
    }

    /// A few quick writes: ready deliveries run together in one transaction.
    fn batches(&self) -> bool {
        true
    }

    async fn run(&self, conn: &mut PgConnection, job: &JobContext) -> Result<(), JobError> {
        let payload: payloads::SetConversationStatus = job.payload()?;
        let changed = store::set_conversation_status(
            conn,
            &payload.customer_id,
            payload.status,
            payload.by_user.as_str(),
        )
        .await?;
        if changed {
            let event = Event::now(
                payload.customer_id.clone(),
                EventBody::ConversationStatus {
                    status: payload.status,
                    updated_by: payload.by_user.to_string(),
                },
            );
            events::record(conn, &event).await?;
        }
        Ok(())
    }
}
