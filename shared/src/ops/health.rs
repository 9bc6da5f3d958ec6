//! Queue health from the ledger's side: jobs by state, outbox lag, the oldest retry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ledger::jobs::JobState;

/// The ledger's side of queue health.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerHealth {
    /// Jobs per state (every state listed, zeros included).
    pub by_state: BTreeMap<String, i64>,
    /// The outbox: jobs not yet on the broker, and how long the oldest has waited.
    pub outbox: OutboxLag,
    /// The retrying job that has been failing longest.
    pub oldest_retrying: Option<OldestRetrying>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxLag {
    pub pending: i64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Age of the oldest pending job in seconds (0 when none).
    pub lag_seconds: f64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OldestRetrying {
    pub id: Uuid,
    pub kind: String,
    pub attempts: i32,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub async fn ledger_health(pool: &PgPool) -> sqlx::Result<LedgerHealth> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM jobs WHERE NOT idle GROUP BY state")
            .fetch_all(pool)
            .await?;
    let mut by_state: BTreeMap<String, i64> = [
        JobState::Pending,
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ]
    .iter()
    .map(|s| (s.as_str().to_owned(), 0))
    .collect();
    by_state.extend(rows);
    let oldest_pending_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT min(created_at) FROM jobs WHERE state = 'pending'")
            .fetch_one(pool)
            .await?;
    let lag_seconds = oldest_pending_at.map_or(0.0, |at| {
        (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    let oldest_retrying = sqlx::query_as(
        "SELECT id, kind, attempts, first_failed_at, next_attempt_at, last_error FROM jobs
         WHERE state = 'retrying' ORDER BY first_failed_at NULLS LAST, created_at LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(LedgerHealth {
        outbox: OutboxLag {
            pending: by_state.get("pending").copied().unwrap_or(0),
            oldest_pending_at,
            lag_seconds,
        },
        by_state,
        oldest_retrying,
    })
}
