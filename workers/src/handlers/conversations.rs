//! `conversation.status`: staff open, close or archive a customer's conversation.

use async_trait::async_trait;
use sqlx::PgConnection;

use commcenter_shared::{
    domain::store,
    ledger::events::{self, Event, EventBody},
    ledger::jobs::payloads,
};

use crate::job::{Handler, JobContext, JobError};

pub struct SetConversationStatusHandler;

#[async_trait]
impl Handler<payloads::SetConversationStatus> for SetConversationStatusHandler {
    /// A few quick writes: ready deliveries run together in one transaction.
    fn batches(&self) -> bool {
        true
    }

    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::SetConversationStatus,
        _job: &JobContext,
    ) -> Result<(), JobError> {
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
