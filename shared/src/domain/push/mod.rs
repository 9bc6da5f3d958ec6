//! Web Push (RFC 8030): the VAPID key pair every instance signs with (RFC 8292), and
//! each person's browser subscriptions, checked at the door: the endpoint is a URL the
//! server will POST to, so only the allowed push services' origins are taken, and the
//! browser's keys must be a P-256 point and a 16-byte secret. [`message`]: what a push
//! carries (the payload encrypted for one browser, our VAPID token); [`send`]: one push
//! to one browser and what its push service answered. Deciding whom to push to, and
//! when, is not built yet: docs/push.md says what is.

pub mod message;
pub mod send;

use base64::{
    Engine as _,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use chrono::{DateTime, Utc};
use p256::{PublicKey, SecretKey, elliptic_curve::sec1::ToEncodedPoint as _};
use reqwest::Url;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{CustomerId, Role};
use crate::platform::settings::{AllowedOrigin, Secret};

/// Base64url as browsers write it: padded or not.
pub(crate) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The longest endpoint taken (push services' are well under 1 KB).
const MAX_ENDPOINT: usize = 2048;

/// The application server's key pair (VAPID).
pub struct VapidKey {
    pub(crate) secret: SecretKey,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A private key as `VAPID_PRIVATE_KEY` holds it: base64url of the 32-byte scalar.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bytes = BASE64URL
            .decode(raw.trim())
            .map_err(|e| format!("VAPID_PRIVATE_KEY is not base64url: {e}"))?;
        let secret = SecretKey::from_slice(&bytes).map_err(|_| {
            format!(
                "VAPID_PRIVATE_KEY is not a P-256 private key (32 bytes, not zero, below the \
                 curve's order; it has {} bytes)",
                bytes.len()
            )
        })?;
        Ok(Self { secret })
    }

    pub(crate) fn generate() -> Self {
        loop {
            // A random 32 bytes is a valid scalar but for a chance of about 2^-32.
            if let Ok(secret) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                return Self { secret };
            }
        }
    }

    fn private_key(&self) -> String {
        BASE64URL.encode(self.secret.to_bytes())
    }

    /// The public key as `PushManager.subscribe({applicationServerKey})` takes it:
    /// base64url of the uncompressed point (65 bytes, starting 0x04).
    pub fn public_key(&self) -> String {
        BASE64URL.encode(self.secret.public_key().to_encoded_point(false).as_bytes())
    }

    /// `VAPID_PRIVATE_KEY` when set; otherwise the key kept in the database, made by
    /// whichever instance came first.
    pub async fn load(pool: &PgPool, configured: Option<&Secret>) -> anyhow::Result<Self> {
        if let Some(raw) = configured {
            return Self::parse(raw.expose()).map_err(anyhow::Error::msg);
        }
        let made = Self::generate();
        let kept: String = sqlx::query_scalar(
            "WITH made AS (
                 INSERT INTO vapid_keys (private_key) VALUES ($1)
                 ON CONFLICT (only_one) DO NOTHING RETURNING private_key)
             SELECT private_key FROM made
             UNION ALL SELECT private_key FROM vapid_keys
             LIMIT 1",
        )
        .bind(made.private_key())
        .fetch_one(pool)
        .await?;
        Self::parse(&kept).map_err(|e| anyhow::anyhow!("the kept VAPID key: {e}"))
    }
}

/// Whether `endpoint` is a push service's URL we may POST to: https (or http on a
/// loopback origin listed), on an allowed origin, no user or fragment.
pub fn check_endpoint(raw: &str, allow: &[AllowedOrigin]) -> Result<Url, String> {
    if raw.len() > MAX_ENDPOINT {
        return Err(format!("longer than {MAX_ENDPOINT} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err("a push endpoint has no user, password or fragment".into());
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let allowed = allow.iter().any(|origin| {
        origin.scheme == url.scheme()
            && origin.port == url.port()
            && if origin.subdomains {
                host.strip_suffix(&origin.host)
                    .is_some_and(|under| under.len() > 1 && under.ends_with('.'))
            } else {
                host == origin.host
            }
    });
    if !allowed {
        return Err(format!(
            "{}://{}{} is not a push service this server sends to (PUSH_ENDPOINT_ALLOW)",
            url.scheme(),
            host,
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ));
    }
    Ok(url)
}

/// A browser's `PushSubscription.toJSON()`, checked.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub endpoint: Url,
    /// The browser's P-256 public key, base64url of its uncompressed point.
    pub p256dh: String,
    /// The browser's 16-byte authentication secret, base64url.
    pub auth: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a subscription was refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: &'static str,
    pub problem: String,
}

impl NewSubscription {
    pub fn parse(body: &Value, allow: &[AllowedOrigin]) -> Result<Self, Refusal> {
        let refuse = |field: &'static str, problem: String| Refusal { field, problem };
        let text = |field: &'static str, value: &Value| {
            value
                .as_str()
                .ok_or_else(|| refuse(field, "is required, as a string".into()))
                .map(str::to_owned)
        };
        if !body.is_object() {
            return Err(refuse(
                "body",
                "must be the PushSubscription as JSON".into(),
            ));
        }
        let endpoint = text("endpoint", &body["endpoint"])?;
        let endpoint = check_endpoint(&endpoint, allow).map_err(|p| refuse("endpoint", p))?;
        let p256dh = text("keys.p256dh", &body["keys"]["p256dh"])?;
        let point = BASE64URL
            .decode(&p256dh)
            .map_err(|e| refuse("keys.p256dh", format!("is not base64url ({e})")))?;
        if point.len() != 65 || PublicKey::from_sec1_bytes(&point).is_err() {
            return Err(refuse(
                "keys.p256dh",
                format!(
                    "is not a P-256 public key (65 bytes, an uncompressed point on the \
                     curve; it has {} bytes)",
                    point.len()
                ),
            ));
        }
        let auth = text("keys.auth", &body["keys"]["auth"])?;
        let secret = BASE64URL
            .decode(&auth)
            .map_err(|e| refuse("keys.auth", format!("is not base64url ({e})")))?;
        if secret.len() != 16 {
            return Err(refuse(
                "keys.auth",
                format!("must be 16 bytes, not {}", secret.len()),
            ));
        }
        let expires_at = match &body["expirationTime"] {
            Value::Null => None,
            Value::Number(ms) => Some(
                ms.as_i64()
                    .and_then(DateTime::from_timestamp_millis)
                    .ok_or_else(|| {
                        refuse("expirationTime", "is not a time in milliseconds".into())
                    })?,
            ),
            _ => {
                return Err(refuse(
                    "expirationTime",
                    "must be null or milliseconds since 1970".into(),
                ));
            }
        };
        Ok(Self {
            endpoint,
            // Kept as browsers write them, without padding.
            p256dh: BASE64URL.encode(point),
            auth: BASE64URL.encode(secret),
            expires_at,
        })
    }
}

/// Whose browser it is.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub user_id: &'a str,
    pub role: Role,
    pub customer_id: Option<&'a CustomerId>,
}

/// A kept subscription, as its owner lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub endpoint: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, endpoint, expires_at, created_at, updated_at";

/// Keeps the subscription; the same endpoint again (the browser renewing it, or another
/// person signed in on that browser) updates the one row. Answers whether it is new.
pub async fn subscribe(
    conn: &mut PgConnection,
    owner: Owner<'_>,
    new: &NewSubscription,
) -> sqlx::Result<(Subscription, bool)> {
    // `xmax = 0`: the row was inserted, not updated.
    let row: Kept = sqlx::query_as(&format!(
        "INSERT INTO push_subscriptions
             (id, user_id, role, customer_id, endpoint, p256dh, auth, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (endpoint) DO UPDATE SET
             user_id = EXCLUDED.user_id, role = EXCLUDED.role,
             customer_id = EXCLUDED.customer_id, p256dh = EXCLUDED.p256dh,
             auth = EXCLUDED.auth, expires_at = EXCLUDED.expires_at, updated_at = now()
         RETURNING {COLUMNS}, (xmax = 0) AS created"
    ))
    .bind(Uuid::now_v7())
    .bind(owner.user_id)
    .bind(owner.role.as_str())
    .bind(owner.customer_id.map(CustomerId::as_str))
    .bind(new.endpoint.as_str())
    .bind(&new.p256dh)
    .bind(&new.auth)
    .bind(new.expires_at)
    .fetch_one(conn)
    .await?;
    Ok((row.subscription, row.created))
}

#[derive(sqlx::FromRow)]
struct Kept {
    #[sqlx(flatten)]
    subscription: Subscription,
    created: bool,
}

/// A person's browsers, newest first.
pub async fn list(conn: &mut PgConnection, user_id: &str) -> sqlx::Result<Vec<Subscription>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM push_subscriptions WHERE user_id = $1 ORDER BY created_at DESC"
    ))
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Forgets one of `user_id`'s browsers; false when they have none with that id.
pub async fn unsubscribe(conn: &mut PgConnection, user_id: &str, id: Uuid) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> Vec<AllowedOrigin> {
        [
            "https://fcm.googleapis.com",
            "https://*.notify.windows.com",
            "http://127.0.0.1:9199",
        ]
        .iter()
        .map(|o| AllowedOrigin::parse(o).unwrap())
        .collect()
    }

    #[test]
    fn endpoints_only_on_allowed_origins() {
        let allow = allow();
        for good in [
            "https://fcm.googleapis.com/fcm/send/abc:def",
            "https://wns2-par02p.notify.windows.com/w/?token=x",
            "http://127.0.0.1:9199/push/1",
        ] {
            assert!(check_endpoint(good, &allow).is_ok(), "{good}");
        }
        for bad in [
            "https://notify.windows.com/w",
            "https://evilnotify.windows.com/w",
            "https://fcm.googleapis.com.evil.example/x",
            "http://fcm.googleapis.com/fcm/send/abc",
            "https://fcm.googleapis.com:8443/x",
            "http://127.0.0.1:5432/",
            "http://169.254.169.254/latest/meta-data",
            "https://user:pw@fcm.googleapis.com/x",
            "not a url",
        ] {
            assert!(check_endpoint(bad, &allow).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_browsers_subscription_is_checked_field_by_field() {
        let allow = allow();
        let point = SecretKey::from_slice(&[7; 32])
            .unwrap()
            .public_key()
            .to_encoded_point(false);
        let good = serde_json::json!({
            "endpoint": "https://fcm.googleapis.com/fcm/send/x",
            "expirationTime": null,
            "keys": { "p256dh": BASE64URL.encode(point.as_bytes()), "auth": BASE64URL.encode([1u8; 16]) },
        });
        assert!(NewSubscription::parse(&good, &allow).is_ok());
        let field = |body: Value| NewSubscription::parse(&body, &allow).unwrap_err().field;
        let mut bad = good.clone();
        bad["keys"]["auth"] = Value::Null;
        assert_eq!(field(bad), "keys.auth");
        let mut bad = good.clone();
        bad["keys"]["p256dh"] = BASE64URL.encode([4u8; 65]).into();
        assert_eq!(field(bad), "keys.p256dh");
        let mut bad = good.clone();
        bad["endpoint"] = "https://push.example.com/x".into();
        assert_eq!(field(bad), "endpoint");
        let mut bad = good.clone();
        bad["expirationTime"] = "tomorrow".into();
        assert_eq!(field(bad), "expirationTime");
        assert_eq!(field(serde_json::json!([])), "body");
    }

    #[test]
    fn a_vapid_key_round_trips_and_its_public_key_is_an_uncompressed_point() {
        let key = VapidKey::generate();
        let again = VapidKey::parse(&key.private_key()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let public = BASE64URL.decode(key.public_key()).unwrap();
        assert_eq!((public.len(), public[0]), (65, 4));
        assert!(VapidKey::parse("AAAA").is_err());
    }
}
