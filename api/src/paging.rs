//! Keyset pages: a `limit` checked against its bounds, and opaque cursors carrying the
//! sort key of a page's last row (base64 of its parts joined by `:`; only the last part
//! may itself contain `:`).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};

use crate::error::{ApiError, ApiResult};

/// `raw` as a page size from 1 to `max`; `default` when absent.
pub fn limit(raw: Option<&str>, default: i64, max: i64) -> ApiResult<i64> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("limit must be a whole number from 1 to {max}"),
                )
            }),
    }
}

pub fn encode(parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join(":"))
}

/// The `N` parts of a cursor this API issued; `None` for anything else.
pub fn decode<const N: usize>(raw: &str) -> Option<[String; N]> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    let parts: Vec<String> = text.splitn(N, ':').map(str::to_owned).collect();
    parts.try_into().ok()
}

/// A time as a cursor carries it: microseconds since the epoch.
pub fn time_part(at: DateTime<Utc>) -> String {
    at.timestamp_micros().to_string()
}

pub fn parse_time_part(raw: &str) -> Option<DateTime<Utc>> {
    raw.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
}

/// The error for a cursor that is not one of ours.
pub fn foreign_cursor() -> ApiError {
    ApiError::bad_request("invalid_query", "cursor is not one this API issued")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_strangers() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        let raw = encode(&[&time_part(at), "cust:1"]);
        let [time, rest] = decode::<2>(&raw).unwrap();
        assert_eq!(parse_time_part(&time), Some(at));
        assert_eq!(rest, "cust:1");
        // Three parts asked of two: not ours.
        assert!(decode::<3>(&encode(&[&time_part(at), "cust-1"])).is_none());
        assert!(decode::<2>("%%%").is_none());
        assert_eq!(limit(None, 50, 200).unwrap(), 50);
        assert!(limit(Some("0"), 50, 200).is_err());
        assert!(limit(Some("201"), 50, 200).is_err());
        assert!(limit(Some("x"), 50, 200).is_err());
    }
}
