//! What a failed provider call means for the caller: retry later, give up, or find out
//! first whether it went through. Everything here is pure except the reading of a
//! `reqwest::Error`, so each rule is table-tested.

use std::{fmt, time::Duration};

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeDelta, Utc, Weekday};
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// One failed call to RingCentral or Gmail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    pub failure: Failure,
    /// The provider's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// RingCentral's `errorCode`, Google's `reason` (or OAuth `error`), or our own code for
    /// a refusal made before any call (`text_too_long`, `timeout`, …).
    pub code: Option<String>,
    /// What was attempted and why it failed, fit for an operator.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was done; the same call may succeed later (after `retry_after`, when given).
    Transient { retry_after: Option<Duration> },
    /// The same call will fail again: do not retry.
    Permanent,
    /// The request may have reached the provider (timeout or connection lost after it was
    /// sent): the caller must reconcile before sending again.
    Unknown,
}

impl ProviderError {
    pub fn permanent(code: &str, message: impl Into<String>) -> Self {
        Self {
            failure: Failure::Permanent,
            http_status: None,
            code: Some(code.to_owned()),
            message: message.into(),
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.failure == Failure::Permanent
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match (self.http_status, &self.code) {
            (Some(status), Some(code)) => write!(f, " (HTTP {status}, {code})")?,
            (Some(status), None) => write!(f, " (HTTP {status})")?,
            (None, Some(code)) => write!(f, " ({code})")?,
            (None, None) => {}
        }
        match &self.failure {
            Failure::Transient {
                retry_after: Some(wait),
            } => write!(f, "; retry after {}s", wait.as_secs()),
            Failure::Transient { retry_after: None } => f.write_str("; retry later"),
            Failure::Permanent => f.write_str("; will not succeed if retried"),
            Failure::Unknown => f.write_str("; may have reached the provider"),
        }
    }
}

impl std::error::Error for ProviderError {}

/// How a provider's non-2xx status is read, before the provider-specific rules (Google's
/// 403 reasons) refine it. 401 is permanent here: the clients refresh the token and retry
/// once before they classify.
pub(crate) fn failure_for_status(status: u16, headers: &HeaderMap, now: DateTime<Utc>) -> Failure {
    match status {
        408 | 425 => Failure::Transient { retry_after: None },
        429 | 500..=599 => Failure::Transient {
            retry_after: retry_after(headers, now),
        },
        _ => Failure::Permanent,
    }
}

/// `Retry-After` in seconds or as an HTTP date (a date in the past means now).
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A transport failure: whether the request can have been sent decides between
/// `Transient` (connect, DNS, refused: certainly not sent) and `Unknown` (timed out or cut
/// once under way). `what` names the call, e.g. "RingCentral SMS send".
pub(crate) fn transport_error(what: &str, error: &reqwest::Error) -> ProviderError {
    let (failure, code) = if error.is_builder() {
        (Failure::Permanent, "invalid_request")
    } else if error.is_connect() {
        // Connect timeouts are connect errors too: nothing was written.
        (Failure::Transient { retry_after: None }, "connect")
    } else if error.is_timeout() {
        (Failure::Unknown, "timeout")
    } else {
        (Failure::Unknown, "connection")
    };
    ProviderError {
        failure,
        http_status: None,
        code: Some(code.to_owned()),
        message: format!("{what} failed: {}", error_chain(error)),
    }
}

/// An error and its causes, joined: reqwest's own message ("error sending request")
/// says little; its causes say why (refused, timed out, reset).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The next midnight in Pacific time (when Google resets daily quotas), by the US
/// daylight-saving rules: from the second Sunday of March to the first Sunday of November.
pub fn next_pacific_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let local_date = |offset_hours: i64| (now - TimeDelta::hours(offset_hours)).date_naive();
    // Daylight time runs from 02:00 PST (10:00 UTC) to 02:00 PDT (09:00 UTC).
    let year = now.year();
    let dst_from = nth_sunday(year, 3, 2)
        .and_hms_opt(10, 0, 0)
        .map(|t| t.and_utc());
    let dst_until = nth_sunday(year, 11, 1)
        .and_hms_opt(9, 0, 0)
        .map(|t| t.and_utc());
    let in_dst =
        dst_from.is_some_and(|from| now >= from) && dst_until.is_some_and(|until| now < until);
    let today = local_date(if in_dst { 7 } else { 8 });
    let tomorrow = today + Days::new(1);
    // At midnight on the days of change the old offset still holds.
    let midnight_in_dst = tomorrow > nth_sunday(tomorrow.year(), 3, 2)
        && tomorrow <= nth_sunday(tomorrow.year(), 11, 1);
    let offset = TimeDelta::hours(if midnight_in_dst { 7 } else { 8 });
    tomorrow
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc() + offset)
        .unwrap_or(now + TimeDelta::days(1))
}

/// The `n`th Sunday of a month.
fn nth_sunday(year: i32, month: u32, n: u32) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Sun, n as u8)
        .unwrap_or(NaiveDate::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn pacific_midnight_follows_daylight_saving() {
        let cases = [
            // Summer (PDT, UTC-7) and winter (PST, UTC-8).
            ("2024-07-01T12:00:00Z", "2024-07-02T07:00:00Z"),
            ("2024-01-15T12:00:00Z", "2024-01-16T08:00:00Z"),
            // Late evening UTC is still the same Pacific day.
            ("2024-01-16T07:59:00Z", "2024-01-16T08:00:00Z"),
            ("2024-01-16T08:00:00Z", "2024-01-17T08:00:00Z"),
            // The night before daylight saving starts (10 March 2024) and the day it starts.
            ("2024-03-10T06:00:00Z", "2024-03-10T08:00:00Z"),
            ("2024-03-10T12:00:00Z", "2024-03-11T07:00:00Z"),
            // The night before it ends (3 November 2024) and the day it ends.
            ("2024-11-03T05:00:00Z", "2024-11-03T07:00:00Z"),
            ("2024-11-03T12:00:00Z", "2024-11-04T08:00:00Z"),
            // New Year's Eve in California.
            ("2025-01-01T07:30:00Z", "2025-01-01T08:00:00Z"),
        ];
        for (now, expected) in cases {
            assert_eq!(next_pacific_midnight(at(now)), at(expected), "from {now}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = at("2015-10-21T07:28:00Z");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().expect("header value"));
            retry_after(&headers, now)
        };
        assert_eq!(with("60"), Some(Duration::from_secs(60)));
        assert_eq!(with(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            with("Wed, 21 Oct 2015 07:29:30 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(with("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(with("-5"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn display_says_what_and_whether_to_retry() {
        let error = ProviderError {
            failure: Failure::Transient {
                retry_after: Some(Duration::from_secs(60)),
            },
            http_status: Some(429),
            code: Some("CMN-301".into()),
            message: "RingCentral SMS send was refused: Request rate exceeded".into(),
        };
        assert_eq!(
            error.to_string(),
            "RingCentral SMS send was refused: Request rate exceeded (HTTP 429, CMN-301); retry after 60s"
        );
        let refused = ProviderError::permanent("text_too_long", "SMS text has 1001 characters");
        assert_eq!(
            refused.to_string(),
            "SMS text has 1001 characters (text_too_long); will not succeed if retried"
        );
    }
}
