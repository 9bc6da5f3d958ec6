//! 400 for a URL holding `%00` (a NUL, which PostgreSQL cannot store), naming the query
//! parameter or path parameter, before any extractor or handler reads it. JSON bodies
//! and multipart text get the same rule where they are read ([`crate::body`]).

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::body::nul_in_url;

pub async fn refuse_nul_in_url(request: Request, next: Next) -> Response {
    match nul_in_url(request.uri(), request.extensions().get::<MatchedPath>()) {
        Some(refusal) => refusal.into_response(),
        None => next.run(request).await,
    }
}
