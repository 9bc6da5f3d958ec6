//! `message.deliver`: an in-app message with files reaches the conversation once they
//! are processed: the status moves to `sent` and `message.new` goes to everyone who
//! should see it. (One without files needs no job: its own commit delivered it.)

use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

use commcenter_shared::{
    domain::communications::{self, Communication, writes},
    domain::{CommunicationStatus, FileStatus},
    ledger::jobs::payloads,
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
        let communication = existing(conn, payload.communication_id).await?;
        if communication.status != CommunicationStatus::Queued {
            return Ok(()); // Sent before (or failed): a redelivery; no second effect.
        }
        attachments_ready(conn, &communication).await?;
        // Already sent (or further): a redelivery; no second effect, no second event.
        writes::deliver(conn, &communication, CommunicationStatus::Sent).await?;
        Ok(())
    }
}

/// The communication a job names; one that does not exist will never appear.
pub(crate) async fn existing(conn: &mut PgConnection, id: Uuid) -> Result<Communication, JobError> {
    communications::find(conn, id)
        .await?
        .ok_or_else(|| JobError::permanent(format!("communication {id} does not exist")))
}

/// A message goes out with its attachments or not at all: one still processing makes
/// it wait (a transient failure, retried), one that failed refuses it with the reason.
/// Once all are ready, the message's attachment list takes their final type and size.
pub(crate) async fn attachments_ready(
    conn: &mut PgConnection,
    communication: &Communication,
) -> Result<(), JobError> {
    let ids = communication.attachment_ids();
    if ids.is_empty() {
        return Ok(());
    }
    let rows: Vec<(Uuid, String, FileStatus, Option<String>, i64, String)> = sqlx::query_as(
        "SELECT id, original_name, status, failure_reason, file_size, file_type FROM file_attachments WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for (_, name, status, reason, ..) in &rows {
        match status {
            FileStatus::Failed => {
                return Err(JobError::permanent(format!(
                    "attachment {name} could not be processed: {}",
                    reason.as_deref().unwrap_or("unknown reason")
                )));
            }
            FileStatus::Processing => {
                return Err(JobError::Transient {
                    message: format!("waiting for attachment {name} to finish processing"),
                    retry_after: Some(std::time::Duration::from_secs(1)),
                });
            }
            FileStatus::Ready => {}
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
    writes::set_attachments(conn, communication.id, &attachments).await?;
    Ok(())
}
