//! The reference Communication Center client at `/portal`: one HTML page, one script and
//! one stylesheet, compiled into the binary (no build chain). A customer or a staff
//! member signs in with their token, which the page keeps in the tab's `sessionStorage`
//! and sends only in the `Authorization` header and the WebSocket's query.
//!
//! The policy is the console's, with `blob:` images: thumbnails are fetched with the
//! token and shown from blob URLs, and files are previewed before they are sent.

use axum::{Router, response::Response, routing::get};

use super::console::asset_with_policy;
use crate::state::AppState;

const PAGE: &str = include_str!("../../portal/index.html");
const SCRIPT: &str = include_str!("../../portal/app.js");
const STYLE: &str = include_str!("../../portal/app.css");

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' blob:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    asset_with_policy(body, content_type, CONTENT_SECURITY_POLICY)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/portal",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/portal/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/portal/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}
