//! Mail that comes into the Gmail mailbox, read incrementally as Google documents it.
//!
//! `email.sync` (one open at a time, every `GMAIL_POLL_SECS`): the first time it
//! remembers the mailbox's `historyId` (`users.getProfile`), so older mail is not
//! imported; then it reads `users.history.list` from there and enqueues one
//! `email.file` per message added. A start Google no longer keeps (404) falls back to
//! listing what arrived since the last filed message. Each Gmail id is enqueued once
//! (`gmail_seen`, written with the job), however often Gmail lists it.
//!
//! `email.file` fetches the message (`format=raw`) and files it:
//! - mail we sent is skipped;
//! - a message already filed (by Gmail id or by `Message-ID`) is skipped;
//! - it is matched to a customer by the thread of a mail we sent, then by
//!   `In-Reply-To`/`References`, then by the sender's address in the contacts;
//! - it is recorded as an inbound `email` communication with `message.new`, or, when
//!   nothing matches, kept in `unmatched_emails` for staff to assign.
//!
//! The text is the text part, or the HTML part reduced to text (mail-parser's
//! conversion: tags dropped, entities decoded, never interpreted).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use commcenter_providers::gmail::Gmail;
use commcenter_shared::{
    domain::CustomerId,
    domain::communications::{
        Communication,
        writes::{self, InboundEmail},
    },
    domain::contact::EmailAddress,
    domain::filetype,
    domain::store,
    domain::text::storable,
    ledger::jobs::{self, NewJob, payloads},
    platform::blob::{BlobStore, ObjectKey},
};

use super::ringcentral::provider_error;
use crate::job::{Handler, JobContext, JobError};

fn client(gmail: &Option<Gmail>) -> Result<&Gmail, JobError> {
    gmail.as_ref().ok_or_else(|| {
        JobError::permanent(
            "Gmail is not configured on this worker (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, \
             GMAIL_REFRESH_TOKEN)",
        )
    })
}

pub struct SyncMailboxHandler {
    pub gmail: Option<Gmail>,
    /// `GMAIL_SENDER`: the mailbox read.
    pub mailbox: String,
    pub max_attempts: i32,
}

#[async_trait]
impl Handler<payloads::SyncMailbox> for SyncMailboxHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        _payload: &payloads::SyncMailbox,
        job: &JobContext,
    ) -> Result<(), JobError> {
        let gmail = client(&self.gmail)?;
        let cursor: Option<i64> =
            sqlx::query_scalar("SELECT history_id FROM gmail_sync WHERE mailbox = $1 FOR UPDATE")
                .bind(&self.mailbox)
                .fetch_optional(&mut *conn)
                .await?;
        let Some(start) = cursor else {
            let now = gmail.history_now().await.map_err(provider_error)?;
            save_position(conn, &self.mailbox, now).await?;
            tracing::info!(mailbox = %self.mailbox, history_id = now, "inbound email starts from now");
            return Ok(());
        };
        let (ids, next) = match gmail.added_since(start as u64).await {
            Ok((added, next)) => (added.into_iter().map(|m| m.id).collect::<Vec<_>>(), next),
            Err(error) if error.http_status == Some(404) => {
                // Too old: list what arrived since the last filed message (a minute of
                // slack for clocks), and start the history afresh from now.
                let since: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT max(coalesce(occurred_at, created_at)) FROM communications
                     WHERE type = 'email' AND direction = 'inbound'",
                )
                .fetch_one(&mut *conn)
                .await?;
                let since = since.unwrap_or_else(Utc::now) - chrono::Duration::minutes(1);
                tracing::warn!(mailbox = %self.mailbox, start, %since, "the mailbox's history no longer reaches our position; listing mail since the last filed");
                let ids = gmail
                    .received_after(since.timestamp())
                    .await
                    .map_err(provider_error)?;
                let now = gmail.history_now().await.map_err(provider_error)?;
                (ids, now)
            }
            Err(error) => return Err(provider_error(error)),
        };
        let enqueued = enqueue_new(conn, &ids, self.max_attempts).await?;
        save_position(conn, &self.mailbox, next).await?;
        if enqueued > 0 {
            tracing::info!(mailbox = %self.mailbox, enqueued, "new mail to file");
        } else {
            job.found_nothing();
        }
        Ok(())
    }
}

async fn save_position(conn: &mut PgConnection, mailbox: &str, position: u64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO gmail_sync (mailbox, history_id) VALUES ($1, $2)
         ON CONFLICT (mailbox) DO UPDATE SET history_id = EXCLUDED.history_id, updated_at = now()",
    )
    .bind(mailbox)
    .bind(position as i64)
    .execute(conn)
    .await
    .map(drop)
}

/// One `email.file` per Gmail id not seen before; answers how many.
async fn enqueue_new(
    conn: &mut PgConnection,
    ids: &[String],
    max_attempts: i32,
) -> sqlx::Result<usize> {
    let new: Vec<String> = sqlx::query_scalar(
        "INSERT INTO gmail_seen (gmail_id) SELECT DISTINCT unnest($1::text[])
         ON CONFLICT DO NOTHING RETURNING gmail_id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    for gmail_id in &new {
        jobs::enqueue(
            conn,
            NewJob::of(&payloads::FileEmail {
                gmail_id: gmail_id.clone(),
            }),
            max_attempts,
        )
        .await?;
    }
    Ok(new.len())
}

pub struct FileEmailHandler {
    pub gmail: Option<Gmail>,
    pub mailbox: String,
    pub blobs: Arc<BlobStore>,
    /// `MAX_FILE_SIZE`: an attachment over it is refused, as an upload would be.
    pub max_file_size: u64,
    pub max_attempts: i32,
}

/// A parsed inbound message: what is kept of it.
pub struct Inbound {
    pub gmail_id: String,
    pub thread_id: String,
    pub message_id: Option<String>,
    pub sender: String,
    pub subject: String,
    pub text: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// Each attached file: its name and bytes.
    pub attachments: Vec<(String, Vec<u8>)>,
    pub at: DateTime<Utc>,
}

#[async_trait]
impl Handler<payloads::FileEmail> for FileEmailHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::FileEmail,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        let gmail = client(&self.gmail)?;
        let message = gmail
            .raw_message(&payload.gmail_id)
            .await
            .map_err(provider_error)?;
        let ours = message.label_ids.iter().any(|l| l == "SENT")
            && !message.label_ids.iter().any(|l| l == "INBOX");
        if ours {
            return Ok(());
        }
        let Some(inbound) = parse(&message.id, &message.thread_id, &message.raw) else {
            return Err(JobError::permanent(format!(
                "Gmail message {} is not an RFC 5322 message we can read",
                payload.gmail_id
            )));
        };
        if inbound.sender.eq_ignore_ascii_case(&self.mailbox) {
            return Ok(()); // Our own, copied to the inbox.
        }
        if already_filed(conn, &inbound).await? {
            return Ok(());
        }
        match match_customer(conn, &inbound).await? {
            Some(customer) => {
                if let Some(mut c) = record(conn, &inbound, &customer, &self.mailbox).await? {
                    self.store_attachments(conn, &inbound, &mut c).await?;
                    writes::announce_arrival(conn, &c).await?;
                }
            }
            None => keep_unmatched(conn, &inbound).await?,
        }
        Ok(())
    }
}

impl FileEmailHandler {
    /// The attachments, stored as uploads are (sniffed by content, the size limit,
    /// `file.process` for hashing and thumbnails) and listed on the communication. A
    /// refused one is named in `metadata.refused_attachments` with the reason. (Bytes
    /// stored by an attempt whose transaction then fails are left unreferenced.)
    async fn store_attachments(
        &self,
        conn: &mut PgConnection,
        inbound: &Inbound,
        c: &mut Communication,
    ) -> Result<(), JobError> {
        if inbound.attachments.is_empty() {
            return Ok(());
        }
        let customer = c.customer_id.clone();
        let mut listed = Vec::new();
        let mut refused = Vec::new();
        for (name, bytes) in &inbound.attachments {
            let size = bytes.len() as u64;
            if size > self.max_file_size {
                refused.push(json!({ "filename": name, "reason": format!("larger than the limit of {} bytes", self.max_file_size) }));
                continue;
            }
            let sniffed = match filetype::sniff(bytes, name) {
                Ok(sniffed) => sniffed,
                Err(refusal) => {
                    refused.push(json!({ "filename": name, "reason": refusal.to_string() }));
                    continue;
                }
            };
            let stored_name = filetype::stored_name(sniffed.extension);
            let key = ObjectKey::parse(&format!("objects/{stored_name}"))
                .map_err(|e| JobError::permanent(e.to_string()))?;
            let body =
                futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes.clone()))]);
            self.blobs
                .put(&key, body, self.max_file_size)
                .await
                .map_err(|e| JobError::transient(format!("storing attachment {name}: {e}")))?;
            let id = Uuid::now_v7();
            store::insert_file(
                conn,
                &store::NewFile {
                    id,
                    customer_id: &customer,
                    communication_id: Some(c.id),
                    uploaded_by: &inbound.sender,
                    original_name: name,
                    stored_name: &stored_name,
                    file_size: size as i64,
                    file_type: sniffed.mime,
                    file_category: sniffed.category.as_str(),
                    staging_key: key.as_str(),
                },
            )
            .await?;
            jobs::enqueue(
                conn,
                NewJob::of(&payloads::ProcessFile { file_id: id }).for_customer(&customer),
                self.max_attempts,
            )
            .await?;
            listed.push(json!({
                "file_id": id,
                "filename": name,
                "url": filetype::file_url(&stored_name),
                "thumbnail_url": (sniffed.category == filetype::Category::Images)
                    .then(|| filetype::thumbnail_url(&stored_name)),
                "file_type": sniffed.mime,
                "file_size": size,
            }));
        }
        c.attachments = json!(listed);
        if !refused.is_empty() {
            c.metadata = json!({ "refused_attachments": refused });
        }
        writes::set_attachments_and_metadata(conn, c.id, &c.attachments, &c.metadata).await?;
        Ok(())
    }
}

fn bracketed(id: &str) -> String {
    storable(&format!(
        "<{}>",
        id.trim().trim_start_matches('<').trim_end_matches('>')
    ))
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![bracketed(id)],
        HeaderValue::TextList(ids) => ids.iter().map(|id| bracketed(id)).collect(),
        _ => Vec::new(),
    }
}

fn sender(address: Option<&Address<'_>>) -> Option<String> {
    address
        .into_iter()
        .flat_map(Address::iter)
        .find_map(|a| a.address())
        .map(|a| EmailAddress::parse(a).map_or_else(|_| a.to_owned(), |e| e.as_str().to_owned()))
}

/// A mail as Gmail hands it over (RFC 822 bytes), or `None` when it has no sender.
/// Public for the fuzz target (`fuzz/fuzz_targets/inbound_email.rs`).
pub fn parse(gmail_id: &str, thread_id: &str, raw: &[u8]) -> Option<Inbound> {
    let message = MessageParser::default().parse(raw)?;
    Some(Inbound {
        gmail_id: gmail_id.to_owned(),
        thread_id: thread_id.to_owned(),
        // A NUL in a mail (PostgreSQL cannot store it) is replaced, not refused: the
        // mail is the customer's, and is filed.
        message_id: message.message_id().map(bracketed),
        sender: storable(&sender(message.from())?),
        subject: storable(message.subject().unwrap_or_default()),
        text: message
            .body_text(0)
            .map(|text| storable(text.trim()))
            .unwrap_or_default(),
        in_reply_to: ids(message.in_reply_to()).into_iter().next(),
        references: ids(message.references()),
        attachments: message
            .attachments()
            .map(|part| {
                (
                    part.attachment_name().unwrap_or("attachment").to_owned(),
                    part.contents().to_vec(),
                )
            })
            .collect(),
        at: message
            .date()
            .and_then(|d| DateTime::from_timestamp(d.to_timestamp(), 0))
            .unwrap_or_else(Utc::now),
    })
}

async fn already_filed(conn: &mut PgConnection, inbound: &Inbound) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM communications
                        WHERE type = 'email' AND direction = 'inbound'
                          AND (provider_message_id = $1 OR rfc822_message_id = $2))
             OR EXISTS (SELECT 1 FROM unmatched_emails WHERE gmail_id = $1 OR message_id = $2)",
    )
    .bind(&inbound.gmail_id)
    .bind(&inbound.message_id)
    .fetch_one(conn)
    .await
}

/// The thread of a mail we sent, then the messages it answers, then the sender's
/// address among the contacts.
async fn match_customer(
    conn: &mut PgConnection,
    inbound: &Inbound,
) -> sqlx::Result<Option<CustomerId>> {
    let by_thread: Option<CustomerId> = sqlx::query_scalar(
        "SELECT customer_id FROM communications
         WHERE type = 'email' AND provider_thread_id = $1
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(&inbound.thread_id)
    .fetch_optional(&mut *conn)
    .await?;
    if by_thread.is_some() {
        return Ok(by_thread);
    }
    let answered: Vec<String> = inbound
        .in_reply_to
        .iter()
        .chain(&inbound.references)
        .cloned()
        .collect();
    let by_reply: Option<CustomerId> = sqlx::query_scalar(
        "SELECT customer_id FROM communications
         WHERE type = 'email' AND rfc822_message_id = ANY($1)
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(&answered)
    .fetch_optional(&mut *conn)
    .await?;
    if by_reply.is_some() {
        return Ok(by_reply);
    }
    sqlx::query_scalar(
        "SELECT customer_id FROM customer_contacts WHERE kind = 'email' AND lower(address) = lower($1)",
    )
    .bind(&inbound.sender)
    .fetch_optional(conn)
    .await
}

async fn record(
    conn: &mut PgConnection,
    inbound: &Inbound,
    customer: &CustomerId,
    mailbox: &str,
) -> sqlx::Result<Option<Communication>> {
    let references = (!inbound.references.is_empty()).then(|| inbound.references.join(" "));
    writes::file_inbound_email(
        conn,
        &InboundEmail {
            customer_id: customer,
            gmail_id: &inbound.gmail_id,
            thread_id: &inbound.thread_id,
            message_id: inbound.message_id.as_deref(),
            sender: &inbound.sender,
            subject: &inbound.subject,
            text: &inbound.text,
            in_reply_to: inbound.in_reply_to.as_deref(),
            references: references.as_deref(),
            received_at: inbound.at,
            mailbox,
        },
    )
    .await
}

async fn keep_unmatched(conn: &mut PgConnection, inbound: &Inbound) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO unmatched_emails (id, gmail_id, thread_id, message_id, sender, subject,
                                       message, in_reply_to, \"references\", received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (gmail_id) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(&inbound.gmail_id)
    .bind(&inbound.thread_id)
    .bind(&inbound.message_id)
    .bind(&inbound.sender)
    .bind(&inbound.subject)
    .bind(&inbound.text)
    .bind(&inbound.in_reply_to)
    .bind((!inbound.references.is_empty()).then(|| inbound.references.join(" ")))
    .bind(inbound.at)
    .execute(conn)
    .await
    .map(drop)
}
