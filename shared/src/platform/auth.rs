//! Bearer tokens: compact JWTs signed with HS256 and `JWT_SECRET`.
//!
//! Only HS256 is accepted (the header's `alg` is checked, so `none` and key-confusion
//! tricks fail). Claims: `sub` (the user id), `role`, `customer_id` (customers only),
//! `exp` (seconds since the epoch), and, when present, `nbf` (not before) and `iat`
//! (issued at). A token is refused before its `nbf` or `iat` (with a small leeway for
//! clocks), after its `exp`, and when it is valid for longer than the longest lifetime
//! allowed (`JWT_MAX_LIFETIME`): from `iat` (or `nbf`, or now) to `exp`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{CustomerId, Role, UserId};

type HmacSha256 = Hmac<Sha256>;

/// Who the caller is, once their token checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    pub exp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is not signed with HS256")]
    WrongAlgorithm,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf or iat is in the future)")]
    NotYetValid,
    #[error("the token is valid for longer than the {max_secs} s allowed (JWT_MAX_LIFETIME)")]
    TooLong { max_secs: i64 },
    #[error("the token's claims are invalid: {0}")]
    BadClaims(String),
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes any key length")
}

/// The time claims, read beside [`Claims`].
#[derive(Serialize, Deserialize)]
struct Times {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
}

/// What a token's times must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    /// Clocks differ: `nbf` and `iat` this many seconds ahead are accepted.
    pub leeway_secs: i64,
    /// The longest lifetime accepted, `exp` less `iat` (or `nbf`, or now); `None`: any.
    pub max_lifetime_secs: Option<i64>,
}

impl Default for TimeRules {
    fn default() -> Self {
        Self {
            leeway_secs: 60,
            max_lifetime_secs: Some(30 * 24 * 3600),
        }
    }
}

/// Signs `claims`, stamped with `iat` = now.
pub fn issue(claims: &Claims, secret: &str) -> String {
    #[derive(Serialize)]
    struct Issued<'a> {
        #[serde(flatten)]
        claims: &'a Claims,
        #[serde(flatten)]
        times: Times,
    }
    let issued = Issued {
        claims,
        times: Times {
            nbf: None,
            iat: Some(chrono::Utc::now().timestamp()),
        },
    };
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&issued).unwrap_or_default());
    let signing_input = format!("{header}.{body}");
    let mut mac = mac(secret.as_bytes());
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// [`verify_with`] the default [`TimeRules`].
pub fn verify(token: &str, secret: &str, now_unix: i64) -> Result<Claims, TokenError> {
    verify_with(token, secret, now_unix, TimeRules::default())
}

pub fn verify_with(
    token: &str,
    secret: &str,
    now_unix: i64,
    rules: TimeRules,
) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let signing_input = &token[..header.len() + 1 + body.len()];
    let header: Header = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::WrongAlgorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(secret.as_bytes());
    mac.update(signing_input.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&body).map_err(|e| TokenError::BadClaims(e.to_string()))?;
    let times: Times =
        serde_json::from_slice(&body).map_err(|e| TokenError::BadClaims(e.to_string()))?;
    if claims.role == Role::Customer && claims.customer_id.is_none() {
        return Err(TokenError::BadClaims(
            "a customer token needs a customer_id".into(),
        ));
    }
    if claims.exp <= now_unix {
        return Err(TokenError::Expired);
    }
    let starts = times.iat.into_iter().chain(times.nbf).max();
    if starts.is_some_and(|start| start > now_unix + rules.leeway_secs) {
        return Err(TokenError::NotYetValid);
    }
    if let Some(max_secs) = rules.max_lifetime_secs {
        let from = times.iat.or(times.nbf).unwrap_or(now_unix);
        if claims.exp - from > max_secs {
            return Err(TokenError::TooLong { max_secs });
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(role: Role, customer: Option<&str>, exp: i64) -> Claims {
        Claims {
            sub: UserId::parse("u1").unwrap(),
            role,
            customer_id: customer.map(|c| CustomerId::parse(c).unwrap()),
            exp,
        }
    }

    #[test]
    fn round_trip() {
        let now = chrono::Utc::now().timestamp();
        let c = claims(Role::Customer, Some("c1"), now + 3600);
        let token = issue(&c, "k");
        assert_eq!(verify(&token, "k", now).unwrap(), c);
    }

    #[test]
    fn refuses_wrong_key_expiry_alg_and_garbage() {
        let c = claims(Role::Staff, None, 2_000);
        let token = issue(&c, "k");
        assert_eq!(
            verify(&token, "other", 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verify(&token, "k", 3_000), Err(TokenError::Expired));
        assert_eq!(verify("a.b", "k", 0), Err(TokenError::Malformed));
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let body = token.split('.').nth(1).unwrap();
        assert_eq!(
            verify(&format!("{none_header}.{body}."), "k", 0),
            Err(TokenError::WrongAlgorithm)
        );
    }

    /// A token with these extra claims, signed with `k`.
    fn with_times(claims: &Claims, extra: serde_json::Value) -> String {
        let mut body = serde_json::to_value(claims).unwrap();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap());
        let mut mac = mac(b"k");
        mac.update(format!("{header}.{body}").as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{body}.{signature}")
    }

    #[test]
    fn refuses_tokens_not_yet_valid_with_a_leeway() {
        let now = 1_000_000;
        let c = claims(Role::Staff, None, now + 3600);
        let rules = TimeRules::default();
        let at = |extra| verify_with(&with_times(&c, extra), "k", now, rules);
        assert!(at(serde_json::json!({ "nbf": now - 10 })).is_ok());
        assert!(
            at(serde_json::json!({ "nbf": now + 30 })).is_ok(),
            "within the leeway"
        );
        assert_eq!(
            at(serde_json::json!({ "nbf": now + 600 })),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            at(serde_json::json!({ "iat": now + 600 })),
            Err(TokenError::NotYetValid)
        );
        assert!(matches!(
            at(serde_json::json!({ "nbf": "soon" })),
            Err(TokenError::BadClaims(_))
        ));
    }

    #[test]
    fn refuses_tokens_that_live_too_long() {
        let now = 1_000_000;
        let day = 24 * 3600;
        let rules = TimeRules {
            leeway_secs: 60,
            max_lifetime_secs: Some(30 * day),
        };
        let long = claims(Role::Staff, None, now + 31 * day);
        assert_eq!(
            verify_with(
                &with_times(&long, serde_json::json!({ "iat": now })),
                "k",
                now,
                rules
            ),
            Err(TokenError::TooLong { max_secs: 30 * day })
        );
        // Issued 10 days ago for 35 days: 35 days of life, refused though 25 remain.
        let old = claims(Role::Staff, None, now + 25 * day);
        assert_eq!(
            verify_with(
                &with_times(&old, serde_json::json!({ "iat": now - 10 * day })),
                "k",
                now,
                rules
            ),
            Err(TokenError::TooLong { max_secs: 30 * day })
        );
        let fine = claims(Role::Staff, None, now + 29 * day);
        assert!(
            verify_with(
                &with_times(&fine, serde_json::json!({ "iat": now })),
                "k",
                now,
                rules
            )
            .is_ok()
        );
        let unbounded = TimeRules {
            max_lifetime_secs: None,
            ..rules
        };
        assert!(
            verify_with(
                &with_times(&long, serde_json::json!({})),
                "k",
                now,
                unbounded
            )
            .is_ok()
        );
    }

    #[test]
    fn issued_tokens_carry_their_issue_time() {
        let c = claims(Role::Staff, None, 4_000_000_000);
        let token = issue(&c, "k");
        let body = token.split('.').nth(1).unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        let iat = body["iat"].as_i64().unwrap();
        assert!((iat - chrono::Utc::now().timestamp()).abs() < 5, "{body}");
    }

    #[test]
    fn customer_token_needs_customer_id() {
        let token = issue(&claims(Role::Customer, None, 2_000), "k");
        assert!(matches!(
            verify(&token, "k", 0),
            Err(TokenError::BadClaims(_))
        ));
    }
}
