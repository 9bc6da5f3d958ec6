//! `message.deliver`: an in-app message reaches the conversation. For in-app messages
//! delivery is the commit itself: the status moves to `sent` and `message.new` goes to
//! everyone who should see it.

use async_trait::async_trait;
use sqlx::PgConnection;

use commcenter_shared::{
    domain::{CommunicationStatus, CustomerId},
    events::{self, Event, EventBody},
    jobs::payloads,
    store,
};

use crate::job::{Handler, JobContext, JobError};

pub struct DeliverMessageHandler;

#[async_trait]
impl Handler<payloads::DeliverMessage> for DeliverMessageHandler {
    /// A few quick writes: ready deliveries run together in one transaction.
    fn batches(&self) -> bool {
        true
    }

    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::DeliverMessage,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        let Some(communication) = store::find_communication(conn, payload.communication_id).await?
        else {
            return Err(JobError::permanent(format!(
                "communication {} does not exist",
                payload.communication_id
            )));
        };
        if communication.status != CommunicationStatus::Queued {
            return Ok(()); // Sent before (or failed): a redelivery; no second effect.
        }
        attachments_ready(conn, &communication).await?;
        // Already sent (or further): a redelivery; no second effect, no second event.
        let Some(_previous) =
            store::advance_status(conn, communication.id, CommunicationStatus::Sent, None).await?
        else {
            return Ok(());
        };
        let customer = customer_of(&communication.customer_id)?;
        let event = Event::now(
            customer,
            EventBody::message_new(&communication, CommunicationStatus::Sent),
        );
        events::record(conn, &event).await?;
        Ok(())
    }

    async fn on_dead(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::DeliverMessage,
        _job: &JobContext,
        reason: &str,
    ) -> anyhow::Result<()> {
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

/// A message goes out with its attachments or not at all: one still processing makes
/// it wait (a transient failure, retried), one that failed refuses it with the reason.
/// Once all are ready, the message's attachment list takes their final type and size.
pub(crate) async fn attachments_ready(
    conn: &mut PgConnection,
    communication: &store::Communication,
) -> Result<(), JobError> {
    let ids: Vec<uuid::Uuid> = communication
        .attachments
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|a| a["file_id"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Ok(());
    }
    let rows: Vec<(uuid::Uuid, String, String, Option<String>, i64, String)> = sqlx::query_as(
        "SELECT id, original_name, status, failure_reason, file_size, file_type FROM file_attachments WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for (_, name, status, reason, ..) in &rows {
        match status.as_str() {
            "failed" => {
                return Err(JobError::permanent(format!(
                    "attachment {name} could not be processed: {}",
                    reason.as_deref().unwrap_or("unknown reason")
                )));
            }
            "processing" => {
                return Err(JobError::Transient {
                    message: format!("waiting for attachment {name} to finish processing"),
                    retry_after: Some(std::time::Duration::from_secs(1)),
                });
            }
            _ => {}
        }
    }
    let mut attachments = communication.attachments.clone();
    if let Some(list) = attachments.as_array_mut() {
        for attachment in list {
            if let Some((_, _, _, _, size, file_type)) = rows
                .iter()
                .find(|r| Some(r.0.to_string().as_str()) == attachment["file_id"].as_str())
            {
                attachment["file_size"] = (*size).into();
                attachment["file_type"] = file_type.clone().into();
            }
        }
    }
    sqlx::query("UPDATE communications SET attachments = $2 WHERE id = $1")
        .bind(communication.id)
        .bind(attachments)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) fn customer_of(raw: &str) -> Result<CustomerId, JobError> {
    CustomerId::parse(raw)
        .map_err(|e| JobError::permanent(format!("stored customer id is invalid: {e}")))
}
