//! The audit trail: who replayed or discarded what, when, and what it cleared.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, QueryBuilder};
use uuid::Uuid;

/// One audit entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub operator: String,
    pub action: String,
    pub job_id: Option<Uuid>,
    pub action_id: Option<Uuid>,
    pub filter: Option<Value>,
    pub matched: Option<i64>,
    pub reason: String,
    pub previous_state: Option<String>,
    pub previous_error: Option<String>,
    pub previous_error_class: Option<String>,
}

pub(super) const AUDIT_COLUMNS: &str =
    "id, at, operator, action, job_id, action_id, filter, matched, reason,
    previous_state, previous_error, previous_error_class";

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub operator: Option<String>,
    /// replay, discard, bulk_replay, bulk_discard
    pub action: Option<String>,
    pub job_id: Option<Uuid>,
    pub action_id: Option<Uuid>,
}

/// The audit's action names.
pub const AUDIT_ACTIONS: &[&str] = &["replay", "discard", "bulk_replay", "bulk_discard", "rescue"];

/// Newest first, keyset-paginated by id.
pub async fn list_audit(
    pool: &PgPool,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<AuditEntry>> {
    let mut q = QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM ops_audit WHERE TRUE"));
    if let Some(operator) = &filter.operator {
        q.push(" AND operator = ").push_bind(operator.clone());
    }
    if let Some(action) = &filter.action {
        q.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(job_id) = filter.job_id {
        q.push(" AND job_id = ").push_bind(job_id);
    }
    if let Some(action_id) = filter.action_id {
        q.push(" AND action_id = ").push_bind(action_id);
    }
    if let Some(before) = before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(pool).await
}
