//! Which jobs an operator means: the filter of every listing, count and bulk action,
//! parsed from a query string with each bad field named.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{
    domain::CustomerId,
    ledger::jobs::{ErrorClass, JobState, kinds},
};

/// Which jobs an operator means. Every field narrows; lists match any of their values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<JobState>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_classes: Vec<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication_id: Option<Uuid>,
    /// Created before this time (`older_than`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
    /// Created after this time (`newer_than`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
}

/// A filter parameter that does not parse, named so the operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

impl FilterError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The parameter names [`JobFilter::parse`] takes.
pub const FILTER_FIELDS: &[&str] = &[
    "state",
    "kind",
    "error_class",
    "customer_id",
    "communication_id",
    "older_than",
    "newer_than",
];

impl JobFilter {
    /// Builds a filter from `name=value` pairs (a query string, or a JSON object of
    /// strings). Lists are comma-separated or repeated. Ages are durations (`90s`,
    /// `15m`, `2h`, `7d`) back from `now`, or RFC 3339 times. Unknown names are errors.
    pub fn parse<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: DateTime<Utc>,
    ) -> Result<Self, FilterError> {
        let mut filter = Self::default();
        for (name, raw) in params {
            let values = || raw.split(',').map(str::trim).filter(|v| !v.is_empty());
            match name {
                "state" => {
                    for value in values() {
                        let state = JobState::parse(value).ok_or_else(|| {
                            FilterError::new(name, format!("unknown state {value:?} (pending, queued, running, retrying, succeeded, dead, cancelled)"))
                        })?;
                        filter.states.push(state);
                    }
                }
                "kind" => {
                    for value in values() {
                        if !kinds::ALL.contains(&value) {
                            return Err(FilterError::new(
                                name,
                                format!(
                                    "unknown job kind {value:?} (one of {})",
                                    kinds::ALL.join(", ")
                                ),
                            ));
                        }
                        filter.kinds.push(value.to_owned());
                    }
                }
                "error_class" => {
                    for value in values() {
                        let class = ErrorClass::parse(value).ok_or_else(|| {
                            FilterError::new(name, format!("unknown error class {value:?} (transient, permanent, exhausted, unparseable, delivery_limit, broker)"))
                        })?;
                        filter.error_classes.push(class);
                    }
                }
                "customer_id" => {
                    filter.customer_id =
                        Some(CustomerId::parse(raw).map_err(|e| FilterError::new(name, e.0))?);
                }
                "communication_id" => {
                    filter.communication_id = Some(Uuid::parse_str(raw).map_err(|_| {
                        FilterError::new(name, format!("must be a UUID, not {raw:?}"))
                    })?);
                }
                "older_than" => filter.created_before = Some(point_in_time(name, raw, now)?),
                "newer_than" => filter.created_after = Some(point_in_time(name, raw, now)?),
                other => {
                    return Err(FilterError::new(
                        other,
                        format!("unknown filter (one of {})", FILTER_FIELDS.join(", ")),
                    ));
                }
            }
            if raw.trim().is_empty() {
                return Err(FilterError::new(name, "must not be empty"));
            }
        }
        Ok(filter)
    }

    /// Appends ` AND …` for each condition (the query must already have a `WHERE`).
    pub(super) fn push_conditions(&self, q: &mut QueryBuilder<'_, Postgres>) {
        // Polls that found nothing are counted in metrics, not shown (`jobs::IDLE`).
        q.push(" AND NOT idle");
        if !self.states.is_empty() {
            let states: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            q.push(" AND state = ANY(").push_bind(states).push(")");
        }
        if !self.kinds.is_empty() {
            q.push(" AND kind = ANY(")
                .push_bind(self.kinds.clone())
                .push(")");
        }
        if !self.error_classes.is_empty() {
            let classes: Vec<&str> = self.error_classes.iter().map(|c| c.as_str()).collect();
            q.push(" AND last_error_class = ANY(")
                .push_bind(classes)
                .push(")");
        }
        if let Some(customer) = &self.customer_id {
            q.push(" AND customer_id = ")
                .push_bind(customer.as_str().to_owned());
        }
        if let Some(id) = self.communication_id {
            q.push(" AND communication_id = ").push_bind(id);
        }
        if let Some(before) = self.created_before {
            q.push(" AND created_at < ").push_bind(before);
        }
        if let Some(after) = self.created_after {
            q.push(" AND created_at > ").push_bind(after);
        }
    }
}

/// `15m`-style ages back from `now`, or an RFC 3339 time.
fn point_in_time(field: &str, raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, FilterError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    let invalid = || {
        FilterError::new(
            field,
            format!("must be an age like 90s, 15m, 2h or 7d, or an RFC 3339 time, not {raw:?}"),
        )
    };
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = raw.split_at(split);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(seconds)
        .and_then(chrono::Duration::try_seconds)
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<JobFilter, FilterError> {
        let now = DateTime::parse_from_rfc3339("2026-01-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        JobFilter::parse(pairs.iter().copied(), now)
    }

    #[test]
    fn filters_parse_lists_ages_and_times() {
        let filter = parse(&[
            ("state", "dead,retrying"),
            ("kind", "message.deliver"),
            ("error_class", "permanent"),
            ("older_than", "2h"),
            ("newer_than", "2026-01-01T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(filter.states, [JobState::Dead, JobState::Retrying]);
        assert_eq!(filter.error_classes, [ErrorClass::Permanent]);
        assert_eq!(
            filter.created_before.unwrap().to_rfc3339(),
            "2026-01-10T10:00:00+00:00"
        );
        assert_eq!(
            filter.created_after.unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn bad_filters_name_their_field() {
        for (pairs, field) in [
            (vec![("state", "zombie")], "state"),
            (vec![("kind", "no.such")], "kind"),
            (vec![("error_class", "weird")], "error_class"),
            (vec![("communication_id", "nope")], "communication_id"),
            (vec![("older_than", "3 weeks")], "older_than"),
            (vec![("newer_than", "5y")], "newer_than"),
            (vec![("customer_id", "a/b")], "customer_id"),
            (vec![("colour", "red")], "colour"),
            (vec![("state", "")], "state"),
        ] {
            let error = parse(&pairs).unwrap_err();
            assert_eq!(error.field, field, "{pairs:?}: {error}");
        }
    }
}
