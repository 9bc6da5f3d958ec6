//! `POST /api/communications/search`: full-text search of the conversations the caller
//! may see (a customer: their own; staff: every one), ranked, highlighted, paged by
//! cursor. The query is web-search syntax: words, "quoted phrases", -exclusions, OR.

use axum::{Json, extract::State};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use commcenter_shared::{
    domain::search::{self, SearchQuery},
    domain::{CommunicationStatus, CommunicationType, Direction, Role},
};

use crate::{
    auth::Caller,
    body::JsonBody,
    error::{ApiError, ApiResult},
    paging, records,
    state::AppState,
};

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;
/// Longer queries are not searches a person types.
const MAX_QUERY_CHARS: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    query: String,
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default, rename = "type")]
    communication_type: Option<String>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    status: Option<String>,
    /// A date (`2026-11-30`, from its start) or a time (RFC 3339), UTC.
    #[serde(default)]
    from: Option<String>,
    /// A date (to its end, inclusive) or a time (exclusive), UTC.
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    has_attachments: Option<bool>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_search", message)
}

pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<SearchRequest>,
) -> ApiResult<Json<Value>> {
    let query = request.query.trim();
    if query.is_empty() {
        return Err(bad("query: must not be empty"));
    }
    let chars = query.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(bad(format!(
            "query: {chars} characters is over the limit of {MAX_QUERY_CHARS}"
        )));
    }
    if query.contains('\0') {
        return Err(bad("query: must not contain NUL characters"));
    }
    let customer_id =
        super::communications::visible_customer(&caller, request.customer_id.as_deref()).map_err(
            |e| match e {
                ApiError::BadRequest { message, .. } => bad(message),
                other => other,
            },
        )?;
    let communication_type = request
        .communication_type
        .as_deref()
        .map(CommunicationType::parse)
        .transpose()
        .map_err(|e| bad(e.0))?;
    let direction = request
        .direction
        .as_deref()
        .map(Direction::parse)
        .transpose()
        .map_err(|e| bad(e.0))?;
    let status = request
        .status
        .as_deref()
        .map(CommunicationStatus::parse)
        .transpose()
        .map_err(|e| bad(format!("status: {e}")))?;
    let from = request
        .from
        .as_deref()
        .map(|raw| parse_bound("from", raw, false))
        .transpose()?;
    let until = request
        .to
        .as_deref()
        .map(|raw| parse_bound("to", raw, true))
        .transpose()?;
    if let (Some(from), Some(until)) = (from, until)
        && until <= from
    {
        return Err(bad("to: must be after from"));
    }
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(format!("limit: must be 1 to {MAX_LIMIT}")));
    }
    let after = request.cursor.as_deref().map(decode_cursor).transpose()?;

    let mut conn = state.pool.acquire().await?;
    if !search::has_terms(&mut conn, query).await? {
        return Err(bad(format!(
            "query: {query:?} has no words to search for (only common words or punctuation)"
        )));
    }
    let mut hits = search::search(
        &mut conn,
        &SearchQuery {
            query,
            customer_id: customer_id.as_ref(),
            communication_type,
            direction,
            status,
            from,
            until,
            has_attachments: request.has_attachments,
            public_only: caller.role() == Role::Customer,
            after,
            limit: limit + 1,
        },
    )
    .await?;
    let next_cursor = if hits.len() as i64 > limit {
        hits.truncate(limit as usize);
        hits.last()
            .map(|h| encode_cursor(h.rank, h.communication.created_at, h.communication.id))
    } else {
        None
    };
    let results: Vec<Value> = hits
        .iter()
        .map(|hit| {
            let mut record = records::communication_json(&hit.communication);
            record["rank"] = json!(hit.rank);
            record["highlight"] = json!(hit.highlight);
            record
        })
        .collect();
    Ok(Json(json!({
        "query": query,
        "communications": results,
        "next_cursor": next_cursor,
    })))
}

/// A date or a time; a date as `to` means through the end of that day.
fn parse_bound(field: &str, raw: &str, end_of_day: bool) -> ApiResult<DateTime<Utc>> {
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let day = if end_of_day {
            day.succ_opt()
                .ok_or_else(|| bad(format!("{field}: {raw} is out of range")))?
        } else {
            day
        };
        return Ok(day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            bad(format!(
                "{field}: {raw:?} is neither a date (2026-11-30) nor an RFC 3339 time"
            ))
        })
}

fn encode_cursor(rank: f32, created_at: DateTime<Utc>, id: Uuid) -> String {
    paging::encode(&[
        &rank.to_bits().to_string(),
        &paging::time_part(created_at),
        &id.to_string(),
    ])
}

fn decode_cursor(raw: &str) -> ApiResult<(f32, DateTime<Utc>, Uuid)> {
    let invalid = || bad("cursor: not one this API issued");
    let [rank, at, id] = paging::decode::<3>(raw).ok_or_else(invalid)?;
    let rank = rank
        .parse::<u32>()
        .ok()
        .map(f32::from_bits)
        .filter(|r| r.is_finite())
        .ok_or_else(invalid)?;
    let at = paging::parse_time_part(&at).ok_or_else(invalid)?;
    let id = Uuid::parse_str(&id).map_err(|_| invalid())?;
    Ok((rank, at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_exactly() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        let rank = 0.060_792_7_f32;
        assert_eq!(
            decode_cursor(&encode_cursor(rank, at, id)).unwrap(),
            (rank, at, id)
        );
        assert!(decode_cursor("not-a-cursor").is_err());
    }

    #[test]
    fn dates_bound_whole_days() {
        let from = parse_bound("from", "2026-11-30", false).unwrap();
        let to = parse_bound("to", "2026-11-30", true).unwrap();
        assert_eq!((to - from).num_hours(), 24);
        assert!(parse_bound("to", "30/11/2026", true).is_err());
        assert!(parse_bound("from", "2026-11-30T10:00:00Z", false).is_ok());
    }
}
