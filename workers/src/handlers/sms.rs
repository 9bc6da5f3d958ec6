//! `sms.send`: an SMS, or an MMS when it has attachments, through RingCentral, sent at
//! most once (see [`super::sends`]).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use commcenter_providers::{
    error::ProviderError,
    mms,
    ringcentral::{MessageRecord, OutboundSms, RingCentral},
};
use commcenter_shared::{
    domain::communications::Communication, ledger::jobs::payloads, platform::blob::BlobStore,
};

use super::{
    attachments::load_attachments,
    sends::{self, Accepted, Channel},
};
use crate::job::JobError;

/// `sms.send`'s handler: RingCentral's channel through the one provider send.
pub type SendSmsHandler = sends::SendHandler<SmsChannel>;

/// Why an SMS cannot go from this worker.
pub const NOT_CONFIGURED: &str = "RingCentral is not configured on this worker \
    (RINGCENTRAL_CLIENT_ID, RINGCENTRAL_CLIENT_SECRET, RINGCENTRAL_JWT)";

pub struct SmsChannel {
    pub ringcentral: RingCentral,
    pub blobs: Arc<BlobStore>,
}

#[async_trait]
impl Channel for SmsChannel {
    const PROVIDER: &'static str = "ringcentral";
    type Job = payloads::SendSms;
    type Prepared = OutboundSms;

    async fn prepare(
        &self,
        conn: &mut PgConnection,
        communication: &Communication,
    ) -> Result<OutboundSms, JobError> {
        let (from, to) = addresses(conn, communication).await?;
        let files = load_attachments(conn, &self.blobs, communication).await?;
        // Recompressing images is CPU work: off the async threads.
        let attachments = tokio::task::spawn_blocking(move || mms::fit(files))
            .await
            .map_err(|e| JobError::transient(format!("fitting the MMS attachments failed: {e}")))?
            .map_err(|refusal| JobError::permanent(refusal.to_string()))?;
        Ok(OutboundSms {
            from,
            to,
            text: communication.message.clone(),
            attachments,
        })
    }

    async fn send(&self, sms: OutboundSms) -> Result<Accepted, ProviderError> {
        self.ringcentral.send_sms(&sms).await.map(accepted)
    }

    async fn find(
        &self,
        communication: &Communication,
        since: DateTime<Utc>,
    ) -> Result<Option<Accepted>, ProviderError> {
        let Some(to) = communication.remote_address.as_deref() else {
            return Ok(None);
        };
        // A minute of slack for clocks: ours stamped `since`, RingCentral its creationTime.
        let since = since - chrono::Duration::minutes(1);
        Ok(self
            .ringcentral
            .find_sent(to, &communication.message, since)
            .await?
            .map(accepted))
    }
}

fn accepted(record: MessageRecord) -> Accepted {
    Accepted {
        id: record.id,
        status: record.message_status,
        thread_id: record.conversation_id,
    }
}

async fn addresses(
    _conn: &mut PgConnection,
    communication: &Communication,
) -> Result<(String, String), JobError> {
    match (
        communication.local_address.clone(),
        communication.remote_address.clone(),
    ) {
        (Some(from), Some(to)) => Ok((from, to)),
        _ => Err(JobError::permanent(
            "the SMS has no from or to number (it was not written by the SMS endpoint)",
        )),
    }
}
