//! Takes each request's share of its rate limits ([`Limits`]) before it runs: per user
//! and route group with a valid token, per address without one.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{auth::Caller, limits::Group, state::AppState};

/// The caller a request's bearer token names, if the token checks out; kept in the
/// request so that the handler's extractor does not verify it a second time.
fn user_of(state: &AppState, request: &mut Request) -> Option<String> {
    let caller = Caller::from_headers(state, request.headers()).ok()?;
    let user = caller.0.sub.as_str().to_owned();
    request.extensions_mut().insert(caller);
    Some(user)
}

fn counts_anonymously(path: &str) -> bool {
    path.starts_with("/api/") && !path.starts_with("/api/ws/")
}

/// Middleware: takes the request's share of its limits before it runs.
pub async fn limit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let group = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| Group::of(request.method(), route.as_str()));
    let user = user_of(&state, &mut request);
    let taken = match (&user, group) {
        (Some(user), Some(group)) => state
            .limits
            .of(group)
            .map(|limit| limit.take(user, group.name())),
        (Some(_), None) => None,
        // No valid token on the API (the webhook, or a caller about to get 401). Probes,
        // metrics and the console's files are not counted; a WebSocket carries its
        // token in the query and has limits of its own.
        (None, _) if counts_anonymously(request.uri().path()) => {
            let address = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip());
            match (&state.limits.anonymous, address) {
                (Some(limit), Some(address)) => {
                    Some(limit.take(&address, "requests without a valid token"))
                }
                _ => None,
            }
        }
        (None, _) => None,
    };
    match taken {
        None => next.run(request).await,
        Some(Err(refused)) => refused.into_response(),
        Some(Ok(headers)) => {
            let mut response = next.run(request).await;
            response.headers_mut().extend(headers);
            response
        }
    }
}
