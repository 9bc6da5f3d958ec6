//! Replay and discard, of one job or of a batch of a bulk action: the ledger rows, the
//! communications they serve, the audit entry and the events, in one transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, QueryBuilder};
use uuid::Uuid;

use crate::{
    domain::{CommunicationStatus, CustomerId},
    events::{self, Event, EventBody},
    jobs::{self, JobState},
};

use super::filter::{JobFilter, SENDING_KINDS};

/// What an operator can do to jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Run it again from the outbox, attempts counted afresh.
    Replay,
    /// Cancel it: it will not run (again).
    Discard,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::Discard => "discard",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "replay" => Some(Self::Replay),
            "discard" => Some(Self::Discard),
            _ => None,
        }
    }

    /// The states this action applies to. A retrying job can be replayed (it runs now
    /// instead of after its delay); a pending or queued one is about to run already.
    pub fn eligible(self) -> &'static [JobState] {
        match self {
            Self::Replay => &[JobState::Dead, JobState::Cancelled, JobState::Retrying],
            Self::Discard => &[
                JobState::Pending,
                JobState::Queued,
                JobState::Retrying,
                JobState::Dead,
            ],
        }
    }

    /// What a filter with no state means for this action.
    pub fn default_states(self) -> &'static [JobState] {
        &[JobState::Dead]
    }

    /// Why this action does not apply to a job in `state`, for the operator.
    pub fn refusal(self, state: JobState) -> Option<String> {
        if self.eligible().contains(&state) {
            return None;
        }
        Some(match (self, state) {
            (Self::Replay, JobState::Succeeded) => {
                "the job already succeeded; replaying it could repeat its effect".to_owned()
            }
            (Self::Replay, JobState::Pending | JobState::Queued | JobState::Running) => {
                format!("the job is {}: it is about to run already", state.as_str())
            }
            (Self::Discard, JobState::Succeeded) => {
                "the job already succeeded; there is nothing to discard".to_owned()
            }
            (Self::Discard, JobState::Cancelled) => "the job is already discarded".to_owned(),
            (_, state) => format!("a {} job cannot be {}ed", state.as_str(), self.as_str()),
        })
    }

    pub(super) fn audit_name(self, bulk: bool) -> &'static str {
        match (self, bulk) {
            (Self::Replay, false) => "replay",
            (Self::Discard, false) => "discard",
            (Self::Replay, true) => "bulk_replay",
            (Self::Discard, true) => "bulk_discard",
        }
    }
}

/// The result of acting on one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acted {
    Done { previous_state: JobState },
    NotFound,
    Refused { state: JobState, reason: String },
}

/// Replays or discards one job in the caller's transaction. Waits for the job's row
/// lock, so a job being run is acted on after its attempt, as it then stands.
pub async fn act_on_job(
    conn: &mut PgConnection,
    action: Action,
    job_id: Uuid,
    operator: &str,
    reason: &str,
) -> anyhow::Result<Acted> {
    let Some(row) = jobs::lock(conn, job_id).await? else {
        return Ok(Acted::NotFound);
    };
    let state = row.state;
    if let Some(reason) = action.refusal(state) {
        return Ok(Acted::Refused { state, reason });
    }
    let scope = Scope::Job(job_id);
    act_on_batch(conn, action, &scope, operator, reason, None, 1).await?;
    Ok(Acted::Done {
        previous_state: state,
    })
}

/// Which jobs a batch looks at.
pub(super) enum Scope<'a> {
    Job(Uuid),
    /// The filter's jobs after `after` (by id) not changed since `as_of`.
    Filter {
        filter: &'a JobFilter,
        after: Option<Uuid>,
        as_of: DateTime<Utc>,
    },
}

/// Acts on up to `limit` eligible jobs of `scope` in one statement: takes their row
/// locks, skipping rows someone else holds (another action, a running attempt), writes
/// their new state and an audit entry each; then moves their communications. Returns
/// the ids acted on, in id order.
pub(super) async fn act_on_batch(
    conn: &mut PgConnection,
    action: Action,
    scope: &Scope<'_>,
    operator: &str,
    reason: &str,
    action_id: Option<Uuid>,
    limit: i64,
) -> anyhow::Result<Vec<Uuid>> {
    let mut q = QueryBuilder::new(
        "WITH picked AS (
             SELECT id, state AS previous_state, last_error AS previous_error,
                    last_error_class AS previous_error_class
             FROM jobs WHERE TRUE",
    );
    match scope {
        Scope::Job(id) => {
            q.push(" AND id = ").push_bind(*id);
        }
        Scope::Filter {
            filter,
            after,
            as_of,
        } => {
            filter.push_conditions(&mut q);
            q.push(" AND updated_at <= ").push_bind(*as_of);
            if let Some(after) = after {
                q.push(" AND id > ").push_bind(*after);
            }
        }
    }
    let eligible: Vec<&str> = action.eligible().iter().map(|s| s.as_str()).collect();
    q.push(" AND state = ANY(")
        .push_bind(eligible)
        .push(") ORDER BY id LIMIT ")
        .push_bind(limit)
        .push(" FOR UPDATE SKIP LOCKED), acted AS (UPDATE jobs j SET ");
    q.push(match action {
        Action::Replay => {
            "state = 'pending', attempt_base = j.attempts, generation = j.generation + 1,
             next_attempt_at = NULL, last_error = NULL, last_error_class = NULL,
             first_failed_at = NULL, last_failed_at = NULL, queued_at = NULL, finished_at = NULL,
             replayed_at = now(), updated_at = now()"
        }
        Action::Discard => {
            "state = 'cancelled', next_attempt_at = NULL, finished_at = now(), updated_at = now()"
        }
    });
    q.push(
        " FROM picked WHERE j.id = picked.id
          RETURNING j.id, j.kind, j.communication_id, picked.previous_state, picked.previous_error,
                    picked.previous_error_class),
         audited AS (INSERT INTO ops_audit (operator, action, job_id, action_id, reason,
                                            previous_state, previous_error, previous_error_class)
                     SELECT ",
    )
    .push_bind(operator.to_owned())
    .push(", ")
    .push_bind(action.as_str())
    .push(", id, ")
    .push_bind(action_id)
    .push(", ")
    .push_bind(reason.to_owned())
    .push(
        ", previous_state, previous_error, previous_error_class FROM acted)
         SELECT id, kind, communication_id FROM acted ORDER BY id",
    );
    let acted: Vec<(Uuid, String, Option<Uuid>)> = q.build_query_as().fetch_all(&mut *conn).await?;

    let communications: Vec<Uuid> = acted
        .iter()
        .filter(|(_, kind, _)| SENDING_KINDS.contains(&kind.as_str()))
        .filter_map(|(_, _, communication)| *communication)
        .collect();
    if !communications.is_empty() {
        match action {
            Action::Replay => requeue_communications(conn, &communications).await?,
            Action::Discard => {
                let why = format!("discarded by an operator: {reason}");
                fail_communications(conn, &communications, &why).await?;
            }
        }
    }
    Ok(acted.into_iter().map(|(id, ..)| id).collect())
}

/// A replayed send: its failed communication is `queued` again (the one move back
/// the forward-only statuses allow, and only an operator makes), and the
/// conversation hears of it.
async fn requeue_communications(conn: &mut PgConnection, ids: &[Uuid]) -> anyhow::Result<()> {
    let moved: Vec<(Uuid, String)> = sqlx::query_as(
        "UPDATE communications SET status = 'queued', failure_reason = NULL, updated_at = now()
         WHERE id = ANY($1) AND status = 'failed'
         RETURNING id, customer_id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    for (id, customer) in moved {
        announce(
            conn,
            id,
            &customer,
            CommunicationStatus::Queued,
            CommunicationStatus::Failed,
            None,
        )
        .await?;
    }
    Ok(())
}

/// A discarded send that had not gone out: its communication fails with the reason.
async fn fail_communications(
    conn: &mut PgConnection,
    ids: &[Uuid],
    reason: &str,
) -> anyhow::Result<()> {
    let moved: Vec<(Uuid, String)> = sqlx::query_as(
        "UPDATE communications SET status = 'failed', failure_reason = $2, updated_at = now()
         WHERE id = ANY($1) AND status = 'queued'
         RETURNING id, customer_id",
    )
    .bind(ids)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    for (id, customer) in moved {
        announce(
            conn,
            id,
            &customer,
            CommunicationStatus::Failed,
            CommunicationStatus::Queued,
            Some(reason),
        )
        .await?;
    }
    Ok(())
}

async fn announce(
    conn: &mut PgConnection,
    communication_id: Uuid,
    customer: &str,
    status: CommunicationStatus,
    previous: CommunicationStatus,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let customer = CustomerId::parse(customer).map_err(|e| anyhow::anyhow!(e.0))?;
    let event = Event::now(
        customer,
        EventBody::CommunicationStatus {
            communication_id,
            status,
            previous,
            reason: reason.map(str::to_owned),
        },
    );
    events::record(conn, &event).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_why() {
        assert!(
            Action::Replay
                .refusal(JobState::Succeeded)
                .unwrap()
                .contains("already succeeded")
        );
        assert_eq!(Action::Replay.refusal(JobState::Dead), None);
        assert_eq!(Action::Discard.refusal(JobState::Retrying), None);
        assert!(Action::Discard.refusal(JobState::Cancelled).is_some());
    }
}
