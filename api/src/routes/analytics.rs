//! Analytics for staff and operators (customers and crews get 403):
//!
//! - `GET /api/analytics/summary?from=&to=&tz=&channel=`: counts, response times,
//!   conversations opened, closed and reopened, read rate, per channel.
//! - `GET /api/analytics/volume?from=&to=&tz=&bucket=hour|day|week&channel=&direction=`:
//!   messages per bucket, empty buckets included.
//! - `GET /api/analytics/response-times?from=&to=&tz=&group_by=staff|channel|customer&channel=&limit=`.
//!
//! `from` and `to` are ISO dates or date-times read in `tz` (default UTC); by default
//! the 30 days up to now. What each figure means is in [`commcenter_shared::domain::analytics`]
//! and docs/analytics.md.

use axum::{Json, extract::State};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use commcenter_shared::{
    domain::analytics::{self, Bucket, GroupBy, Moment, Range},
    domain::{CommunicationType, Direction},
};

use crate::{
    auth::Caller,
    body::QueryParams,
    error::{ApiError, ApiResult},
    paging,
    state::AppState,
};

const DEFAULT_GROUPS: i64 = 100;
const MAX_GROUPS: i64 = 1000;

/// The parameters every analytics endpoint takes; each endpoint adds its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    channel: Option<String>,
    bucket: Option<String>,
    direction: Option<String>,
    group_by: Option<String>,
    limit: Option<String>,
}

/// Refuses the parameters an endpoint does not take (so a typo is not ignored).
fn only(query: &Query, endpoint: &str, allowed: &[&str]) -> ApiResult<()> {
    let given = [
        ("bucket", query.bucket.is_some()),
        ("direction", query.direction.is_some()),
        ("group_by", query.group_by.is_some()),
        ("limit", query.limit.is_some()),
    ];
    match given
        .iter()
        .find(|(name, set)| *set && !allowed.contains(name))
    {
        Some((name, _)) => Err(ApiError::invalid_query(
            name,
            format!("{endpoint} does not take it"),
        )),
        None => Ok(()),
    }
}

async fn range(state: &AppState, query: &Query) -> ApiResult<Range> {
    let moment = |name: &str, raw: &Option<String>| {
        raw.as_deref()
            .map(|raw| Moment::parse(raw).map_err(|e| ApiError::invalid_query(name, e.0)))
            .transpose()
    };
    let from = moment("from", &query.from)?;
    let to = moment("to", &query.to)?;
    let tz = query.tz.as_deref().unwrap_or("UTC");
    let mut conn = state.pool.acquire().await?;
    analytics::resolve_range(&mut conn, from, to, tz, Utc::now())
        .await?
        .map_err(|bad| ApiError::invalid_query(bad.parameter, bad.problem))
}

fn channel(query: &Query) -> ApiResult<Option<CommunicationType>> {
    query
        .channel
        .as_deref()
        .map(|raw| {
            CommunicationType::parse(raw).map_err(|e| ApiError::invalid_query("channel", e.0))
        })
        .transpose()
}

pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<Query>,
) -> ApiResult<Json<analytics::Summary>> {
    caller.ensure_staff()?;
    only(&query, "summary", &[])?;
    let channel = channel(&query)?;
    let range = range(&state, &query).await?;
    Ok(Json(
        analytics::summary(&state.pool, &range, channel).await?,
    ))
}

pub async fn volume(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    caller.ensure_staff()?;
    only(&query, "volume", &["bucket", "direction"])?;
    let channel = channel(&query)?;
    let bucket = query
        .bucket
        .as_deref()
        .map(|raw| Bucket::parse(raw).map_err(|e| ApiError::invalid_query("bucket", e.0)))
        .transpose()?
        .unwrap_or(Bucket::Day);
    let direction = query
        .direction
        .as_deref()
        .map(|raw| Direction::parse(raw).map_err(|e| ApiError::invalid_query("direction", e.0)))
        .transpose()?;
    let range = range(&state, &query).await?;
    let points = analytics::volume(&state.pool, &range, bucket, channel, direction).await?;
    Ok(Json(json!({
        "from": range.from, "to": range.to, "tz": range.tz, "bucket": bucket,
        "channel": channel, "direction": direction, "points": points,
    })))
}

pub async fn response_times(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    caller.ensure_staff()?;
    only(&query, "response-times", &["group_by", "limit"])?;
    let channel = channel(&query)?;
    let group_by = query
        .group_by
        .as_deref()
        .map(|raw| GroupBy::parse(raw).map_err(|e| ApiError::invalid_query("group_by", e.0)))
        .transpose()?
        .unwrap_or(GroupBy::Staff);
    let limit = paging::limit(query.limit.as_deref(), DEFAULT_GROUPS, MAX_GROUPS)?;
    let range = range(&state, &query).await?;
    let groups = analytics::response_times(&state.pool, &range, group_by, channel, limit).await?;
    Ok(Json(json!({
        "from": range.from, "to": range.to, "tz": range.tz, "group_by": group_by,
        "channel": channel, "groups": groups,
    })))
}
