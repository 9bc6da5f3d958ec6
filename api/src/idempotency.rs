//! `Idempotency-Key` on creating POSTs: a retried request with the same key (from the
//! same user) returns the first answer and creates nothing new; the same key with a
//! different request is refused.
//!
//! The key row is inserted in the request's own transaction. A concurrent duplicate
//! blocks on the unique key until the first commits, then finds its stored answer; if
//! the first rolls back, the duplicate proceeds as the first.

use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    user_id: String,
    key: String,
    request_hash: String,
}

/// What a previous request with the same key answered.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub body: Value,
}

impl IdempotencyKey {
    /// Reads the header; `None` when absent. The request is hashed with its route so a
    /// key cannot be replayed against another endpoint.
    pub fn from_headers(
        headers: &HeaderMap,
        user_id: &str,
        route: &str,
        request: &impl Serialize,
    ) -> Result<Option<Self>, ApiError> {
        let Some(raw) = headers.get(HEADER) else {
            return Ok(None);
        };
        let key = raw
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                )
            })?;
        let mut hasher = Sha256::new();
        hasher.update(route.as_bytes());
        hasher.update([0]);
        hasher.update(serde_json::to_vec(request).map_err(anyhow::Error::from)?);
        Ok(Some(Self {
            user_id: user_id.to_owned(),
            key: key.to_owned(),
            request_hash: format!("{:x}", hasher.finalize()),
        }))
    }

    /// Claims the key in `conn`'s transaction. `Some` is the earlier answer to return.
    pub async fn claim(&self, conn: &mut PgConnection) -> Result<Option<StoredResponse>, ApiError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, response_body)
             VALUES ($1, $2, $3, 0, 'null') ON CONFLICT DO NOTHING",
        )
        .bind(&self.user_id)
        .bind(&self.key)
        .bind(&self.request_hash)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(None);
        }
        let (hash, status, body): (String, i16, Value) = sqlx::query_as(
            "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(&self.user_id)
        .bind(&self.key)
        .fetch_one(&mut *conn)
        .await?;
        if hash != self.request_hash {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was already used with a different request".into(),
            ));
        }
        Ok(Some(StoredResponse {
            status: StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
            body,
        }))
    }

    /// Stores the answer with the key, in the same transaction as the effect.
    pub async fn store(
        &self,
        conn: &mut PgConnection,
        status: StatusCode,
        body: &Value,
    ) -> Result<(), ApiError> {
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = $3, response_body = $4 WHERE user_id = $1 AND key = $2",
        )
        .bind(&self.user_id)
        .bind(&self.key)
        .bind(status.as_u16() as i16)
        .bind(body)
        .execute(conn)
        .await?;
        Ok(())
    }
}
