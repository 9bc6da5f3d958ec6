//! The classification of provider answers, status by status.

use std::time::Duration;

use chrono::{DateTime, Utc};
use commcenter_providers::{Failure, ProviderError, gmail, ringcentral};
use reqwest::header::{HeaderMap, HeaderValue};

const NOW: &str = "2024-07-01T12:00:00Z";

fn now() -> DateTime<Utc> {
    NOW.parse().expect("time")
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| (name.parse().expect("name"), HeaderValue::from_static(value)))
        .collect()
}

fn transient(seconds: Option<u64>) -> Failure {
    Failure::Transient {
        retry_after: seconds.map(Duration::from_secs),
    }
}

fn ringcentral(status: u16, headers: &HeaderMap, body: &str) -> Result<(), ProviderError> {
    ringcentral::classify("SMS send", status, headers, body.as_bytes(), now())
}

fn gmail(status: u16, headers: &HeaderMap, body: &str) -> Result<(), ProviderError> {
    gmail::classify("Gmail send", status, headers, body.as_bytes(), now())
}

fn google_error(code: u16, reason: &str) -> String {
    format!(
        r#"{{"error":{{"code":{code},"message":"quota says no","errors":[{{"domain":"usageLimits","reason":"{reason}","message":"quota says no"}}]}}}}"#
    )
}

#[test]
fn ringcentral_answers() {
    let none = HeaderMap::new();
    let rate_body = r#"{"errorCode":"CMN-301","message":"Request rate exceeded","errors":[{"errorCode":"CMN-301","message":"Request rate exceeded"}]}"#;
    let cannot_receive = r#"{"errorCode":"MSG-246","message":"Phone number [+14155550100] cannot receive SMS","errors":[{"errorCode":"MSG-246","message":"Phone number [+14155550100] cannot receive SMS"}]}"#;
    let errors_only = r#"{"errors":[{"errorCode":"CMN-101","message":"Parameter [to.phoneNumber] value is invalid"}]}"#;
    // status, headers, body → failure, code
    let cases: Vec<(u16, HeaderMap, &str, Failure, Option<&str>)> = vec![
        (
            400,
            none.clone(),
            cannot_receive,
            Failure::Permanent,
            Some("MSG-246"),
        ),
        (
            400,
            none.clone(),
            errors_only,
            Failure::Permanent,
            Some("CMN-101"),
        ),
        (400, none.clone(), "not json", Failure::Permanent, None),
        (
            401,
            none.clone(),
            r#"{"errorCode":"TokenInvalid"}"#,
            Failure::Permanent,
            Some("TokenInvalid"),
        ),
        (
            403,
            none.clone(),
            r#"{"errorCode":"CMN-408","message":"In order to call this API endpoint, user needs to have [SMS] permission"}"#,
            Failure::Permanent,
            Some("CMN-408"),
        ),
        (
            404,
            none.clone(),
            r#"{"errorCode":"CMN-102","message":"Resource not found"}"#,
            Failure::Permanent,
            Some("CMN-102"),
        ),
        (408, none.clone(), "", transient(None), None),
        (415, none.clone(), "", Failure::Permanent, None),
        (
            429,
            headers(&[("retry-after", "60")]),
            rate_body,
            transient(Some(60)),
            Some("CMN-301"),
        ),
        (
            429,
            headers(&[("retry-after", "Mon, 01 Jul 2024 12:00:30 GMT")]),
            rate_body,
            transient(Some(30)),
            Some("CMN-301"),
        ),
        (
            429,
            none.clone(),
            rate_body,
            transient(None),
            Some("CMN-301"),
        ),
        (500, none.clone(), "", transient(None), None),
        (
            502,
            none.clone(),
            "<html>bad gateway</html>",
            transient(None),
            None,
        ),
        (
            503,
            headers(&[("retry-after", "5")]),
            r#"{"errorCode":"CMN-211","message":"Service temporarily unavailable"}"#,
            transient(Some(5)),
            Some("CMN-211"),
        ),
    ];
    for (status, headers, body, failure, code) in cases {
        let error = ringcentral(status, &headers, body).expect_err("a failure");
        assert_eq!(error.failure, failure, "{status} {body}");
        assert_eq!(error.code.as_deref(), code, "{status} {body}");
        assert_eq!(error.http_status, Some(status));
        assert!(
            error.message.starts_with("SMS send: RingCentral"),
            "{}",
            error.message
        );
    }
    for status in [200, 201, 204] {
        assert_eq!(ringcentral(status, &none, "{}"), Ok(()));
    }
    // The provider's own words reach the message.
    let error = ringcentral(400, &none, cannot_receive).expect_err("refused");
    assert!(
        error.message.contains("cannot receive SMS"),
        "{}",
        error.message
    );
}

#[test]
fn gmail_answers() {
    let none = HeaderMap::new();
    let until_midnight = Duration::from_secs(19 * 3600); // 05:00 PDT → 00:00 PDT
    let cases: Vec<(u16, HeaderMap, String, Failure, Option<&str>)> = vec![
        (
            400,
            none.clone(),
            google_error(400, "invalidArgument"),
            Failure::Permanent,
            Some("invalidArgument"),
        ),
        (
            401,
            none.clone(),
            google_error(401, "authError"),
            Failure::Permanent,
            Some("authError"),
        ),
        (
            403,
            none.clone(),
            google_error(403, "rateLimitExceeded"),
            transient(None),
            Some("rateLimitExceeded"),
        ),
        (
            403,
            headers(&[("retry-after", "7")]),
            google_error(403, "userRateLimitExceeded"),
            transient(Some(7)),
            Some("userRateLimitExceeded"),
        ),
        (
            403,
            none.clone(),
            google_error(403, "dailyLimitExceeded"),
            Failure::Transient {
                retry_after: Some(until_midnight),
            },
            Some("dailyLimitExceeded"),
        ),
        (
            429,
            none.clone(),
            google_error(429, "dailyLimitExceeded"),
            Failure::Transient {
                retry_after: Some(until_midnight),
            },
            Some("dailyLimitExceeded"),
        ),
        (
            403,
            none.clone(),
            google_error(403, "insufficientPermissions"),
            Failure::Permanent,
            Some("insufficientPermissions"),
        ),
        (
            403,
            none.clone(),
            String::from("forbidden"),
            Failure::Permanent,
            None,
        ),
        (
            404,
            none.clone(),
            google_error(404, "notFound"),
            Failure::Permanent,
            Some("notFound"),
        ),
        (408, none.clone(), String::new(), transient(None), None),
        (
            429,
            headers(&[("retry-after", "120")]),
            google_error(429, "rateLimitExceeded"),
            transient(Some(120)),
            Some("rateLimitExceeded"),
        ),
        (
            429,
            none.clone(),
            google_error(429, "userRateLimitExceeded"),
            transient(None),
            Some("userRateLimitExceeded"),
        ),
        (
            500,
            none.clone(),
            google_error(500, "backendError"),
            transient(None),
            Some("backendError"),
        ),
        (
            503,
            headers(&[("retry-after", "2")]),
            String::new(),
            transient(Some(2)),
            None,
        ),
    ];
    for (status, headers, body, failure, code) in cases {
        let error = gmail(status, &headers, &body).expect_err("a failure");
        assert_eq!(error.failure, failure, "{status} {body}");
        assert_eq!(error.code.as_deref(), code, "{status} {body}");
        assert_eq!(error.http_status, Some(status));
    }
    assert_eq!(gmail(200, &none, "{}"), Ok(()));
    let error =
        gmail(403, &none, &google_error(403, "insufficientPermissions")).expect_err("refused");
    assert!(error.message.contains("quota says no"), "{}", error.message);
}

#[test]
fn gmail_token_refusals() {
    let none = HeaderMap::new();
    let revoked =
        r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#;
    let error = gmail::token_refusal(400, &none, revoked.as_bytes(), now());
    assert_eq!(error.failure, Failure::Permanent);
    assert_eq!(error.code.as_deref(), Some("invalid_grant"));
    assert!(
        error.message.contains("must be reconnected"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("expired or revoked"),
        "{}",
        error.message
    );

    let bad_client =
        r#"{"error":"invalid_client","error_description":"The OAuth client was not found."}"#;
    let error = gmail::token_refusal(401, &none, bad_client.as_bytes(), now());
    assert_eq!(
        (error.failure, error.code.as_deref()),
        (Failure::Permanent, Some("invalid_client"))
    );

    let error = gmail::token_refusal(503, &headers(&[("retry-after", "3")]), b"", now());
    assert_eq!(error.failure, transient(Some(3)));
    let error = gmail::token_refusal(500, &none, b"", now());
    assert_eq!(error.failure, transient(None));
}
