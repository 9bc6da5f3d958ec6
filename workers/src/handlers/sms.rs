//! `sms.send`: an SMS, or an MMS when it has attachments, through RingCentral, sent at
//! most once (see [`super::sends`]).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use commcenter_providers::{
    error::ProviderError,
    mms,
    ringcentral::{MessageRecord, OutboundSms, RingCentral},
};
use commcenter_shared::{blob::BlobStore, jobs::payloads, store::Communication};

use super::{
    attachments::load_attachments,
    sends::{self, Accepted, Channel},
};
use crate::job::{Handler, JobContext, JobError};

pub struct SendSmsHandler {
    pub ringcentral: Option<RingCentral>,
    pub blobs: Arc<BlobStore>,
    /// Where the never-twice evidence is committed, apart from the job's transaction.
    pub sends: PgPool,
    /// How long a call can be under way ([`sends::under_way_at_most`]).
    pub under_way_for: std::time::Duration,
}

#[async_trait]
impl Handler<payloads::SendSms> for SendSmsHandler {
    fn works_outside(&self) -> bool {
        true
    }

    async fn outside(&self, payload: &payloads::SendSms, job: &JobContext) -> Result<(), JobError> {
        let Some(ringcentral) = &self.ringcentral else {
            return Err(JobError::permanent(
                "RingCentral is not configured on this worker (RINGCENTRAL_CLIENT_ID, \
                 RINGCENTRAL_CLIENT_SECRET, RINGCENTRAL_JWT)",
            ));
        };
        let channel = SmsChannel {
            ringcentral,
            blobs: &self.blobs,
        };
        sends::call(
            &channel,
            &self.sends,
            payload.communication_id,
            job,
            self.under_way_for,
        )
        .await
    }

    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::SendSms,
        job: &JobContext,
    ) -> Result<(), JobError> {
        sends::record(conn, payload.communication_id, job).await
    }

    async fn on_dead(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::SendSms,
        _job: &JobContext,
        reason: &str,
    ) -> anyhow::Result<()> {
        sends::fail(conn, payload.communication_id, reason).await
    }
}

struct SmsChannel<'a> {
    ringcentral: &'a RingCentral,
    blobs: &'a BlobStore,
}

#[async_trait]
impl Channel for SmsChannel<'_> {
    const PROVIDER: &'static str = "ringcentral";
    type Prepared = OutboundSms;

    async fn prepare(
        &self,
        conn: &mut PgConnection,
        communication: &Communication,
    ) -> Result<OutboundSms, JobError> {
        let (from, to) = addresses(conn, communication).await?;
        let files = load_attachments(conn, self.blobs, communication).await?;
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
