//! Message templates, staff only.
//!
//! - `POST /api/communications/templates`: create (`name`, `content`, `type`,
//!   `category`, `subject` for email); answers the template with the `variables` found.
//! - `GET /api/communications/templates`: list, filters `type`, `category`, `active`
//!   (`true` by default, `false`, or `all`).
//! - `GET|PATCH|DELETE /api/communications/templates/{id}`: one; an edit makes a new
//!   version; delete deactivates (kept for the messages sent from it).
//! - `POST /api/communications/templates/{id}/preview`: render with `variables`,
//!   sending nothing.
//!
//! Sends take `template_id` and `variables` instead of `message` ([`crate::accept`]).

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use commcenter_shared::{
    domain::templates::{self, Template, TemplateFilter, TemplateText},
    domain::{CommunicationType, text},
};

use super::parse_uuid;
use crate::{
    auth::Caller,
    body::{JsonBody, QueryParams},
    error::{ApiError, ApiResult},
    idempotency::IdempotencyKey,
    state::AppState,
};

const MAX_NAME_CHARS: usize = 100;
const MAX_CATEGORY_CHARS: usize = 64;
const MAX_CONTENT_CHARS: usize = 10_000;
const MAX_SUBJECT_CHARS: usize = 998;
const LIST_LIMIT: i64 = 500;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    name: String,
    content: String,
    #[serde(rename = "type")]
    template_type: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    /// The original's clients send who created it; the token says who, so it is ignored.
    #[serde(default)]
    created_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditTemplate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default, rename = "type")]
    template_type: Option<String>,
    /// `null` clears it.
    #[serde(default, with = "double_option")]
    category: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    subject: Option<Option<String>>,
}

/// Tells a field left out (`None`) from one set to `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(rename = "type")]
    template_type: Option<String>,
    category: Option<String>,
    active: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    #[serde(default)]
    variables: BTreeMap<String, Value>,
}

/// A template's text checked: every field within bounds, the type one of the three,
/// a subject only for email, the placeholders well formed. Returns the placeholders.
struct Checked {
    template_type: CommunicationType,
    variables: Vec<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_template", message)
}

fn check(
    name: &str,
    content: &str,
    template_type: &str,
    category: Option<&str>,
    subject: Option<&str>,
) -> ApiResult<Checked> {
    let template_type = match CommunicationType::parse(template_type) {
        Ok(CommunicationType::Phone) | Err(_) => {
            return Err(bad(format!(
                "type: must be inapp, sms or email, not {template_type:?}"
            )));
        }
        Ok(t) => t,
    };
    let bounded = |field: &str, value: &str, max: usize| -> ApiResult<()> {
        match text::refusal(value, max) {
            Some(why) => Err(bad(format!("{field}: {why}"))),
            None => Ok(()),
        }
    };
    bounded("name", name, MAX_NAME_CHARS)?;
    bounded("content", content, MAX_CONTENT_CHARS)?;
    if let Some(category) = category {
        bounded("category", category, MAX_CATEGORY_CHARS)?;
    }
    if let Some(subject) = subject {
        if template_type != CommunicationType::Email {
            return Err(bad("subject: only an email template has a subject"));
        }
        bounded("subject", subject, MAX_SUBJECT_CHARS)?;
        if subject.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad("subject: must be one line without control characters"));
        }
    }
    let content_names =
        templates::placeholders([content]).map_err(|e| bad(format!("content: {e}")))?;
    let subject_names = subject
        .map(|s| templates::placeholders([s]).map_err(|e| bad(format!("subject: {e}"))))
        .transpose()?
        .unwrap_or_default();
    let mut variables = subject_names;
    for name in content_names {
        if !variables.contains(&name) {
            variables.push(name);
        }
    }
    Ok(Checked {
        template_type,
        variables,
    })
}

fn conflict_on_duplicate(name: &str) -> impl FnOnce(sqlx::Error) -> ApiError + '_ {
    move |error| {
        if templates::is_duplicate_name(&error) {
            ApiError::Conflict(format!("an active template is already named {name:?}"))
        } else {
            error.into()
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.ensure_staff()?;
    let name = request.name.trim();
    let checked = check(
        name,
        &request.content,
        &request.template_type,
        request.category.as_deref(),
        request.subject.as_deref(),
    )?;
    let key = IdempotencyKey::from_headers(
        &headers,
        caller.user_id(),
        "POST /api/communications/templates",
        &request,
    )?;
    let mut tx = state.pool.begin().await?;
    if let Some(key) = &key
        && let Some(earlier) = key.claim(&mut tx).await?
    {
        tx.rollback().await?;
        return Ok((earlier.status, Json(earlier.body)));
    }
    let template = templates::insert(
        &mut tx,
        Uuid::now_v7(),
        &TemplateText {
            name,
            template_type: checked.template_type.as_str(),
            category: request.category.as_deref().map(str::trim),
            subject: request.subject.as_deref(),
            content: &request.content,
            variables: &checked.variables,
        },
        caller.user_id(),
    )
    .await
    .map_err(conflict_on_duplicate(name))?;
    let body = template_json(&template);
    if let Some(key) = &key {
        key.store(&mut tx, StatusCode::CREATED, &body).await?;
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.ensure_staff()?;
    let template_type = query
        .template_type
        .as_deref()
        .map(|raw| match CommunicationType::parse(raw) {
            Ok(CommunicationType::Phone) | Err(_) => Err(ApiError::bad_request(
                "invalid_query",
                format!("type: must be inapp, sms or email, not {raw:?}"),
            )),
            Ok(t) => Ok(t.as_str()),
        })
        .transpose()?;
    let active = match query.active.as_deref() {
        None | Some("true") => Some(true),
        Some("false") => Some(false),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("active: must be true, false or all, not {other:?}"),
            ));
        }
    };
    let mut conn = state.pool.acquire().await?;
    let found = templates::list(
        &mut conn,
        &TemplateFilter {
            template_type,
            category: query.category.as_deref(),
            active,
        },
        LIST_LIMIT,
    )
    .await?;
    Ok(Json(json!({
        "templates": found.iter().map(template_json).collect::<Vec<_>>(),
    })))
}

async fn find(state: &AppState, caller: &Caller, raw_id: &str) -> ApiResult<Template> {
    caller.ensure_staff()?;
    let id = parse_uuid(raw_id, "id")?;
    let mut conn = state.pool.acquire().await?;
    templates::find(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no template {id}")))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(template_json(&find(&state, &caller, &id).await?)))
}

pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<EditTemplate>,
) -> ApiResult<Json<Value>> {
    let current = find(&state, &caller, &id).await?;
    if !current.active {
        return Err(ApiError::Conflict(format!(
            "template {} was deleted; create a new one",
            current.id
        )));
    }
    let name = request.name.as_deref().unwrap_or(&current.name).trim();
    let content = request.content.as_deref().unwrap_or(&current.content);
    let template_type = request
        .template_type
        .as_deref()
        .unwrap_or(&current.template_type);
    let category = match &request.category {
        Some(given) => given.as_deref(),
        None => current.category.as_deref(),
    };
    let subject = match &request.subject {
        Some(given) => given.as_deref(),
        None => current.subject.as_deref(),
    };
    let checked = check(name, content, template_type, category, subject)?;
    let mut tx = state.pool.begin().await?;
    let template = templates::update(
        &mut tx,
        current.id,
        &TemplateText {
            name,
            template_type: checked.template_type.as_str(),
            category: category.map(str::trim),
            subject,
            content,
            variables: &checked.variables,
        },
        caller.user_id(),
    )
    .await
    .map_err(conflict_on_duplicate(name))?
    .ok_or_else(|| ApiError::Conflict(format!("template {} was deleted meanwhile", current.id)))?;
    tx.commit().await?;
    Ok(Json(template_json(&template)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let template = find(&state, &caller, &id).await?;
    let mut conn = state.pool.acquire().await?;
    let deactivated = templates::deactivate(&mut conn, template.id, caller.user_id()).await?;
    Ok(Json(json!({
        "id": template.id,
        "active": false,
        // A repeat finds it already inactive: the same answer, nothing changed.
        "deactivated": deactivated,
    })))
}

pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<PreviewRequest>,
) -> ApiResult<Json<Value>> {
    let template = find(&state, &caller, &id).await?;
    let rendered = templates::render_template(
        &template.content,
        template.subject.as_deref(),
        &request.variables,
    )
    .map_err(crate::accept::render_error)?;
    let (message, subject) = (rendered.message, rendered.subject);
    let mut body = json!({
        "template_id": template.id,
        "version": template.version,
        "type": template.template_type,
        "message": message,
        "subject": subject,
    });
    if template.template_type == CommunicationType::Sms.as_str() {
        body["segments"] = json!(super::integrations::sms::segments(&message));
    }
    Ok(Json(body))
}

fn template_json(t: &Template) -> Value {
    let mut body = serde_json::to_value(t).unwrap_or_else(|_| json!({}));
    body["template_id"] = json!(t.id);
    body
}
