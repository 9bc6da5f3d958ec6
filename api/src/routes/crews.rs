//! Field crews: who is in which crew, where crews are, and messages to crews by place.
//!
//! - `POST|GET /api/crews`, `GET|PATCH|DELETE /api/crews/{id}`: staff manage crews; a
//!   crew member reads their own. A user is in at most one crew: adding them to a
//!   second is a 409 naming the crew they are in.
//! - `POST /api/crews/{id}/location`: a member reports the crew's position; a
//!   dispatched crew that comes within `ARRIVAL_RADIUS_M` of its site has arrived
//!   ([`commcenter_shared::domain::dispatch::arrive`]).
//! - `GET /api/crews/locations`: staff read each crew's latest position.
//! - `POST /api/crews/broadcast`: staff send a message to every crew whose latest
//!   position is within a radius (a `crew.broadcast` event to their members; an SMS to
//!   those not connected).

use std::collections::BTreeSet;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use commcenter_shared::{
    domain::contact::PhoneNumber,
    domain::crews::{self, Crew, Member},
    domain::dispatch::{self, Arrival, Senders, TextAbout},
    domain::{MessageText, Role, UserId},
    ledger::events::{self, Event, EventBody},
};

use super::{coordinates, integrations::invalid, parse_uuid};
use crate::{
    auth::Caller,
    body::JsonBody,
    error::{ApiError, ApiResult},
    state::AppState,
};
use commcenter_shared::domain::text;

const MAX_NAME_CHARS: usize = 100;
const MAX_MEMBERS: usize = 50;
/// A position may be stamped this far ahead of our clock (a phone's clock drifts).
const CLOCK_SKEW_SECS: i64 = 300;
/// The widest broadcast: a region, not the planet.
const MAX_BROADCAST_KM: f64 = 500.0;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    user_id: String,
    name: String,
    phone: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCrewRequest {
    name: String,
    #[serde(default)]
    members: Vec<MemberRequest>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCrewRequest {
    #[serde(default)]
    name: Option<String>,
    /// Replaces the members when given.
    #[serde(default)]
    members: Option<Vec<MemberRequest>>,
}

fn crew_name(raw: &str) -> ApiResult<String> {
    shown_name("name", raw)
}

/// A crew's or a member's name: shown to staff, crews and customers ([`text::refusal`]).
fn shown_name(field: &str, raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    match text::refusal(name, MAX_NAME_CHARS) {
        Some(why) => Err(invalid(field, why)),
        None => Ok(name.to_owned()),
    }
}

/// The members as given, each checked: a valid user id, a name, an E.164 phone; no
/// user twice.
fn members(state: &AppState, given: &[MemberRequest]) -> ApiResult<Vec<Member>> {
    if given.len() > MAX_MEMBERS {
        return Err(invalid(
            "members",
            format!("at most {MAX_MEMBERS} per crew"),
        ));
    }
    let region = state.settings.contacts.default_phone_region;
    let mut seen = BTreeSet::new();
    given
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let user = UserId::parse(&m.user_id)
                .map_err(|e| invalid(&format!("members[{i}].user_id"), e))?;
            if !seen.insert(user.as_str().to_owned()) {
                return Err(invalid(
                    &format!("members[{i}].user_id"),
                    format!("{user} is listed twice"),
                ));
            }
            let name = shown_name(&format!("members[{i}].name"), &m.name)?;
            let phone = PhoneNumber::parse(&m.phone, region)
                .map_err(|e| invalid(&format!("members[{i}].phone"), e))?;
            Ok(Member {
                user_id: user.as_str().to_owned(),
                name,
                phone: phone.as_str().to_owned(),
            })
        })
        .collect()
}

/// 409 when any of `members` is in another crew than `crew`.
async fn ensure_free(
    conn: &mut sqlx::PgConnection,
    members: &[Member],
    crew: Option<Uuid>,
) -> ApiResult<()> {
    let users: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
    let taken = crews::members_elsewhere(conn, &users, crew).await?;
    if taken.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "members: {} already in another crew (a user is in one crew at a time: \
             remove them from it first)",
            taken.join(", ")
        )))
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<CreateCrewRequest>,
) -> ApiResult<(StatusCode, Json<Crew>)> {
    caller.ensure_staff()?;
    let name = crew_name(&request.name)?;
    let members = members(&state, &request.members)?;
    let mut tx = state.pool.begin().await?;
    ensure_free(&mut tx, &members, None).await?;
    let id = Uuid::now_v7();
    crews::insert_crew(&mut tx, id, &name).await?;
    crews::set_members(&mut tx, id, &members)
        .await
        .map_err(taken_meanwhile)?;
    let crew = crews::find_crew(&mut tx, id).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("crew {id} vanished in its transaction"))
    })?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(crew)))
}

/// Two requests adding the same user at once: the second meets the primary key.
fn taken_meanwhile(error: sqlx::Error) -> ApiError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => ApiError::Conflict(
            "members: a user was just added to another crew; a user is in one crew at a time"
                .into(),
        ),
        _ => error.into(),
    }
}

/// Staff see every crew; a crew member their own.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let mut conn = state.pool.acquire().await?;
    let crews = match caller.role() {
        Role::Staff | Role::Operator => crews::list_crews(&mut conn).await?,
        Role::Crew => match crews::crew_of(&mut conn, caller.user_id()).await? {
            Some(own) => crews::find_crew(&mut conn, own)
                .await?
                .into_iter()
                .collect(),
            None => Vec::new(),
        },
        Role::Customer => {
            return Err(ApiError::Forbidden(
                "crews are for staff and their members".into(),
            ));
        }
    };
    Ok(Json(json!({ "crews": crews })))
}

/// The crew, if the caller may read it: staff any, a member their own (another crew
/// is as unknown as one that does not exist).
async fn readable_crew(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    id: Uuid,
) -> ApiResult<Crew> {
    let not_found = || ApiError::NotFound(format!("no crew {id}"));
    match caller.role() {
        Role::Staff | Role::Operator => {}
        Role::Crew => {
            if crews::crew_of(conn, caller.user_id()).await? != Some(id) {
                return Err(not_found());
            }
        }
        Role::Customer => {
            return Err(ApiError::Forbidden(
                "crews are for staff and their members".into(),
            ));
        }
    }
    crews::find_crew(conn, id).await?.ok_or_else(not_found)
}

pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Crew>> {
    let id = parse_uuid(&id, "id")?;
    let mut conn = state.pool.acquire().await?;
    Ok(Json(readable_crew(&mut conn, &caller, id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<UpdateCrewRequest>,
) -> ApiResult<Json<Crew>> {
    caller.ensure_staff()?;
    let id = parse_uuid(&id, "id")?;
    let name = request.name.as_deref().map(crew_name).transpose()?;
    let members = request
        .members
        .as_deref()
        .map(|given| members(&state, given))
        .transpose()?;
    let mut tx = state.pool.begin().await?;
    let not_found = || ApiError::NotFound(format!("no crew {id}"));
    sqlx::query("SELECT 1 FROM crews WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(not_found)?;
    if let Some(name) = &name {
        crews::rename_crew(&mut tx, id, name).await?;
    }
    if let Some(members) = &members {
        ensure_free(&mut tx, members, Some(id)).await?;
        crews::set_members(&mut tx, id, members)
            .await
            .map_err(taken_meanwhile)?;
        crews::touch_crew(&mut tx, id).await?;
    }
    let crew = crews::find_crew(&mut tx, id).await?.ok_or_else(not_found)?;
    tx.commit().await?;
    Ok(Json(crew))
}

/// Deletes the crew (its members are freed); refused while projects not yet done or
/// cancelled are assigned to it.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.ensure_staff()?;
    let id = parse_uuid(&id, "id")?;
    let mut tx = state.pool.begin().await?;
    let open = crews::open_projects_of(&mut tx, id).await?;
    if !open.is_empty() {
        let ids: Vec<String> = open.iter().map(Uuid::to_string).collect();
        return Err(ApiError::Conflict(format!(
            "crew {id} is assigned to projects not yet done ({}): reassign or finish them first",
            ids.join(", ")
        )));
    }
    if !crews::delete_crew(&mut tx, id).await? {
        return Err(ApiError::NotFound(format!("no crew {id}")));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationRequest {
    lat: f64,
    lng: f64,
    #[serde(default)]
    accuracy_m: Option<f64>,
    /// When the position was taken; now if left out.
    #[serde(default)]
    at: Option<DateTime<Utc>>,
}

pub async fn report_location(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<LocationRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let crew = parse_uuid(&id, "id")?;
    if caller.role() != Role::Crew {
        return Err(ApiError::Forbidden(
            "only a member of the crew reports its position".into(),
        ));
    }
    let (lat, lng) = coordinates(request.lat, request.lng)?;
    if let Some(accuracy) = request.accuracy_m
        && (!accuracy.is_finite() || accuracy < 0.0)
    {
        return Err(invalid(
            "accuracy_m",
            format!("must be metres, 0 or more, not {accuracy}"),
        ));
    }
    let now = Utc::now();
    let at = request.at.unwrap_or(now);
    if at > now + chrono::Duration::seconds(CLOCK_SKEW_SECS) {
        return Err(invalid("at", "is in the future"));
    }
    let mut tx = state.pool.begin().await?;
    if crews::crew_of(&mut tx, caller.user_id()).await? != Some(crew) {
        return Err(ApiError::Forbidden(format!(
            "you are not a member of crew {crew}"
        )));
    }
    sqlx::query(
        "INSERT INTO crew_locations (crew_id, user_id, lat, lng, accuracy_m, at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(crew)
    .bind(caller.user_id())
    .bind(lat)
    .bind(lng)
    .bind(request.accuracy_m)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    let arrival = Arrival {
        radius_m: state.settings.crews.arrival_radius_m,
        senders: Senders::of(&state.settings),
        max_attempts: state.settings.jobs.max_attempts,
    };
    let arrived = dispatch::arrive(&mut tx, crew, caller.user_id(), (lat, lng), arrival).await?;
    tx.commit().await?;
    if !arrived.is_empty() {
        state.outbox.notify_one();
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "crew_id": crew,
            "lat": lat,
            "lng": lng,
            "accuracy_m": request.accuracy_m,
            "at": at,
            "arrived_projects": arrived,
        })),
    ))
}

pub async fn locations(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.ensure_staff()?;
    let mut conn = state.pool.acquire().await?;
    let positions = crews::latest_positions(&mut conn).await?;
    Ok(Json(json!({ "locations": positions })))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    lat: f64,
    lng: f64,
    radius_km: f64,
    message: String,
}

/// A message to every crew whose latest position is within the radius: a
/// `crew.broadcast` event to their members (and staff), recorded like every event, so
/// a member who reconnects with `since` gets it, and an SMS to each member with no
/// WebSocket open (filed in the crew's own conversation, `crew:<id>`).
pub async fn broadcast(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<BroadcastRequest>,
) -> ApiResult<Json<Value>> {
    caller.ensure_staff()?;
    let centre = coordinates(request.lat, request.lng)?;
    if !request.radius_km.is_finite()
        || request.radius_km <= 0.0
        || request.radius_km > MAX_BROADCAST_KM
    {
        return Err(invalid(
            "radius_km",
            format!(
                "must be more than 0 and at most {MAX_BROADCAST_KM}, not {}",
                request.radius_km
            ),
        ));
    }
    let message = MessageText::parse(&request.message).map_err(|e| ApiError::Invalid(e.0))?;
    let mut tx = state.pool.begin().await?;
    let positions = crews::latest_positions(&mut tx).await?;
    let broadcast_id = Uuid::now_v7();
    let mut reached = Vec::new();
    for position in positions {
        let distance_m = crews::distance_m(centre, (position.lat, position.lng));
        if distance_m > request.radius_km * 1000.0 {
            continue;
        }
        let event = Event::of_crew(
            position.crew_id,
            EventBody::CrewBroadcast {
                broadcast_id,
                message: message.as_str().to_owned(),
                from: caller.user_id().to_owned(),
                distance_m: distance_m.round(),
            },
        );
        events::record(&mut tx, &event).await?;
        // Members with no WebSocket open are texted.
        let offline = crews::members_to_text(
            &mut tx,
            position.crew_id,
            false,
            None,
            state.settings.http.presence_ttl.as_secs_f64(),
        )
        .await?;
        let mut texted = 0;
        if let Some(from) = state.settings.ringcentral.sms_from() {
            for member in &offline {
                dispatch::text_member(
                    &mut tx,
                    TextAbout::Crew(position.crew_id),
                    member,
                    from,
                    &dispatch::broadcast_text(message.as_str()),
                    state.settings.jobs.max_attempts,
                )
                .await?;
                texted += 1;
            }
        }
        reached.push(json!({
            "crew_id": position.crew_id,
            "distance_m": distance_m.round(),
            "texted": texted,
        }));
    }
    tx.commit().await?;
    state.outbox.notify_one();
    Ok(Json(
        json!({ "broadcast_id": broadcast_id, "crews": reached }),
    ))
}
