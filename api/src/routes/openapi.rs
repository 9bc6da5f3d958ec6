//! `GET /api/openapi.json`: the OpenAPI document of this surface, for the portal's
//! developers and their generated clients. Written by hand beside the routes; a test
//! checks that every path it lists is served.

use axum::{http::header, response::IntoResponse};

pub const DOCUMENT: &str = include_str!("../../openapi/openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
