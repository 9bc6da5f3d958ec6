//! Sending through a provider at most once, over any number of attempts and crashes,
//! without holding a database connection while the provider answers.
//!
//! A provider call cannot share a transaction with our database, so a send runs in two
//! phases. [`call`] runs outside the job's transaction (the runtime's outside phase) and
//! leaves evidence in `provider_sends`, each write committed at once on a connection of
//! its own:
//!
//! 1. before the call, a row in state `sending` (the intent; at most one per
//!    communication can be under way, so two deliveries of one job cannot both call);
//! 2. after it, `accepted` with the provider's id, `not_sent` or `rejected` when the
//!    provider certainly did not take it, `unknown` when the call ended without an
//!    answer (a timeout after the request left, a dropped connection).
//!
//! [`record`] then runs in the job's transaction and turns `accepted` into the
//! communication's `sent`, with its event.
//!
//! Any attempt (after a crash, a timeout or a retry) reads the evidence first:
//! `accepted` means the message went out and only the bookkeeping is left; `unknown`,
//! or a `sending` older than a call can last (its worker died mid-call), means the
//! outcome is unknown, so the provider is asked whether it has the message (Gmail by our
//! Message-ID, RingCentral by its message store) before anything is sent again; a recent
//! `sending` means another delivery is calling right now, so this one waits (busy: no
//! attempt is spent) until that call must have ended. Only
//! nothing, or a reconciliation that finds nothing, leads to a new call.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use commcenter_providers::error::{Failure, ProviderError};
use commcenter_shared::{
    domain::CommunicationStatus,
    domain::communications::{
        Communication,
        writes::{self, ProviderIds},
    },
    domain::reach,
    ledger::jobs::{Job, ProviderReport},
};

use super::messages::{attachments_ready, existing};
use crate::{
    crash,
    job::{Handler, JobContext, JobError},
};

/// What a provider said when it took a message.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The provider's id for the message (RingCentral message-store id, Gmail id).
    pub id: String,
    /// The provider's status word (`Queued`, `Sent`, `SENT`).
    pub status: String,
    /// The provider's conversation or thread, kept for replies.
    pub thread_id: Option<String>,
}

/// One provider's way of sending a communication.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// `provider_sends.provider`: `ringcentral` or `gmail`.
    const PROVIDER: &'static str;
    /// The job kind that sends on this channel.
    type Job: Job;
    /// What `prepare` makes ready to send (a composed email, fitted MMS files).
    type Prepared: Send;

    /// Loads and checks everything the call needs; a refusal here is permanent and
    /// nothing has been sent.
    async fn prepare(
        &self,
        conn: &mut PgConnection,
        communication: &Communication,
    ) -> Result<Self::Prepared, JobError>;

    async fn send(&self, prepared: Self::Prepared) -> Result<Accepted, ProviderError>;

    /// Does the provider have this communication from an attempt whose outcome we do
    /// not know, started at `since`?
    async fn find(
        &self,
        communication: &Communication,
        since: DateTime<Utc>,
    ) -> Result<Option<Accepted>, ProviderError>;
}

/// The handler of every provider send: the outside phase calls the provider at most
/// once ([`call`]); the job's transaction records the outcome ([`record`]); a dead job
/// fails its communication.
pub struct SendHandler<C> {
    /// The channel, or why this worker cannot send on it (the settings to set): then
    /// each job fails permanently with that reason, rather than waiting unconsumed.
    pub channel: Result<C, &'static str>,
    /// Where the never-twice evidence is committed, apart from the job's transaction.
    pub sends: PgPool,
    /// How long a call can be under way ([`under_way_at_most`]).
    pub under_way_for: Duration,
}

#[async_trait]
impl<C: Channel> Handler<C::Job> for SendHandler<C> {
    fn works_outside(&self) -> bool {
        true
    }

    async fn outside(&self, payload: &C::Job, job: &JobContext) -> Result<(), JobError> {
        let channel = self
            .channel
            .as_ref()
            .map_err(|why| JobError::permanent(*why))?;
        call(
            channel,
            &self.sends,
            sent(payload)?,
            job,
            self.under_way_for,
        )
        .await
    }

    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &C::Job,
        job: &JobContext,
    ) -> Result<(), JobError> {
        record(conn, sent(payload)?, job).await
    }
}

/// The communication a send job sends (every send kind `delivers` one).
fn sent(payload: &impl Job) -> Result<Uuid, JobError> {
    payload
        .delivers()
        .ok_or_else(|| JobError::permanent("this job kind names no communication to send"))
}

/// How long a provider call can be under way: its timeout (the intent is committed just
/// before the call starts), and a margin for clocks. A `sending` row older than this
/// belongs to a worker that died mid-call.
pub fn under_way_at_most(call_timeout: Duration) -> Duration {
    call_timeout + Duration::from_secs(2)
}

/// The outside phase of one attempt: everything up to and including the provider call,
/// on connections of `sends` (never the runtime's), none held during the call.
pub async fn call<C: Channel>(
    channel: &C,
    sends: &PgPool,
    communication_id: Uuid,
    job: &JobContext,
    under_way_for: Duration,
) -> Result<(), JobError> {
    let mut conn = sends.acquire().await?;
    let communication = existing(&mut conn, communication_id).await?;
    if communication.status != CommunicationStatus::Queued {
        return Ok(()); // Sent before, or failed: a redelivery; no second effect.
    }

    match earlier_send(&mut conn, communication.id, under_way_for).await? {
        Earlier::Accepted(_) => return Ok(()), // Went out: `record` records it.
        Earlier::UnderWay {
            started_at,
            remaining,
        } => {
            return Err(JobError::Busy {
                message: format!(
                    "another delivery of this job has been calling {} since {started_at}; \
                     checking again once that call must have ended",
                    provider_name::<C>()
                ),
                retry_after: remaining,
            });
        }
        Earlier::Unknown {
            send_id,
            started_at,
        } => match channel.find(&communication, started_at).await {
            Ok(Some(accepted))
                if !claimed_elsewhere(&mut conn, &communication, &accepted).await? =>
            {
                tracing::warn!(provider_id = %accepted.id, "an earlier attempt whose outcome was unknown did send; not sending again");
                settle_accepted(sends, send_id, &accepted, None).await?;
                return Ok(());
            }
            Ok(_) => settle_not_found(sends, communication.id).await?,
            Err(error) => {
                job.report_provider(report_of(&error));
                return Err(JobError::Transient {
                    message: format!(
                        "an earlier attempt may have sent this message and {} could not be \
                         asked whether it did (so nothing was sent): {error}",
                        provider_name::<C>()
                    ),
                    retry_after: retry_after_of(&error),
                });
            }
        },
        Earlier::Nothing => {}
    }

    attachments_ready(&mut conn, &communication).await?;
    let prepared = channel.prepare(&mut conn, &communication).await?;
    // A fallback of unread in-app messages goes only if one of them is still unread.
    if !reach::still_unread(&mut conn, &communication.metadata).await? {
        cancel_fallback(&mut conn, communication.id).await?;
        return Ok(());
    }
    drop(conn);
    let Some(send_id) = begin(sends, communication.id, job, C::PROVIDER).await? else {
        return Err(JobError::Busy {
            message: format!(
                "another delivery of this job is calling {} right now",
                provider_name::<C>()
            ),
            retry_after: under_way_for,
        });
    };
    crash::point(crash::BEFORE_PROVIDER_CALL);
    match channel.send(prepared).await {
        Ok(accepted) => {
            crash::point(crash::AFTER_PROVIDER_ACCEPTED);
            // If this write fails the row stays `sending`: a later attempt reconciles.
            settle_accepted(sends, send_id, &accepted, Some(200)).await?;
            job.report_provider(ProviderReport {
                status: Some(accepted.status),
                id: Some(accepted.id),
                http_status: Some(200),
            });
            crash::point(crash::AFTER_SEND_RECORDED);
            Ok(())
        }
        Err(error) => {
            job.report_provider(report_of(&error));
            let (state, job_error) = match &error.failure {
                Failure::Permanent => (
                    "rejected",
                    JobError::permanent(format!("{} refused it: {error}", provider_name::<C>())),
                ),
                Failure::Transient { retry_after } => (
                    "not_sent",
                    JobError::Transient {
                        message: error.to_string(),
                        retry_after: *retry_after,
                    },
                ),
                Failure::Unknown => (
                    "unknown",
                    JobError::transient(format!(
                        "outcome unknown, will check with {} before sending again: {error}",
                        provider_name::<C>()
                    )),
                ),
            };
            settle_failed(sends, send_id, state, error.http_status, &error.to_string()).await?;
            Err(job_error)
        }
    }
}

/// A fallback whose messages were all read meanwhile: not sent, failed with the
/// reason, and announced, in one transaction.
async fn cancel_fallback(conn: &mut PgConnection, communication_id: Uuid) -> Result<(), JobError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let cancelled = writes::cancel_fallback(&mut tx, communication_id).await?;
    tx.commit().await?;
    if cancelled {
        tracing::info!(communication = %communication_id, "fallback not sent: its messages were read first");
    }
    Ok(())
}

/// The inside phase, in the job's transaction: the communication is `sent` once a send
/// of it is `accepted`.
pub async fn record(
    conn: &mut PgConnection,
    communication_id: Uuid,
    job: &JobContext,
) -> Result<(), JobError> {
    let communication = existing(conn, communication_id).await?;
    if communication.status != CommunicationStatus::Queued {
        return Ok(());
    }
    // Only `accepted` counts here; how old a `sending` is does not matter.
    match earlier_send(conn, communication.id, Duration::ZERO).await? {
        Earlier::Accepted(accepted) => record_sent(conn, job, &communication, accepted).await,
        _ => Err(JobError::transient(
            "no send of this message is recorded as accepted yet",
        )),
    }
}

fn provider_name<C: Channel>() -> &'static str {
    match C::PROVIDER {
        "ringcentral" => "RingCentral",
        "gmail" => "Gmail",
        other => other,
    }
}

fn report_of(error: &ProviderError) -> ProviderReport {
    ProviderReport {
        status: error.code.clone(),
        id: None,
        http_status: error.http_status,
    }
}

fn retry_after_of(error: &ProviderError) -> Option<std::time::Duration> {
    match error.failure {
        Failure::Transient { retry_after } => retry_after,
        _ => None,
    }
}

/// The communication went out: its status moves to `sent`, the provider's ids are
/// kept, and the conversation hears of it.
async fn record_sent(
    conn: &mut PgConnection,
    job: &JobContext,
    communication: &Communication,
    accepted: Accepted,
) -> Result<(), JobError> {
    if job.provider_report().id.is_none() {
        // Sent by an earlier attempt: this one only records it.
        job.report_provider(ProviderReport {
            status: Some(accepted.status.clone()),
            id: Some(accepted.id.clone()),
            http_status: None,
        });
    }
    let ids = ProviderIds {
        message_id: &accepted.id,
        status: &accepted.status,
        thread_id: accepted.thread_id.as_deref(),
    };
    writes::record_accepted(conn, communication.id, ids).await?;
    Ok(())
}

/// A message the provider found for us that another communication already owns (the
/// same text to the same number, sent twice on purpose) is not ours.
async fn claimed_elsewhere(
    conn: &mut PgConnection,
    communication: &Communication,
    accepted: &Accepted,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM communications
                        WHERE type = $1 AND provider_message_id = $2 AND id <> $3)",
    )
    .bind(communication.communication_type)
    .bind(&accepted.id)
    .bind(communication.id)
    .fetch_one(conn)
    .await
}

/// What earlier attempts left in `provider_sends`.
enum Earlier {
    Nothing,
    Accepted(Accepted),
    /// Another delivery is calling the provider right now; that call must have ended
    /// `remaining` from now.
    UnderWay {
        started_at: DateTime<Utc>,
        remaining: Duration,
    },
    /// A send that may or may not have reached the provider.
    Unknown {
        send_id: Uuid,
        started_at: DateTime<Utc>,
    },
}

/// A row of `provider_sends` that says something about whether we sent.
#[derive(sqlx::FromRow)]
struct SendEvidence {
    id: Uuid,
    state: String,
    provider_message_id: Option<String>,
    provider_status: Option<String>,
    provider_thread_id: Option<String>,
    started_at: DateTime<Utc>,
    /// For a call still under way: how long until it must have ended, by the database's
    /// clock (the one that stamped `started_at`), so a worker's skewed clock cannot take
    /// a live call for a dead one.
    under_way_for_ms: Option<i64>,
}

/// Reads the evidence; a `sending` younger than `under_way_for` is a call under way.
async fn earlier_send(
    conn: &mut PgConnection,
    communication_id: Uuid,
    under_way_for: Duration,
) -> sqlx::Result<Earlier> {
    let rows: Vec<SendEvidence> = sqlx::query_as(
        "SELECT id, state, provider_message_id, provider_status, provider_thread_id, started_at,
                CASE WHEN state = 'sending' AND started_at + make_interval(secs => $2) > now()
                     THEN (extract(epoch FROM started_at + make_interval(secs => $2) - now()) * 1000)::bigint
                END AS under_way_for_ms
         FROM provider_sends
         WHERE communication_id = $1 AND state IN ('accepted', 'sending', 'unknown')
         ORDER BY started_at",
    )
    .bind(communication_id)
    .bind(under_way_for.as_secs_f64())
    .fetch_all(&mut *conn)
    .await?;
    let accepted = rows
        .iter()
        .find(|r| r.state == "accepted" && r.provider_message_id.is_some());
    if let Some(SendEvidence {
        provider_message_id: Some(id),
        provider_status,
        provider_thread_id,
        ..
    }) = accepted
    {
        return Ok(Earlier::Accepted(Accepted {
            id: id.clone(),
            status: provider_status.clone().unwrap_or_default(),
            thread_id: provider_thread_id.clone(),
        }));
    }
    if let Some((row, remaining_ms)) = rows.iter().find_map(|r| Some((r, r.under_way_for_ms?))) {
        return Ok(Earlier::UnderWay {
            started_at: row.started_at,
            remaining: Duration::from_millis(remaining_ms.max(0) as u64),
        });
    }
    // The earliest unknown send bounds the search; later ones are covered by it.
    Ok(match rows.first() {
        Some(unknown) => Earlier::Unknown {
            send_id: unknown.id,
            started_at: unknown.started_at,
        },
        None => Earlier::Nothing,
    })
}

/// Commits the intent to send before the provider is called; `None` when another
/// delivery's intent is under way (the unique index lets one win).
async fn begin(
    sends: &PgPool,
    communication_id: Uuid,
    job: &JobContext,
    provider: &str,
) -> sqlx::Result<Option<Uuid>> {
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO provider_sends (id, communication_id, job_id, attempt, provider)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (communication_id) WHERE state = 'sending' DO NOTHING",
    )
    .bind(id)
    .bind(communication_id)
    .bind(job.id)
    .bind(job.attempt)
    .bind(provider)
    .execute(sends)
    .await?
    .rows_affected();
    Ok((inserted == 1).then_some(id))
}

async fn settle_accepted(
    sends: &PgPool,
    send_id: Uuid,
    accepted: &Accepted,
    http_status: Option<u16>,
) -> sqlx::Result<()> {
    // Every other unknown send of this communication is the same message, found.
    sqlx::query(
        "WITH this AS (
             UPDATE provider_sends SET state = 'accepted', provider_message_id = $2,
                    provider_status = $3, http_status = $4, provider_thread_id = $5,
                    error = NULL, finished_at = now()
             WHERE id = $1 RETURNING communication_id)
         UPDATE provider_sends SET state = 'not_sent', finished_at = now(),
                error = 'superseded: the provider had the message from another attempt'
         WHERE communication_id = (SELECT communication_id FROM this)
           AND state IN ('sending', 'unknown') AND id <> $1",
    )
    .bind(send_id)
    .bind(&accepted.id)
    .bind(&accepted.status)
    .bind(http_status.map(|s| s as i16))
    .bind(&accepted.thread_id)
    .execute(sends)
    .await?;
    Ok(())
}

async fn settle_failed(
    sends: &PgPool,
    send_id: Uuid,
    state: &str,
    http_status: Option<u16>,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE provider_sends SET state = $2, http_status = $3, error = $4, finished_at = now()
         WHERE id = $1",
    )
    .bind(send_id)
    .bind(state)
    .bind(http_status.map(|s| s as i16))
    .bind(error)
    .execute(sends)
    .await?;
    Ok(())
}

/// Every unknown send of the communication: the provider has none of them.
async fn settle_not_found(sends: &PgPool, communication_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE provider_sends SET state = 'not_sent', finished_at = now(),
                error = concat_ws('; ', error, 'the provider had no such message when asked before sending again')
         WHERE communication_id = $1 AND state IN ('sending', 'unknown')",
    )
    .bind(communication_id)
    .execute(sends)
    .await?;
    Ok(())
}
