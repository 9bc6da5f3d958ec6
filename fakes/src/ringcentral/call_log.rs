//! `GET …/call-log` (Heavy group) over records a test seeds with `add_call`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{RateGroup, RingCentral, listing, query_map};
use crate::faults::Endpoint;
use crate::server::{Connection, lock};

/// Keeps a seeded record, filling what RingCentral always sends and the seed left out.
pub(super) fn add(rc: &RingCentral, mut record: Value) -> String {
    if !record.is_object() {
        record = json!({});
    }
    let serial = rc.next_id();
    let id = record["id"]
        .as_str()
        .map_or_else(|| format!("fake-call-{serial}"), str::to_owned);
    record["id"] = json!(id);
    if record.get("sessionId").is_none() {
        record["sessionId"] = json!(serial.to_string());
    }
    if record.get("startTime").is_none() {
        record["startTime"] = json!(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    record["uri"] = json!(format!("{}/call-log/{id}", rc.extension_uri()));
    lock(&rc.calls).push(record);
    id
}

fn start_time(record: &Value) -> Option<DateTime<Utc>> {
    let time = DateTime::parse_from_rfc3339(record["startTime"].as_str()?).ok()?;
    Some(time.with_timezone(&Utc))
}

/// Filters `dateFrom`/`dateTo` (on `startTime`), `direction`, `type` and `phoneNumber`;
/// newest first, paged.
pub(super) async fn list(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let query = query_map(query.as_deref());
        let window = match listing::DateWindow::parse(&query) {
            Ok(window) => window,
            Err(refusal) => return refusal,
        };
        let paging = match listing::Paging::parse(&query) {
            Ok(paging) => paging,
            Err(refusal) => return refusal,
        };
        let matches = |record: &Value, key: &str| {
            query
                .get(key)
                .is_none_or(|wanted| record[key] == wanted.as_str())
        };
        let party = |record: &Value, number: &str| {
            ["from", "to"]
                .iter()
                .any(|side| record[*side]["phoneNumber"].as_str() == Some(number))
        };
        let mut records: Vec<Value> = lock(&rc.calls)
            .iter()
            .filter(|record| start_time(record).is_some_and(|time| window.contains(time)))
            .filter(|record| matches(record, "direction") && matches(record, "type"))
            .filter(|record| {
                query
                    .get("phoneNumber")
                    .is_none_or(|number| party(record, number))
            })
            .cloned()
            .collect();
        records.sort_by_key(|record| std::cmp::Reverse(start_time(record)));
        let uri = format!("{}/call-log", rc.extension_uri());
        Json(paging.page_of(records, &uri, &query)).into_response()
    };
    rc.serve(
        Endpoint::CallLog,
        RateGroup::Heavy,
        Some(&headers),
        &connection,
        work,
    )
    .await
}
