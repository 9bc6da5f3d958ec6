//! The front door: `/` leads to the portal, the console, analytics, the OpenAPI
//! document and the guides; `/docs/{name}` serves the repository's guides as text (a
//! copy compiled into the binary, so they match the running version); a favicon.
//! Static, public, with the console's strict Content-Security-Policy.

use axum::{Router, extract::Path, response::Response, routing::get};

use super::console::{CONTENT_SECURITY_POLICY, asset_with_policy};
use crate::{error::ApiError, state::AppState};

const PAGE: &str = include_str!("../../front/index.html");
const STYLE: &str = include_str!("../../front/front.css");
const FAVICON: &[u8] = include_bytes!("../../front/favicon.ico");

/// The guides the front page links to, by the name in their URL.
const DOCS: &[(&str, &str)] = &[
    (
        "walkthrough.md",
        include_str!("../../../docs/walkthrough.md"),
    ),
    ("http-api.md", include_str!("../../../docs/http-api.md")),
    ("websocket.md", include_str!("../../../docs/websocket.md")),
    ("portal.md", include_str!("../../../docs/portal.md")),
    ("crews.md", include_str!("../../../docs/crews.md")),
    ("reaching.md", include_str!("../../../docs/reaching.md")),
    ("analytics.md", include_str!("../../../docs/analytics.md")),
    ("providers.md", include_str!("../../../docs/providers.md")),
    ("push.md", include_str!("../../../docs/push.md")),
    (
        "configuration.md",
        include_str!("../../../docs/configuration.md"),
    ),
    ("operating.md", include_str!("../../../docs/operating.md")),
    ("deployment.md", include_str!("../../../docs/deployment.md")),
    ("scaling.md", include_str!("../../../docs/scaling.md")),
    (
        "reliability.md",
        include_str!("../../../docs/reliability.md"),
    ),
    (
        "performance.md",
        include_str!("../../../docs/performance.md"),
    ),
    ("limits.md", include_str!("../../../docs/limits.md")),
    ("ARCHITECTURE.md", include_str!("../../../ARCHITECTURE.md")),
];

fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    asset_with_policy(body, content_type, CONTENT_SECURITY_POLICY)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(PAGE.as_bytes(), "text/html; charset=utf-8") }),
        )
        .route(
            "/front.css",
            get(|| async { asset(STYLE.as_bytes(), "text/css; charset=utf-8") }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset(FAVICON, "image/x-icon") }),
        )
        .route("/docs/{name}", get(guide))
}

/// A guide as plain text (Markdown reads well as it is; browsers show `text/plain`).
async fn guide(Path(name): Path<String>) -> Result<Response, ApiError> {
    DOCS.iter()
        .find(|(known, _)| *known == name)
        .map(|(_, text)| asset(text.as_bytes(), "text/plain; charset=utf-8"))
        .ok_or_else(|| ApiError::NotFound(format!("no guide named {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guide_the_front_page_links_to_is_served() {
        for link in PAGE.split("href=\"/docs/").skip(1) {
            let name = &link[..link.find('"').unwrap()];
            assert!(
                DOCS.iter().any(|(known, _)| *known == name),
                "the front page links to /docs/{name}, which is not served"
            );
        }
    }
}
