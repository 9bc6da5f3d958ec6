//! The operators' endpoints under `/api/ops/` (role `operator` only):
//!
//! - `GET /api/ops/jobs`: the ledger, filtered (`state`, `kind`, `error_class`,
//!   `customer_id`, `communication_id`, `older_than`, `newer_than`), newest first,
//!   keyset-paginated (`limit`, `cursor` → `next_cursor`), with counts for the filter.
//! - `GET /api/ops/jobs/{id}`: one job in full: payload, attempts, communication,
//!   the broker's dead-letter history, audit.
//! - `POST /api/ops/jobs/{id}/replay`, `/discard` `{reason}`: one job, at once.
//! - `POST /api/ops/jobs/replay`, `/discard` `{filter, reason}`: 202 with a bulk action,
//!   carried out in batches by `ops.bulk` jobs; `GET /api/ops/actions[/{id}]` follows it.
//! - `GET /api/ops/audit`: who did what, filtered by `operator`, `action`, `job_id`,
//!   `action_id`.
//! - `GET /api/ops/queues`: queue depths and consumers from the broker, the outbox lag
//!   and jobs per state from the ledger (which still answers when the broker does not).
//! - `GET /api/ops/activity?minutes=60`: jobs succeeded, retried and dead per minute,
//!   and each queue's depth per minute, as the workers recorded them.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{MethodRouter, get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use commcenter_shared::{
    ledger::jobs::kinds,
    ops::{self, Acted, Action, AuditFilter, FilterError, JobFilter},
    platform::broker::{self, Topology},
    platform::settings::tier_label,
};

use super::parse_uuid;
use crate::{
    auth::Caller,
    body::{JsonBody, QueryParams},
    error::{ApiError, ApiResult},
    state::AppState,
};
use commcenter_shared::domain::text;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;
const MAX_REASON_CHARS: usize = 500;
/// How long the queue health view waits for the broker before answering without it.
const BROKER_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/ops/jobs", get(list_jobs))
        .route("/api/ops/jobs/replay", bulk(Action::Replay))
        .route("/api/ops/jobs/discard", bulk(Action::Discard))
        .route("/api/ops/jobs/{id}", get(show_job))
        .route("/api/ops/jobs/{id}/replay", on_job(Action::Replay))
        .route("/api/ops/jobs/{id}/discard", on_job(Action::Discard))
        .route("/api/ops/actions", get(list_actions))
        .route("/api/ops/actions/{id}", get(show_action))
        .route("/api/ops/audit", get(list_audit))
        .route("/api/ops/queues", get(queues))
        .route("/api/ops/activity", get(activity))
}

fn filter_error(prefix: &str, e: FilterError) -> ApiError {
    ApiError::bad_request(
        "invalid_filter",
        format!("{prefix}{}: {}", e.field, e.message),
    )
}

/// `limit` and `cursor` taken out of a query; the rest is left for the filter.
struct Page {
    limit: i64,
    cursor: Option<String>,
}

fn take_page(params: &mut Vec<(String, String)>) -> ApiResult<Page> {
    let mut page = Page {
        limit: DEFAULT_LIMIT,
        cursor: None,
    };
    let mut rest = Vec::with_capacity(params.len());
    for (name, value) in params.drain(..) {
        match name.as_str() {
            "limit" => {
                page.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::invalid_query(
                            "limit",
                            format!("must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            "cursor" => page.cursor = Some(value),
            _ => rest.push((name, value)),
        }
    }
    *params = rest;
    Ok(page)
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

fn decode_cursor(raw: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let invalid = || ApiError::invalid_query("cursor", "is not one this API issued");
    let text = URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(invalid)?;
    let (micros, id) = text.split_once(':').ok_or_else(invalid)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| invalid())?))
}

/// Keeps the first `limit` rows; the cursor points after the last of them when more follow.
fn page_of<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        let next = rows.last().map(cursor);
        (rows, next)
    } else {
        (rows, None)
    }
}

async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(mut params): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    caller.ensure_operator()?;
    let page = take_page(&mut params)?;
    let before = page.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = JobFilter::parse(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        Utc::now(),
    )
    .map_err(|e| filter_error("", e))?;
    let rows = ops::list_jobs(&state.pool, &filter, before, page.limit + 1).await?;
    let (jobs, next_cursor) = page_of(rows, page.limit, |j| encode_cursor(j.created_at, j.id));
    let counts = ops::count_jobs(&state.pool, &filter).await?;
    Ok(Json(
        json!({ "jobs": jobs, "next_cursor": next_cursor, "counts": counts }),
    ))
}

async fn show_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.ensure_operator()?;
    let id = parse_uuid(&id, "job id")?;
    let detail = ops::find_job(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    Ok(Json(json!(detail)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

/// Kept in the audit and shown to operators ([`text::refusal`]).
fn reason(raw: &str) -> ApiResult<String> {
    let reason = raw.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::Invalid(format!(
            "reason must be 1 to {MAX_REASON_CHARS} characters: it is kept in the audit"
        )));
    }
    match text::refusal(reason, MAX_REASON_CHARS) {
        Some(why) => Err(ApiError::Invalid(format!("reason: {why}"))),
        None => Ok(reason.to_owned()),
    }
}

/// The handler of one job's `action` (`POST /api/ops/jobs/{id}/{action}`).
fn on_job(action: Action) -> MethodRouter<AppState> {
    post(
        move |state, caller, id, body: JsonBody<ReasonBody>| async move {
            act_on_job(state, caller, id, body, action).await
        },
    )
}

/// The handler of a bulk `action` (`POST /api/ops/jobs/{action}`).
fn bulk(action: Action) -> MethodRouter<AppState> {
    post(move |state, caller, body: JsonBody<BulkBody>| async move {
        start_bulk(state, caller, body, action).await
    })
}

async fn act_on_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
    action: Action,
) -> ApiResult<Json<Value>> {
    caller.ensure_operator()?;
    let id = parse_uuid(&id, "job id")?;
    let reason = reason(&body.reason)?;
    let mut tx = state.pool.begin().await?;
    let acted = ops::act_on_job(&mut tx, action, id, caller.user_id(), &reason).await?;
    let previous_state = match acted {
        Acted::NotFound => return Err(ApiError::NotFound(format!("no job {id}"))),
        Acted::Refused { reason, .. } => {
            return Err(ApiError::Conflict(format!(
                "job {id} cannot be {}ed: {reason}",
                action.as_str()
            )));
        }
        Acted::Done { previous_state } => previous_state,
    };
    tx.commit().await?;
    // A replayed job is in the outbox again: publish it now rather than at the next poll.
    state.outbox.notify_one();
    let detail = ops::find_job(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    Ok(Json(json!({
        "action": action,
        "previous_state": previous_state,
        "job": detail.job,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    #[serde(default)]
    filter: Map<String, Value>,
    reason: String,
}

/// Filter values in a JSON body: a string, or a list of strings.
fn filter_params(filter: &Map<String, Value>) -> ApiResult<Vec<(String, String)>> {
    let mut params = Vec::new();
    for (name, value) in filter {
        let bad = || {
            ApiError::bad_request(
                "invalid_filter",
                format!("filter.{name}: must be a string or a list of strings"),
            )
        };
        match value {
            Value::String(s) => params.push((name.clone(), s.clone())),
            Value::Array(items) => {
                let items: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
                params.push((name.clone(), items.ok_or_else(bad)?.join(",")));
            }
            _ => return Err(bad()),
        }
    }
    Ok(params)
}

async fn start_bulk(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<BulkBody>,
    action: Action,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.ensure_operator()?;
    let params = filter_params(&body.filter)?;
    let mut filter = JobFilter::parse(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        Utc::now(),
    )
    .map_err(|e| filter_error("filter.", e))?;
    if let Some(state) = filter
        .states
        .iter()
        .find(|s| !action.eligible().contains(s))
    {
        let eligible: Vec<&str> = action.eligible().iter().map(|s| s.as_str()).collect();
        return Err(ApiError::bad_request(
            "invalid_filter",
            format!(
                "filter.state: {} jobs cannot be {}ed (only {})",
                state.as_str(),
                action.as_str(),
                eligible.join(", ")
            ),
        ));
    }
    if filter.states.is_empty() {
        filter.states = action.default_states().to_vec();
    }
    let reason = reason(&body.reason)?;
    let mut tx = state.pool.begin().await?;
    let bulk = ops::start_bulk(
        &mut tx,
        action,
        &filter,
        caller.user_id(),
        &reason,
        state.settings.jobs.max_attempts,
    )
    .await?;
    tx.commit().await?;
    state.outbox.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!({ "action": bulk }))))
}

async fn list_actions(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(mut params): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    caller.ensure_operator()?;
    let page = take_page(&mut params)?;
    if let Some((name, _)) = params.first() {
        return Err(ApiError::invalid_query(
            name,
            "unknown parameter (limit, cursor)",
        ));
    }
    let before = page.cursor.as_deref().map(decode_cursor).transpose()?;
    let rows = ops::list_actions(&state.pool, before, page.limit + 1).await?;
    let (actions, next_cursor) = page_of(rows, page.limit, |a| encode_cursor(a.created_at, a.id));
    Ok(Json(
        json!({ "actions": actions, "next_cursor": next_cursor }),
    ))
}

async fn show_action(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.ensure_operator()?;
    let id = parse_uuid(&id, "action id")?;
    let mut conn = state.pool.acquire().await?;
    let action = ops::find_action(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no bulk action {id}")))?;
    Ok(Json(json!({ "action": action })))
}

async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(mut params): QueryParams<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    caller.ensure_operator()?;
    let page = take_page(&mut params)?;
    let mut filter = AuditFilter::default();
    for (name, value) in params {
        match name.as_str() {
            "operator" if !value.trim().is_empty() => filter.operator = Some(value),
            "action" if ops::AUDIT_ACTIONS.contains(&value.as_str()) => {
                filter.action = Some(value);
            }
            "action" => {
                return Err(ApiError::invalid_query(
                    "action",
                    format!("must be one of {}", ops::AUDIT_ACTIONS.join(", ")),
                ));
            }
            "job_id" => filter.job_id = Some(uuid_param("job_id", &value)?),
            "action_id" => filter.action_id = Some(uuid_param("action_id", &value)?),
            other => {
                return Err(ApiError::invalid_query(
                    other,
                    "unknown parameter (operator, action, job_id, action_id, limit, cursor)",
                ));
            }
        }
    }
    let before = page
        .cursor
        .as_deref()
        .map(|raw| {
            raw.parse::<i64>()
                .map_err(|_| ApiError::invalid_query("cursor", "is not one this API issued"))
        })
        .transpose()?;
    let rows = ops::list_audit(&state.pool, &filter, before, page.limit + 1).await?;
    let (entries, next_cursor) = page_of(rows, page.limit, |e| e.id.to_string());
    Ok(Json(
        json!({ "entries": entries, "next_cursor": next_cursor }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityQuery {
    minutes: Option<String>,
}

async fn activity(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ActivityQuery>,
) -> ApiResult<Json<ops::Activity>> {
    caller.ensure_operator()?;
    let minutes = match query.minutes.as_deref() {
        None => 60,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=ops::MAX_MINUTES).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_query(
                    "minutes",
                    format!("must be 1 to {}, not {raw:?}", ops::MAX_MINUTES),
                )
            })?,
    };
    Ok(Json(ops::activity(&state.pool, minutes, Utc::now()).await?))
}

fn uuid_param(name: &str, raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::invalid_query(name, format!("must be a UUID, not {raw:?}")))
}

async fn queues(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.ensure_operator()?;
    let ledger = ops::ledger_health(&state.pool).await?;
    let topology = Topology::new(
        &state.settings.broker.prefix,
        state.settings.jobs.retry_tiers.clone(),
        state.settings.jobs.delivery_limit,
    );
    let broker = match tokio::time::timeout(BROKER_TIMEOUT, broker_queues(&state, &topology)).await
    {
        Ok(Ok(queues)) => json!({ "reachable": true, "queues": queues }),
        Ok(Err(error)) => json!({ "reachable": false, "error": format!("{error:#}") }),
        Err(_) => json!({
            "reachable": false,
            "error": format!("RabbitMQ did not answer within {BROKER_TIMEOUT:?}"),
        }),
    };
    Ok(Json(json!({ "broker": broker, "ledger": ledger })))
}

/// Depth and consumers of every work, delay and dead-letter queue, by passive declares
/// after declaring the topology (so a queue never looked at before is not an error).
async fn broker_queues(state: &AppState, topology: &Topology) -> anyhow::Result<Value> {
    let connection = broker::connect(&state.settings.broker, "commcenter-api-ops").await?;
    topology.declare_on(&connection, kinds::ALL).await?;
    let mut work = Vec::new();
    for kind in kinds::ALL {
        let mut queue = json!(broker::look(&connection, &topology.work_queue(kind)).await?);
        queue["kind"] = json!(kind);
        work.push(queue);
    }
    let mut delay = Vec::new();
    for tier in &topology.tiers {
        let mut queue = json!(broker::look(&connection, &topology.delay_queue(*tier)).await?);
        queue["tier"] = json!(tier_label(*tier));
        delay.push(queue);
    }
    let dead = json!(broker::look(&connection, &topology.dead_queue()).await?);
    connection.close(200, "done".into()).await.ok();
    Ok(json!({ "work": work, "delay": delay, "dead": dead }))
}
