//! `GET /metrics`: the api's metrics in the Prometheus text format (0.0.4).
//!
//! Like `/healthz` it needs no user token; it tells the world queue depths and traffic,
//! so either keep it off the public listener (route only internal traffic to it) or
//! set `METRICS_TOKEN` and give Prometheus that bearer token.

use axum::{
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};

use commcenter_shared::ops::metrics;

use crate::{error::ApiError, state::AppState};

pub async fn scrape(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if !metrics::scrape_allowed(state.settings.metrics.token.as_ref(), authorization) {
        return Err(ApiError::Unauthorized(
            "the metrics need the METRICS_TOKEN bearer token".into(),
        ));
    }
    let text = state.metrics.scrape(state.hub.connection_count()).await;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}
