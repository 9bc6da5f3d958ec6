//! Projects (jobs at customers' sites) and dispatching crews to them.
//!
//! - `POST|GET /api/projects`, `GET|PATCH /api/projects/{id}`: staff create and edit;
//!   a customer reads their own projects, a crew member those assigned to their crew.
//!   Status moves forward only (`ProjectStatus::refusal`).
//! - `POST /api/projects/{id}/dispatch`: staff send a crew; recorded with its
//!   `dispatch.notify` job (the crew's `dispatch.new`, SMS to members offline) and,
//!   with `notify_customer`, an "on the way" message on the customer's channel (the
//!   one they last wrote on), in one transaction.
//! - `POST /api/dispatches/{id}/ack`: a member of the dispatched crew acknowledges;
//!   staff and the crew get `dispatch.acknowledged`.
//! - Arrival ([`arrive`]): a position reported within `ARRIVAL_RADIUS_M` of a
//!   dispatched project's site makes it `on_site`, once per dispatch.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use commcenter_shared::{
    domain::communications::Sender,
    domain::crews::{self, Project, ProjectFilter},
    domain::dispatch::{self, NewDispatch, Senders},
    domain::{CustomerId, ProjectStatus, Role},
};

use super::{coordinates, integrations::invalid, parse_uuid};
use crate::{
    auth::Caller,
    body::{JsonBody, QueryParams},
    error::{ApiError, ApiResult},
    paging,
    state::AppState,
};
use commcenter_shared::domain::text;

const MAX_TITLE_CHARS: usize = 200;
const MAX_ADDRESS_CHARS: usize = 500;
const MAX_NOTE_CHARS: usize = 2000;
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

/// Templates a dispatch's customer messages are written from, when staff made them.
pub const ON_THE_WAY_TEMPLATE: &str = "crew_on_the_way";
pub const ARRIVED_TEMPLATE: &str = "crew_arrived";

/// A title or an address: shown to staff, crews and customers ([`text::refusal`]).
fn shown_text(field: &str, raw: &str, max: usize) -> ApiResult<String> {
    let trimmed = raw.trim();
    match text::refusal(trimmed, max) {
        Some(why) => Err(invalid(field, why)),
        None => Ok(trimmed.to_owned()),
    }
}

/// A scheduled window: a start, an end, either, or neither.
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn window(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> ApiResult<Window> {
    if let (Some(start), Some(end)) = (start, end)
        && end < start
    {
        return Err(invalid(
            "scheduled_end",
            format!("{end} is before scheduled_start {start}"),
        ));
    }
    Ok((start, end))
}

/// A live crew, or a 422 naming the field.
async fn live_crew(conn: &mut PgConnection, field: &str, crew: Uuid) -> ApiResult<Uuid> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM crews WHERE id = $1 AND deleted_at IS NULL)",
    )
    .bind(crew)
    .fetch_one(conn)
    .await?;
    if exists {
        Ok(crew)
    } else {
        Err(invalid(field, format!("no crew {crew}")))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectRequest {
    customer_id: CustomerId,
    title: String,
    address: String,
    lat: f64,
    lng: f64,
    #[serde(default)]
    scheduled_start: Option<DateTime<Utc>>,
    #[serde(default)]
    scheduled_end: Option<DateTime<Utc>>,
    #[serde(default)]
    crew_id: Option<Uuid>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<CreateProjectRequest>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    caller.ensure_staff()?;
    let title = shown_text("title", &request.title, MAX_TITLE_CHARS)?;
    let address = shown_text("address", &request.address, MAX_ADDRESS_CHARS)?;
    let (lat, lng) = coordinates(request.lat, request.lng)?;
    let (start, end) = window(request.scheduled_start, request.scheduled_end)?;
    let mut tx = state.pool.begin().await?;
    if let Some(crew) = request.crew_id {
        live_crew(&mut tx, "crew_id", crew).await?;
    }
    let project: Project = sqlx::query_as(&format!(
        "INSERT INTO projects (id, customer_id, title, address, lat, lng, scheduled_start,
                               scheduled_end, crew_id, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING {}",
        crews::PROJECT_COLUMNS
    ))
    .bind(Uuid::now_v7())
    .bind(request.customer_id.as_str())
    .bind(&title)
    .bind(&address)
    .bind(lat)
    .bind(lng)
    .bind(start)
    .bind(end)
    .bind(request.crew_id)
    .bind(caller.user_id())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(project)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    customer_id: Option<String>,
    crew_id: Option<String>,
    status: Option<String>,
    /// `YYYY-MM-DD` (UTC): projects scheduled over that day.
    date: Option<String>,
    limit: Option<String>,
}

/// Staff filter freely; a customer sees their own projects, a crew member their
/// crew's (a filter naming someone else's is refused).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let bad = |message: String| ApiError::bad_request("invalid_query", message);
    let mut filter = ProjectFilter {
        customer_id: query
            .customer_id
            .as_deref()
            .map(CustomerId::parse)
            .transpose()
            .map_err(|e| bad(format!("customer_id: {e}")))?,
        crew_id: query
            .crew_id
            .as_deref()
            .map(|raw| {
                Uuid::parse_str(raw)
                    .map_err(|_| bad(format!("crew_id must be a UUID, not {raw:?}")))
            })
            .transpose()?,
        status: query
            .status
            .as_deref()
            .map(ProjectStatus::parse)
            .transpose()
            .map_err(|e| bad(e.0))?,
        date: query
            .date
            .as_deref()
            .map(|raw| {
                NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                    .map_err(|_| bad(format!("date must be YYYY-MM-DD, not {raw:?}")))
            })
            .transpose()?,
        limit: paging::limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?,
    };
    let mut conn = state.pool.acquire().await?;
    match caller.role() {
        Role::Staff | Role::Operator => {}
        Role::Customer => {
            let own = caller.own_customer().cloned();
            if filter.customer_id.is_some() && filter.customer_id != own {
                return Err(ApiError::Forbidden(
                    "customers see only their own projects".into(),
                ));
            }
            filter.customer_id = own;
        }
        Role::Crew => {
            let own = crews::crew_of(&mut conn, caller.user_id()).await?;
            let Some(own) = own else {
                return Ok(Json(json!({ "projects": [] })));
            };
            if filter.crew_id.is_some_and(|named| named != own) {
                return Err(ApiError::Forbidden(
                    "crew members see only their own crew's projects".into(),
                ));
            }
            filter.crew_id = Some(own);
        }
    }
    let projects = crews::list_projects(&mut conn, &filter).await?;
    Ok(Json(json!({ "projects": projects })))
}

/// The project if the caller may see it; anything else is a 404.
async fn visible_project(
    conn: &mut PgConnection,
    caller: &Caller,
    id: Uuid,
    lock: bool,
) -> ApiResult<Project> {
    let not_found = || ApiError::NotFound(format!("no project {id}"));
    let project = crews::find_project(conn, id, lock)
        .await?
        .ok_or_else(not_found)?;
    let sees = match caller.role() {
        Role::Staff | Role::Operator => true,
        Role::Customer => caller
            .own_customer()
            .is_some_and(|own| own == &project.customer_id),
        Role::Crew => {
            project.crew_id.is_some()
                && crews::crew_of(conn, caller.user_id()).await? == project.crew_id
        }
    };
    if sees { Ok(project) } else { Err(not_found()) }
}

pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id, "id")?;
    let mut conn = state.pool.acquire().await?;
    let project = visible_project(&mut conn, &caller, id, false).await?;
    // The customer sees their project, not the crew's dispatch notes.
    let dispatches = if caller.role() == Role::Customer {
        Vec::new()
    } else {
        crews::latest_dispatches(&mut conn, id).await?
    };
    let mut body = serde_json::to_value(&project).map_err(anyhow::Error::from)?;
    if let Value::Object(fields) = &mut body
        && caller.role() != Role::Customer
    {
        fields.insert("dispatches".into(), json!(dispatches));
    }
    Ok(Json(body))
}

/// A field that may be set to `null` (unassign) as well as to a value: `Some(None)`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProjectRequest {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lng: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    scheduled_start: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "present")]
    scheduled_end: Option<Option<DateTime<Utc>>>,
    /// `null` unassigns.
    #[serde(default, deserialize_with = "present")]
    crew_id: Option<Option<Uuid>>,
    #[serde(default)]
    status: Option<ProjectStatus>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<UpdateProjectRequest>,
) -> ApiResult<Json<Project>> {
    caller.ensure_staff()?;
    let id = parse_uuid(&id, "id")?;
    let mut tx = state.pool.begin().await?;
    let before = visible_project(&mut tx, &caller, id, true).await?;
    if let Some(next) = request.status
        && let Some(why) = before.status.refusal(next)
    {
        return Err(ApiError::Conflict(why));
    }
    if before.status.is_final() && request.status.is_none() {
        return Err(ApiError::Conflict(format!(
            "project {id} is {}: it can no longer be changed",
            before.status.as_str()
        )));
    }
    let title = request
        .title
        .as_deref()
        .map(|t| shown_text("title", t, MAX_TITLE_CHARS))
        .transpose()?
        .unwrap_or(before.title);
    let address = request
        .address
        .as_deref()
        .map(|a| shown_text("address", a, MAX_ADDRESS_CHARS))
        .transpose()?
        .unwrap_or(before.address);
    let (lat, lng) = coordinates(
        request.lat.unwrap_or(before.lat),
        request.lng.unwrap_or(before.lng),
    )?;
    let (start, end) = window(
        request.scheduled_start.unwrap_or(before.scheduled_start),
        request.scheduled_end.unwrap_or(before.scheduled_end),
    )?;
    let crew = match request.crew_id {
        Some(Some(crew)) => Some(live_crew(&mut tx, "crew_id", crew).await?),
        Some(None) => None,
        None => before.crew_id,
    };
    let status = request.status.unwrap_or(before.status);
    let project: Project = sqlx::query_as(&format!(
        "UPDATE projects SET title = $2, address = $3, lat = $4, lng = $5, scheduled_start = $6,
                scheduled_end = $7, crew_id = $8, status = $9, updated_at = now()
         WHERE id = $1
         RETURNING {}",
        crews::PROJECT_COLUMNS
    ))
    .bind(id)
    .bind(&title)
    .bind(&address)
    .bind(lat)
    .bind(lng)
    .bind(start)
    .bind(end)
    .bind(crew)
    .bind(status)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(project))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchRequest {
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    eta: Option<DateTime<Utc>>,
    /// Assign this crew at the same time; otherwise the project's crew goes.
    #[serde(default)]
    crew_id: Option<Uuid>,
    /// Also tell the customer their crew is on the way.
    #[serde(default)]
    notify_customer: bool,
}

pub async fn dispatch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<DispatchRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.ensure_staff()?;
    let id = parse_uuid(&id, "id")?;
    let note = request.note.as_deref().map(str::trim).unwrap_or_default();
    if let Some(why) = text::refusal_if_any(note, MAX_NOTE_CHARS) {
        return Err(invalid("note", why));
    }
    let note = note.to_owned();
    let mut tx = state.pool.begin().await?;
    let project = visible_project(&mut tx, &caller, id, true).await?;
    if !matches!(
        project.status,
        ProjectStatus::Scheduled | ProjectStatus::Dispatched
    ) {
        return Err(ApiError::Conflict(format!(
            "project {id} is {}: only a scheduled or dispatched project can be dispatched",
            project.status.as_str()
        )));
    }
    let crew = match request.crew_id.or(project.crew_id) {
        Some(crew) => live_crew(&mut tx, "crew_id", crew).await?,
        None => {
            return Err(invalid(
                "crew_id",
                "the project has no crew assigned: name the crew to send",
            ));
        }
    };
    if crews::member_count(&mut tx, crew).await? == 0 {
        return Err(invalid(
            "crew_id",
            format!("crew {crew} has no members to send"),
        ));
    }
    let new = NewDispatch {
        project_id: id,
        crew_id: crew,
        note: &note,
        eta: request.eta,
        notify_customer: request.notify_customer,
        by: Sender::user(caller.user_id(), caller.role()),
    };
    let senders = Senders::of(&state.settings);
    let dispatched =
        dispatch::dispatch(&mut tx, &new, senders, state.settings.jobs.max_attempts).await?;
    tx.commit().await?;
    state.outbox.notify_one();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "dispatch": dispatched.dispatch,
            "project": dispatched.project,
            "job_id": dispatched.job_id,
            "customer_message_id": dispatched.customer_message_id,
        })),
    ))
}

pub async fn acknowledge(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id, "id")?;
    if caller.role() != Role::Crew {
        return Err(ApiError::Forbidden(
            "only a member of the dispatched crew acknowledges a dispatch".into(),
        ));
    }
    let mut tx = state.pool.begin().await?;
    let not_found = || ApiError::NotFound(format!("no dispatch {id} for your crew"));
    let dispatch = crews::find_dispatch(&mut tx, id)
        .await?
        .ok_or_else(not_found)?;
    if crews::crew_of(&mut tx, caller.user_id()).await? != Some(dispatch.crew_id) {
        return Err(not_found());
    }
    let project = crews::find_project(&mut tx, dispatch.project_id, false)
        .await?
        .ok_or_else(not_found)?;
    let at = dispatch::acknowledge(&mut tx, &dispatch, &project, caller.user_id()).await?;
    tx.commit().await?;
    state.outbox.notify_one();
    Ok(Json(json!({
        "dispatch_id": id,
        "user_id": caller.user_id(),
        "acknowledged_at": at,
    })))
}
