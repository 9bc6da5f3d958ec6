//! What RingCentral tells us, and calls staff logged:
//!
//! - `ringcentral.event`: a webhook notification. Message-store events carry only ids
//!   and counts, so changed messages are fetched again; instant SMS events carry the
//!   whole inbound message. Outbound statuses move forward only (`Delivered`,
//!   `DeliveryFailed`, `SendingFailed`); inbound SMS become inbound communications in
//!   the conversation of the customer with that number.
//! - `call.log`: a call staff logged is announced in its conversation.
//! - `call_log.import`: RingCentral's call log, from where the last import stopped, into
//!   phone communications, each call once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use commcenter_providers::{
    error::ProviderError,
    ringcentral::{CallLogQuery, CallRecord, MessageRecord, RingCentral},
};
use commcenter_shared::{
    domain::communications::writes::{self, Arrival, Why},
    domain::{CommunicationStatus, CommunicationType, CustomerId, Direction},
    ledger::jobs::payloads,
};

use super::messages::existing;
use crate::job::{Handler, JobContext, JobError};

/// Outbound SMS whose status is still open are re-fetched when RingCentral says some
/// message changed (its event does not say which): the most recent, at most this many,
/// and only those sent within [`REFRESH_WITHIN`] (carriers report within minutes; an
/// SMS never reported on must not cost a read on every event for ever).
const REFRESH_AT_MOST: i64 = 200;
const REFRESH_WITHIN: &str = "1 day";

pub struct RingCentralEventHandler {
    pub ringcentral: Option<RingCentral>,
}

#[async_trait]
impl Handler<payloads::RingCentralEvent> for RingCentralEventHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::RingCentralEvent,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        let notification = &payload.notification;
        let event = notification["event"].as_str().unwrap_or_default();
        let body = &notification["body"];
        if event.contains("/message-store/instant") {
            // The whole inbound message is in the body.
            let record = MessageRecord::from_json(body.clone()).map_err(|e| {
                JobError::permanent(format!("instant message event has no message: {e}"))
            })?;
            return apply_message(conn, &record).await;
        }
        if event.contains("/message-store") {
            let ringcentral = client(&self.ringcentral)?;
            return self.refetch_changed(conn, ringcentral, body).await;
        }
        tracing::info!(event, "RingCentral event of no interest; ignored");
        Ok(())
    }
}

impl RingCentralEventHandler {
    async fn refetch_changed(
        &self,
        conn: &mut PgConnection,
        ringcentral: &RingCentral,
        body: &Value,
    ) -> Result<(), JobError> {
        let changes = body["changes"].as_array().cloned().unwrap_or_default();
        let mut ids: Vec<String> = Vec::new();
        let mut updated = false;
        for change in &changes {
            if !matches!(change["type"].as_str(), Some("SMS") | Some("Pager") | None) {
                continue;
            }
            if let Some(new) = change["newMessageIds"].as_array() {
                ids.extend(new.iter().filter_map(|id| match id {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }));
            }
            updated |= change["updatedCount"].as_i64().unwrap_or(0) > 0;
        }
        if updated {
            // Which message changed is not said: every open outbound SMS is asked about.
            let open: Vec<String> = sqlx::query_scalar(
                "SELECT provider_message_id FROM communications
                 WHERE type = 'sms' AND direction = 'outbound' AND status = 'sent'
                   AND provider_message_id IS NOT NULL
                   AND created_at > now() - $2::interval
                 ORDER BY created_at DESC LIMIT $1",
            )
            .bind(REFRESH_AT_MOST)
            .bind(REFRESH_WITHIN)
            .fetch_all(&mut *conn)
            .await?;
            ids.extend(open);
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            let record = ringcentral.get_message(&id).await.map_err(provider_error)?;
            apply_message(conn, &record).await?;
        }
        Ok(())
    }
}

/// A message RingCentral has: an outbound one of ours moves its status forward; an
/// inbound SMS becomes a communication once.
async fn apply_message(conn: &mut PgConnection, record: &MessageRecord) -> Result<(), JobError> {
    if record.direction.eq_ignore_ascii_case("inbound") {
        return record_inbound(conn, record).await;
    }
    let Some(ours) = sqlx::query_scalar::<_, Uuid>(
        "SELECT id FROM communications WHERE type = 'sms' AND provider_message_id = $1",
    )
    .bind(&record.id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        tracing::debug!(id = %record.id, "an outbound message we did not send; ignored");
        return Ok(());
    };
    advance_from_provider(conn, ours, &record.message_status).await
}

/// RingCentral's status words, ranked: a late `Sent` never overwrites `Delivered` or a
/// failure.
fn provider_rank(status: &str) -> i32 {
    match status {
        "Queued" => 0,
        "Sent" => 1,
        "Delivered" => 2,
        "DeliveryFailed" | "SendingFailed" => 3,
        _ => -1,
    }
}

async fn advance_from_provider(
    conn: &mut PgConnection,
    id: Uuid,
    provider_status: &str,
) -> Result<(), JobError> {
    let rank = provider_rank(provider_status);
    if rank < 0 {
        return Ok(());
    }
    let newer = |current: Option<&str>| current.map(provider_rank).unwrap_or(-1) < rank;
    if !writes::note_provider_status(conn, id, provider_status, newer).await? {
        return Ok(());
    }
    let (status, reason) = match provider_status {
        "Delivered" => (CommunicationStatus::Delivered, None),
        "DeliveryFailed" => (
            CommunicationStatus::Failed,
            Some("RingCentral: the carrier could not deliver the message (DeliveryFailed)"),
        ),
        "SendingFailed" => (
            CommunicationStatus::Failed,
            Some("RingCentral: the message could not be sent (SendingFailed)"),
        ),
        _ => (CommunicationStatus::Sent, None),
    };
    let why = Why { reason, by: None };
    writes::advance(conn, id, status, why).await?;
    Ok(())
}

async fn record_inbound(conn: &mut PgConnection, record: &MessageRecord) -> Result<(), JobError> {
    let Some(from) = record.from.as_deref() else {
        return Err(JobError::permanent(format!(
            "inbound message {} has no sender number",
            record.id
        )));
    };
    let customer = customer_for(conn, from).await?;
    // Seen before (both events name it, and RingCentral retries): nothing new.
    writes::file_arrival(
        conn,
        &Arrival {
            customer_id: &customer,
            communication_type: CommunicationType::Sms,
            direction: Direction::Inbound,
            sender: (from, "customer"),
            message: record.text.as_deref().unwrap_or_default(),
            addresses: (from, record.to.first().map(String::as_str)),
            provider: (
                &record.id,
                &record.message_status,
                record.conversation_id.as_deref(),
            ),
            duration_seconds: None,
            at: record.creation_time.unwrap_or_else(Utc::now),
            delivered_at: None,
        },
    )
    .await?;
    Ok(())
}

/// The customer this number belongs to; an unknown number gets a conversation of its own
/// (`unknown:<digits>`) that staff can see and reassign.
async fn customer_for(conn: &mut PgConnection, phone: &str) -> Result<CustomerId, JobError> {
    let known: Option<String> = sqlx::query_scalar(
        "SELECT customer_id FROM customer_contacts WHERE kind = 'phone' AND address = $1",
    )
    .bind(phone)
    .fetch_optional(&mut *conn)
    .await?;
    let raw = known.unwrap_or_else(|| {
        format!(
            "unknown:{}",
            phone
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
        )
    });
    CustomerId::parse(&raw)
        .map_err(|e| JobError::permanent(format!("no conversation for number {phone}: {e}")))
}

/// `call.log`: staff logged a call; it joins the conversation as happened.
pub struct LogCallHandler;

#[async_trait]
impl Handler<payloads::LogCall> for LogCallHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::LogCall,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        let call = existing(conn, payload.communication_id).await?;
        // A call that was made is delivered by definition; a redelivery finds it so.
        writes::deliver(conn, &call, CommunicationStatus::Delivered).await?;
        Ok(())
    }
}

/// `call_log.import`: pages through RingCentral's call log from the stored cursor.
pub struct ImportCallLogHandler {
    pub ringcentral: Option<RingCentral>,
}

/// The cursor's name in `provider_cursors`.
pub const CALL_LOG_CURSOR: &str = "ringcentral.call_log";
/// Calls appear in the log a little after they end: each import looks back this far
/// before its cursor (duplicates are skipped by the call's id).
const CALL_LOG_OVERLAP: chrono::Duration = chrono::Duration::minutes(10);
/// Calls per page asked of the call log (RingCentral's Heavy group: few, large pages).
const CALL_LOG_PAGE: u32 = 250;
/// The first import reaches back this far.
const FIRST_IMPORT_SPAN: chrono::Duration = chrono::Duration::days(7);

#[async_trait]
impl Handler<payloads::ImportCallLog> for ImportCallLogHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        _job: &payloads::ImportCallLog,
        context: &JobContext,
    ) -> Result<(), JobError> {
        let ringcentral = client(&self.ringcentral)?;
        let now = Utc::now();
        let cursor: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT position FROM provider_cursors WHERE name = $1 FOR UPDATE")
                .bind(CALL_LOG_CURSOR)
                .fetch_optional(&mut *conn)
                .await?;
        let from = cursor.map_or(now - FIRST_IMPORT_SPAN, |c| c - CALL_LOG_OVERLAP);
        let mut query = CallLogQuery::Range {
            date_from: from,
            date_to: Some(now),
            per_page: CALL_LOG_PAGE,
            page: 1,
        };
        let mut imported = 0usize;
        loop {
            let page = ringcentral.call_log(&query).await.map_err(provider_error)?;
            for call in &page.records {
                imported += usize::from(import_call(conn, call).await?);
            }
            match page.next_page {
                Some(next) => query = CallLogQuery::NextPage(next),
                None => break,
            }
        }
        sqlx::query(
            "INSERT INTO provider_cursors (name, position) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET position = $2, updated_at = now()",
        )
        .bind(CALL_LOG_CURSOR)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if imported > 0 {
            tracing::info!(imported, %from, "call log imported");
        } else {
            tracing::debug!(%from, "no new calls in the call log");
            context.found_nothing();
        }
        Ok(())
    }
}

/// One call from the log, once: `false` when it was already there.
async fn import_call(conn: &mut PgConnection, call: &CallRecord) -> Result<bool, JobError> {
    let inbound = call.direction.eq_ignore_ascii_case("inbound");
    let (remote, local) = if inbound {
        (call.from.as_deref(), call.to.as_deref())
    } else {
        (call.to.as_deref(), call.from.as_deref())
    };
    let Some(remote) = remote else {
        return Ok(false); // No number on the other side (an internal call): nothing to file.
    };
    let customer = customer_for(conn, remote).await?;
    let message = format!("{} call: {}", call.direction, call.result);
    let filed = writes::file_arrival(
        conn,
        &Arrival {
            customer_id: &customer,
            communication_type: CommunicationType::Phone,
            direction: if inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            sender: ("ringcentral", "system"),
            message: &message,
            addresses: (remote, local),
            provider: (&call.id, &call.result, None),
            duration_seconds: Some(call.duration as i32),
            at: call.start_time,
            delivered_at: Some(call.start_time),
        },
    )
    .await?;
    Ok(filed.is_some())
}

fn client(ringcentral: &Option<RingCentral>) -> Result<&RingCentral, JobError> {
    ringcentral.as_ref().ok_or_else(|| {
        JobError::permanent(
            "RingCentral is not configured on this worker (RINGCENTRAL_CLIENT_ID, \
             RINGCENTRAL_CLIENT_SECRET, RINGCENTRAL_JWT)",
        )
    })
}

/// Reads and imports repeat safely, so an unknown outcome is just another retry.
pub(crate) fn provider_error(error: ProviderError) -> JobError {
    use commcenter_providers::error::Failure;
    match error.failure {
        Failure::Permanent => JobError::permanent(error.to_string()),
        Failure::Transient { retry_after } => JobError::Transient {
            message: error.to_string(),
            retry_after,
        },
        Failure::Unknown => JobError::transient(error.to_string()),
    }
}
