//! `GET /api/ws/{user_id}?token=JWT[&since=SEQ]`: the live feed. The protocol (every
//! frame both ways, close codes, limits, recovery) is in docs/websocket.md.
//!
//! The connection is admitted by [`crate::presence`] (at most `WS_MAX_PER_USER` per
//! user across instances; the first announces the user online). It subscribes to the
//! Hub *before* reading the event log, so nothing falls between what it replays and
//! what arrives live; live frames at or below the last position sent are skipped.

use std::time::Instant;

use axum::{
    extract::{
        Path, Query, State, WebSocketUpgrade,
        ws::rejection::WebSocketUpgradeRejection,
        ws::{CloseFrame, Message, WebSocket},
    },
    response::Response,
};
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use serde::Deserialize;
use serde_json::{Value, json};

use commcenter_shared::{
    domain::crews,
    domain::{CustomerId, Role, UserId},
    ledger::events::{self, Event, EventBody, TypingState, Viewer},
    platform::auth::Claims,
};

use crate::{auth, error::ApiError, presence::Refused, state::AppState};

/// At most this many missed events are replayed; a client further behind refetches.
const REPLAY_LIMIT: i64 = 1000;
/// Close codes (RFC 6455): going away, policy violation, message too big, server error.
const CLOSE_HEARTBEAT: u16 = 1001;
const CLOSE_TOO_SLOW: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_SERVER_ERROR: u16 = 1011;
/// An idle connection's socket buffers: small, since frames are small and written at
/// once; tungstenite's defaults (128 KiB each way) made an idle connection cost 130 KiB.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 4 * 1024;
/// A writer this far behind the socket is dropped rather than buffered further.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    /// The last `seq` the client saw: what came after it is replayed.
    since: Option<String>,
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
    let since = query
        .since
        .as_deref()
        .map(|raw| {
            raw.parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("since must be a seq this API sent (a whole number), not {raw:?}"),
                )
            })
        })
        .transpose()?;
    // Authentication first: a caller without a valid token learns nothing else.
    let upgrade = upgrade.map_err(|e| ApiError::bad_request("not_a_websocket", e.body_text()))?;
    match state.presence.connect(&claims).await {
        Ok(()) => {}
        Err(Refused::TooMany(open)) => {
            return Err(ApiError::TooManyRequests(format!(
                "{user} has {open} WebSocket connections open, the most allowed (WS_MAX_PER_USER); close one first"
            )));
        }
        Err(Refused::Database(error)) => return Err(error.into()),
    }
    let limit = state.settings.http.ws_max_message_bytes;
    let (failed_state, failed_claims) = (state.clone(), claims.clone());
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(move |_| {
            // Admitted but never connected: count it closed.
            tokio::spawn(async move {
                disconnected(&failed_state, &failed_claims).await;
            });
        })
        .on_upgrade(move |socket| async move {
            let who = claims.clone();
            serve(&state, claims, since, socket).await;
            disconnected(&state, &who).await;
        }))
}

async fn disconnected(state: &AppState, who: &Claims) {
    if let Err(error) = state.presence.disconnect(who).await {
        tracing::warn!(%error, user = %who.sub, "could not record a closed WebSocket");
    }
}

type Sink = SplitSink<WebSocket, Message>;

async fn send_json(sink: &mut Sink, value: &Value) -> bool {
    sink.send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

/// Who the connection is, for what it may see: a crew member's crew is read once, as
/// the socket opens (a member moved to another crew reconnects to follow it).
async fn viewer_of(state: &AppState, claims: &Claims) -> Viewer {
    let crew = if claims.role == Role::Crew {
        let found = async {
            let mut conn = state.pool.acquire().await?;
            crews::crew_of(&mut conn, claims.sub.as_str()).await
        }
        .await;
        found.unwrap_or_else(|error| {
            tracing::warn!(%error, "could not read a crew member's crew; they see no crew events");
            None
        })
    } else {
        None
    };
    Viewer {
        role: claims.role,
        customer: claims.customer_id.clone(),
        crew,
    }
}

async fn serve(state: &AppState, claims: Claims, since: Option<i64>, socket: WebSocket) {
    let hub = state.hub.clone();
    let viewer = viewer_of(state, &claims).await;
    let mut subscription = hub.subscribe(claims.sub.clone(), viewer.clone());
    let (mut sink, mut stream) = socket.split();
    let close = run(
        state,
        &claims,
        &viewer,
        since,
        &mut subscription,
        &mut sink,
        &mut stream,
    )
    .await;
    hub.unsubscribe(subscription.id);
    if let Some((code, reason)) = close {
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

/// The connection's life; `Some` is the close frame to send.
async fn run(
    state: &AppState,
    claims: &Claims,
    viewer: &Viewer,
    since: Option<i64>,
    subscription: &mut crate::notifier::Subscription,
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Option<(u16, String)> {
    // Where the client is: the log's head now, or, resuming, what it missed.
    let replay = async {
        let mut conn = state.pool.acquire().await?;
        events::replay(&mut conn, since, viewer, REPLAY_LIMIT).await
    }
    .await;
    let replay = match replay {
        Ok(replay) => replay,
        Err(error) => {
            tracing::warn!(%error, "could not read the event log for a new WebSocket");
            return Some((CLOSE_SERVER_ERROR, "try again shortly".into()));
        }
    };
    let hello = json!({
        "type": "connected", "user_id": claims.sub, "role": claims.role, "seq": replay.head,
        "limits": {
            "max_message_bytes": state.settings.http.ws_max_message_bytes,
            "max_connections": state.settings.http.ws_max_per_user,
            "typing_every_ms": crate::notifier::TYPING_EVERY.as_millis() as u64,
        },
    });
    if !send_json(sink, &hello).await {
        return None;
    }
    let mut position = replay.head;
    if since.is_some() {
        for (seq, payload) in &replay.events {
            if !send_json(sink, payload).await {
                return None;
            }
            position = position.max(*seq);
        }
        let recovered =
            json!({ "type": "recovered", "recovered": replay.recovered, "seq": replay.head });
        if !send_json(sink, &recovered).await {
            return None;
        }
    }

    let ping_every = state.settings.http.ws_ping;
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let too_slow = || {
        Some((
            CLOSE_TOO_SLOW,
            "too slow: event buffer overflowed".to_owned(),
        ))
    };
    loop {
        tokio::select! {
            () = subscription.too_slow.cancelled() => return too_slow(),
            frame = subscription.frames.recv() => {
                // The Hub dropped this connection: nothing to say.
                let (seq, frame) = frame?;
                // Sent already, in the replay.
                if seq.is_some_and(|seq| seq <= position) {
                    continue;
                }
                // A send that blocks on a stalled socket is cut short by the overflow signal.
                tokio::select! {
                    sent = sink.send(Message::Text(frame.as_ref().into())) => if sent.is_err() { return None },
                    () = subscription.too_slow.cancelled() => return too_slow(),
                }
                if let Some(seq) = seq {
                    position = seq;
                }
            }
            incoming = stream.next() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Close(_))) | None => return None,
                    Some(Err(error)) => return too_big(error).then(|| (
                        CLOSE_TOO_BIG,
                        format!("message too big: at most {} bytes (WS_MAX_MESSAGE_BYTES)", state.settings.http.ws_max_message_bytes),
                    )),
                    Some(Ok(Message::Text(text))) => {
                        if let Some(answer) = client_frame(state, claims, text.as_str())
                            && !send_json(sink, &answer).await
                        {
                            return None;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let answer = error_frame("binary frames are not part of the protocol: send JSON text");
                        if !send_json(sink, &answer).await {
                            return None;
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    return Some((CLOSE_HEARTBEAT, "heartbeat timed out".into()));
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Was the stream's error a client message over the limit?
fn too_big(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        error.into_inner().downcast_ref::<Error>(),
        Some(Error::Capacity(_))
    )
}

fn error_frame(message: impl Into<String>) -> Value {
    json!({ "type": "error", "message": message.into() })
}

/// A frame from the client: `ping`, or `typing`. Returns the answer to send, if any.
fn client_frame(state: &AppState, claims: &Claims, text: &str) -> Option<Value> {
    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
    enum ClientFrame {
        Ping,
        Typing {
            #[serde(default)]
            customer_id: Option<String>,
            #[serde(default)]
            state: Option<TypingState>,
        },
    }
    let frame: Value = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(error) => return Some(error_frame(format!("not JSON: {error}"))),
    };
    let kind = frame.get("type").and_then(Value::as_str).map(str::to_owned);
    let frame = match serde_json::from_value::<ClientFrame>(frame) {
        Ok(frame) => frame,
        Err(error) => {
            return Some(match kind {
                Some(kind) if kind != "ping" && kind != "typing" => error_frame(format!(
                    "unknown frame type {kind:?}: the client sends ping or typing"
                )),
                None => error_frame("a frame needs a \"type\": ping or typing"),
                Some(kind) => error_frame(format!("{kind}: {error}")),
            });
        }
    };
    match frame {
        ClientFrame::Ping => Some(json!({ "type": "pong" })),
        ClientFrame::Typing {
            customer_id,
            state: typing,
        } => {
            let customer = match (claims.role, customer_id, &claims.customer_id) {
                (Role::Customer, None, Some(own)) => own.clone(),
                (Role::Customer, Some(named), Some(own)) if named == own.as_str() => own.clone(),
                (Role::Customer, _, _) => {
                    return Some(error_frame(
                        "typing: a customer types only in their own conversation",
                    ));
                }
                (Role::Staff | Role::Operator, Some(named), _) => match CustomerId::parse(&named) {
                    Ok(customer) => customer,
                    Err(error) => return Some(error_frame(format!("typing: {error}"))),
                },
                (Role::Staff | Role::Operator, None, _) => {
                    return Some(error_frame("typing: customer_id is required"));
                }
                (Role::Crew, _, _) => {
                    return Some(error_frame(
                        "typing: crew members see only what is shared with their crew",
                    ));
                }
            };
            let stop = typing == Some(TypingState::Stop);
            if state.hub.typing_allowed(&claims.sub, &customer, stop) {
                let event = Event::now(
                    customer,
                    EventBody::Typing {
                        user_id: claims.sub.as_str().to_owned(),
                        role: claims.role,
                        state: typing,
                    },
                );
                // Full: this indicator is dropped; the next one goes.
                let _ = state.ephemeral.try_send(event);
            }
            None
        }
    }
}
