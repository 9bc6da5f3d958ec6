//! `GET /api/ws/{user_id}?token=JWT`: the live feed. JSON text frames, each with a
//! `type`; the first is `connected`. The server pings every `WS_PING_SECS` and closes a
//! connection that has not answered for two intervals; a client too slow to keep its
//! buffer from filling is closed with code 1008.

use std::time::Instant;

use axum::{
    extract::{
        Path, Query, State, WebSocketUpgrade,
        ws::rejection::WebSocketUpgradeRejection,
        ws::{CloseFrame, Message, WebSocket},
    },
    response::Response,
};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;

use commcenter_shared::{auth::Claims, domain::UserId};

use crate::{auth, error::ApiError, startup::AppState};

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

pub async fn connect(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Query(query): Query<WsQuery>,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let user = UserId::parse(&user_id).map_err(|e| ApiError::bad_request("invalid_path", e.0))?;
    // Browsers cannot set headers on a WebSocket, hence the query parameter; a bearer
    // header is accepted too.
    let token = query
        .token
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::to_owned)
        })
        .ok_or_else(|| ApiError::Unauthorized("missing token (?token=JWT)".into()))?;
    let claims = auth::verify(&state, &token)?;
    if claims.sub != user {
        return Err(ApiError::Forbidden(
            "the token belongs to another user".into(),
        ));
    }
    // Authentication first: a caller without a valid token learns nothing else.
    let upgrade = upgrade.map_err(|e| ApiError::bad_request("not_a_websocket", e.body_text()))?;
    Ok(upgrade.on_upgrade(move |socket| serve(state, claims, socket)))
}

async fn serve(state: AppState, claims: Claims, socket: WebSocket) {
    let hub = state.hub.clone();
    let mut subscription =
        hub.subscribe(claims.sub.clone(), claims.role, claims.customer_id.clone());
    let (mut sink, mut stream) = socket.split();
    let ping_every = state.settings.http.ws_ping;
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut last_heard = Instant::now();

    let hello =
        json!({ "type": "connected", "user_id": claims.sub, "role": claims.role }).to_string();
    if sink.send(Message::Text(hello.into())).await.is_err() {
        hub.unsubscribe(subscription.id);
        return;
    }
    let close_reason = loop {
        tokio::select! {
            () = subscription.too_slow.cancelled() => break Some((1008, "too slow: event buffer overflowed")),
            frame = subscription.frames.recv() => {
                let Some(frame) = frame else { break None };
                // A send that blocks on a stalled socket is cut short by the overflow signal.
                tokio::select! {
                    sent = sink.send(Message::Text(frame.as_ref().into())) => if sent.is_err() { break None },
                    () = subscription.too_slow.cancelled() => break Some((1008, "too slow: event buffer overflowed")),
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    break Some((1001, "heartbeat timed out"));
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
        }
    };
    hub.unsubscribe(subscription.id);
    if let Some((code, reason)) = close_reason {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // Best effort: a stalled client may never read it.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}
