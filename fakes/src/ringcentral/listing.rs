//! What RingCentral's list endpoints (message store, call log) share: the `dateFrom` /
//! `dateTo` window and `page` / `perPage` paging with `paging` and `navigation` blocks.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::error;

const DEFAULT_PER_PAGE: usize = 100;
const MAX_PER_PAGE: usize = 1000;

/// `[dateFrom, dateTo]`: by default the last 24 hours, as RingCentral's.
pub(super) struct DateWindow {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl DateWindow {
    pub(super) fn parse(query: &HashMap<String, String>) -> Result<Self, Response> {
        let to = match query.get("dateTo") {
            Some(value) => parse_time(value, "dateTo")?,
            None => Utc::now(),
        };
        let from = match query.get("dateFrom") {
            Some(value) => parse_time(value, "dateFrom")?,
            None => to - chrono::Duration::hours(24),
        };
        Ok(Self { from, to })
    }

    pub(super) fn contains(&self, time: DateTime<Utc>) -> bool {
        self.from <= time && time <= self.to
    }
}

fn parse_time(value: &str, parameter: &str) -> Result<DateTime<Utc>, Response> {
    DateTime::parse_from_rfc3339(value)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "CMN-101",
                &format!("Parameter [{parameter}] value is invalid"),
                Some(parameter),
            )
        })
}

/// `page` (from 1) and `perPage`.
pub(super) struct Paging {
    page: usize,
    per_page: usize,
}

impl Paging {
    pub(super) fn parse(query: &HashMap<String, String>) -> Result<Self, Response> {
        let number = |name: &str, default: usize, max: usize| match query.get(name) {
            None => Ok(default),
            Some(value) => value
                .parse::<usize>()
                .ok()
                .filter(|value| (1..=max).contains(value))
                .ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "CMN-101",
                        &format!("Parameter [{name}] value is invalid"),
                        Some(name),
                    )
                }),
        };
        Ok(Self {
            page: number("page", 1, usize::MAX)?,
            per_page: number("perPage", DEFAULT_PER_PAGE, MAX_PER_PAGE)?,
        })
    }

    /// `{uri, records, paging, navigation}` for this page of `records`; the navigation
    /// links repeat the request's query with another `page`.
    pub(super) fn page_of(
        &self,
        records: Vec<Value>,
        uri: &str,
        query: &HashMap<String, String>,
    ) -> Value {
        let total = records.len();
        let start = (self.page - 1).saturating_mul(self.per_page).min(total);
        let page: Vec<Value> = records
            .into_iter()
            .skip(start)
            .take(self.per_page)
            .collect();
        let link = |page: usize| {
            let mut query: Vec<(&str, String)> = query
                .iter()
                .filter(|(key, _)| *key != "page")
                .map(|(key, value)| (key.as_str(), value.clone()))
                .collect();
            query.sort();
            query.push(("page", page.to_string()));
            json!({ "uri": format!("{uri}?{}", serde_urlencoded::to_string(query).unwrap_or_default()) })
        };
        let total_pages = total.div_ceil(self.per_page).max(1);
        let mut paging = json!({
            "page": self.page, "perPage": self.per_page, "totalPages": total_pages, "totalElements": total,
        });
        if !page.is_empty() {
            paging["pageStart"] = json!(start);
            paging["pageEnd"] = json!(start + page.len() - 1);
        }
        let mut navigation = json!({ "firstPage": link(1), "lastPage": link(total_pages) });
        if start + page.len() < total {
            navigation["nextPage"] = link(self.page + 1);
        }
        if self.page > 1 {
            navigation["previousPage"] = link(self.page - 1);
        }
        json!({ "uri": link(self.page)["uri"], "records": page, "paging": paging, "navigation": navigation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn pages_carry_positions_and_links() {
        let records: Vec<Value> = (0..5).map(|index| json!(index)).collect();
        let Ok(paging) = Paging::parse(&query(&[("page", "2"), ("perPage", "2")])) else {
            panic!("valid paging")
        };
        let page = paging.page_of(
            records,
            "http://x/call-log",
            &query(&[("page", "2"), ("perPage", "2")]),
        );
        assert_eq!(page["records"], json!([2, 3]));
        assert_eq!(page["paging"]["pageStart"], 2);
        assert_eq!(page["paging"]["pageEnd"], 3);
        assert_eq!(
            page["navigation"]["nextPage"]["uri"],
            "http://x/call-log?perPage=2&page=3"
        );
        assert_eq!(
            page["navigation"]["previousPage"]["uri"],
            "http://x/call-log?perPage=2&page=1"
        );
    }

    #[test]
    fn the_last_page_has_no_next_and_bad_numbers_are_refused() {
        let Ok(paging) = Paging::parse(&query(&[("perPage", "5")])) else {
            panic!("valid paging")
        };
        let page = paging.page_of(vec![json!(1)], "http://x", &HashMap::new());
        assert!(page["navigation"].get("nextPage").is_none());
        assert!(Paging::parse(&query(&[("perPage", "0")])).is_err());
        assert!(Paging::parse(&query(&[("page", "x")])).is_err());
        assert!(DateWindow::parse(&query(&[("dateFrom", "yesterday")])).is_err());
    }
}
