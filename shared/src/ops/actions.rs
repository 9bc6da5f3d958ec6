//! Replay and discard, of one job or of a batch of a bulk action: the ledger rows, the
//! communications they serve, the audit entry and the events, in one transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, QueryBuilder};
use uuid::Uuid;

use crate::{
    domain::communications::writes,
    ledger::jobs::{self, JobState},
};

use super::filter::JobFilter;

pub use crate::ledger::jobs::Action;

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
    let pick = |q: &mut QueryBuilder<'_, sqlx::Postgres>| match scope {
        Scope::Job(id) => {
            q.push(" AND id = ").push_bind(*id);
        }
        Scope::Filter {
            filter,
            after,
            as_of,
        } => {
            filter.push_conditions(q);
            q.push(" AND updated_at <= ").push_bind(*as_of);
            if let Some(after) = after {
                q.push(" AND id > ").push_bind(*after);
            }
        }
    };
    let audit = jobs::Audit {
        operator,
        reason,
        action_id,
    };
    let acted = jobs::act(conn, action, pick, &audit, limit).await?;

    let communications: Vec<Uuid> = acted
        .iter()
        .filter(|job| jobs::kinds::DELIVERING.contains(&job.kind.as_str()))
        .filter_map(|job| job.communication_id)
        .collect();
    if !communications.is_empty() {
        match action {
            Action::Replay => writes::requeue_failed(conn, &communications).await?,
            Action::Discard => {
                let why = format!("discarded by an operator: {reason}");
                writes::fail_queued(conn, &communications, &why).await?;
            }
        }
    }
    Ok(acted.into_iter().map(|job| job.id).collect())
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
