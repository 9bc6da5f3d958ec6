//! The operators' console at `/ops` and the analytics page at `/ops/analytics`: two HTML
//! pages, their scripts, the SVG chart module they share and one stylesheet, compiled
//! into the binary (no build chain). The pages call `/api/ops/` and `/api/analytics/`
//! with the caller's token, which they keep in the tab's `sessionStorage` and send only
//! in the `Authorization` header, never in a URL.
//!
//! The assets are public (they hold no data); every answer carries a strict
//! Content-Security-Policy: scripts and styles only from this origin (no inline code),
//! requests only to this origin, no frames, no forms posting elsewhere.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::state::AppState;

const PAGE: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/app.css");
const CHARTS: &str = include_str!("../../console/charts.js");
const ANALYTICS_PAGE: &str = include_str!("../../console/analytics.html");
const ANALYTICS_SCRIPT: &str = include_str!("../../console/analytics.js");

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/ops",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/ops/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ops/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/ops/charts.js",
            get(|| async { asset(CHARTS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ops/analytics",
            get(|| async { asset(ANALYTICS_PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/ops/analytics.js",
            get(|| async { asset(ANALYTICS_SCRIPT, "text/javascript; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    asset_with_policy(body, content_type, CONTENT_SECURITY_POLICY)
}

/// A page's file, with `policy` as its Content-Security-Policy and the headers every
/// page of ours carries (no sniffing, no referrer, no framing, revalidated each load).
pub fn asset_with_policy(
    body: impl IntoResponse,
    content_type: &'static str,
    policy: &'static str,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(policy),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // Revalidated on every load, so a deploy is seen at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
