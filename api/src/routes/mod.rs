//! The HTTP surface, one module per route group. Paths are the portal's and must not change.

pub mod analytics;
pub mod communications;
pub mod console;
pub mod conversations;
pub mod crews;
pub mod customers;
pub mod emails;
pub mod files;
pub mod front;
pub mod health;
pub mod integrations;
pub mod messages;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod portal;
pub mod presence;
pub mod projects;
pub mod push;
pub mod search;
pub mod templates;
pub mod ws;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{delete, get, post},
};
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::alive))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/messages/send", post(messages::send))
        // Uploads stream past the JSON body limit; each file is bounded by MAX_FILE_SIZE
        // while it streams.
        .route(
            "/api/communications/upload",
            post(files::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/communications/files/{file_id}",
            get(files::show).delete(files::delete),
        )
        .route("/api/communications/file/{filename}", get(files::download))
        .route(
            "/api/communications/file/thumbnails/{filename}",
            get(files::thumbnail),
        )
        .route("/api/communications", get(communications::list))
        .route(
            "/api/communications/{id}",
            axum::routing::patch(communications::edit).delete(communications::delete),
        )
        .route("/api/communications/search", post(search::search))
        .route(
            "/api/communications/conversations",
            get(conversations::list),
        )
        .route(
            "/api/communications/templates",
            post(templates::create).get(templates::list),
        )
        .route(
            "/api/communications/templates/{id}",
            get(templates::show)
                .patch(templates::edit)
                .delete(templates::delete),
        )
        .route(
            "/api/communications/templates/{id}/preview",
            post(templates::preview),
        )
        .route(
            "/api/communications/{id}/status",
            get(communications::status),
        )
        .route(
            "/api/communications/{id}/mark-read",
            post(communications::mark_read),
        )
        .route(
            "/api/communications/{id}/mark-delivered",
            post(communications::mark_delivered),
        )
        .route(
            "/api/communications/conversation/{customer_id}/status",
            get(conversations::status).post(conversations::set_status),
        )
        .route(
            "/api/communications/online-users",
            get(presence::online_users),
        )
        .route(
            "/api/communications/user/{user_id}/status",
            get(presence::user_status),
        )
        .route(
            "/api/customers/{customer_id}/contact",
            get(customers::get).put(customers::put),
        )
        .route("/api/emails/unmatched", get(emails::unmatched))
        .route("/api/emails/unmatched/{id}/assign", post(emails::assign))
        .route("/api/crews", post(crews::create).get(crews::list))
        .route("/api/crews/locations", get(crews::locations))
        .route("/api/crews/broadcast", post(crews::broadcast))
        .route(
            "/api/crews/{id}",
            get(crews::get_one)
                .patch(crews::update)
                .delete(crews::delete),
        )
        .route("/api/crews/{id}/location", post(crews::report_location))
        .route("/api/projects", post(projects::create).get(projects::list))
        .route(
            "/api/projects/{id}",
            get(projects::get_one).patch(projects::update),
        )
        .route("/api/projects/{id}/dispatch", post(projects::dispatch))
        .route("/api/dispatches/{id}/ack", post(projects::acknowledge))
        .route("/api/analytics/summary", get(analytics::summary))
        .route("/api/analytics/volume", get(analytics::volume))
        .route(
            "/api/analytics/response-times",
            get(analytics::response_times),
        )
        .route("/api/push/vapid-public-key", get(push::vapid_public_key))
        .route(
            "/api/push/subscriptions",
            post(push::subscribe).get(push::list),
        )
        .route("/api/push/subscriptions/{id}", delete(push::unsubscribe))
        .route("/api/ws/{user_id}", get(ws::connect))
        .merge(integrations::router())
        .merge(ops::router())
        .merge(console::router())
        .merge(portal::router())
        .merge(front::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
}

/// Path ids are parsed here so a bad one is a 400 that names it.
pub(crate) fn parse_uuid(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad_request(
            "invalid_path",
            format!("{what} must be a UUID, not {raw:?}"),
        )
    })
}

/// Degrees, finite and in range.
pub(crate) fn coordinates(lat: f64, lng: f64) -> Result<(f64, f64), ApiError> {
    if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
        return Err(integrations::invalid(
            "lat",
            format!("must be between -90 and 90, not {lat}"),
        ));
    }
    if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
        return Err(integrations::invalid(
            "lng",
            format!("must be between -180 and 180, not {lng}"),
        ));
    }
    Ok((lat, lng))
}
