//! Bearer tokens: compact JWTs signed with HS256 and `JWT_SECRET`.
//!
//! Only HS256 is accepted (the header's `alg` is checked, so `none` and key-confusion
//! tricks fail). Claims: `sub` (the user id), `role`, `customer_id` (customers only),
//! `exp` (seconds since the epoch).

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

pub fn issue(claims: &Claims, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{body}");
    let mut mac = mac(secret.as_bytes());
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

pub fn verify(token: &str, secret: &str, now_unix: i64) -> Result<Claims, TokenError> {
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
    if claims.exp <= now_unix {
        return Err(TokenError::Expired);
    }
    match (claims.role, &claims.customer_id) {
        (Role::Customer, None) => Err(TokenError::BadClaims(
            "a customer token needs a customer_id".into(),
        )),
        _ => Ok(claims),
    }
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
        let c = claims(Role::Customer, Some("c1"), 2_000_000_000);
        let token = issue(&c, "k");
        assert_eq!(verify(&token, "k", 1_000).unwrap(), c);
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

    #[test]
    fn customer_token_needs_customer_id() {
        let token = issue(&claims(Role::Customer, None, 2_000), "k");
        assert!(matches!(
            verify(&token, "k", 0),
            Err(TokenError::BadClaims(_))
        ));
    }
}
