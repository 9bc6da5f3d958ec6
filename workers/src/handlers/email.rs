//! `email.send`: an email through Gmail, sent at most once (see [`super::sends`]): the
//! Message-ID is fixed per communication, so an attempt whose outcome is unknown is
//! looked up by it before the mail is sent again.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use commcenter_providers::{
    error::ProviderError,
    gmail::{Email, Gmail, SentMail},
};
use commcenter_shared::{
    domain::communications::Communication, ledger::jobs::payloads, platform::blob::BlobStore,
};

use super::{
    attachments::load_attachments,
    sends::{self, Accepted, Channel},
};
use crate::job::JobError;

/// `email.send`'s handler: Gmail's channel through the one provider send.
pub type SendEmailHandler = sends::SendHandler<EmailChannel>;

/// Why an email cannot go from this worker.
pub const NOT_CONFIGURED: &str = "Gmail is not configured on this worker \
    (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GMAIL_REFRESH_TOKEN)";

pub struct EmailChannel {
    pub gmail: Gmail,
    /// `GMAIL_SENDER`: the From of every mail.
    pub sender: String,
    pub blobs: Arc<BlobStore>,
}

/// A composed message and the thread it continues.
pub struct ComposedMail {
    raw: Bytes,
    thread_id: Option<String>,
}

#[async_trait]
impl Channel for EmailChannel {
    const PROVIDER: &'static str = "gmail";
    type Job = payloads::SendEmail;
    type Prepared = ComposedMail;

    async fn prepare(
        &self,
        conn: &mut PgConnection,
        communication: &Communication,
    ) -> Result<ComposedMail, JobError> {
        let (Some(message_id), Some(to)) = (
            communication.rfc822_message_id.clone(),
            communication.remote_address.clone(),
        ) else {
            return Err(JobError::permanent(
                "the email has no recipient or Message-ID (it was not written by the email endpoint)",
            ));
        };
        let attachments = load_attachments(conn, &self.blobs, communication).await?;
        let email = Email {
            message_id,
            from: self.sender.to_owned(),
            to: to.split(',').map(|a| a.trim().to_owned()).collect(),
            subject: communication.subject.clone().unwrap_or_default(),
            text: communication.message.clone(),
            attachments,
            in_reply_to: communication.in_reply_to.clone(),
            references: communication
                .references
                .as_deref()
                .map(|r| r.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            thread_id: communication.provider_thread_id.clone(),
        };
        let raw = self
            .gmail
            .compose(&email)
            .map_err(|e| JobError::permanent(format!("the email could not be composed: {e}")))?;
        Ok(ComposedMail {
            raw: Bytes::from(raw),
            thread_id: email.thread_id,
        })
    }

    async fn send(&self, mail: ComposedMail) -> Result<Accepted, ProviderError> {
        self.gmail
            .send(mail.raw, mail.thread_id.as_deref())
            .await
            .map(accepted)
    }

    async fn find(
        &self,
        communication: &Communication,
        _since: DateTime<Utc>,
    ) -> Result<Option<Accepted>, ProviderError> {
        let Some(message_id) = communication.rfc822_message_id.as_deref() else {
            return Ok(None);
        };
        Ok(self
            .gmail
            .find_by_message_id(message_id)
            .await?
            .map(accepted))
    }
}

fn accepted(mail: SentMail) -> Accepted {
    Accepted {
        status: if mail.label_ids.iter().any(|l| l == "SENT") {
            "SENT".to_owned()
        } else {
            mail.label_ids.join(",")
        },
        id: mail.id,
        thread_id: Some(mail.thread_id),
    }
}
