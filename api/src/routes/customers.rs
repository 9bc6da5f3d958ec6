//! `PUT|GET /api/customers/{customer_id}/contact`: how to reach a customer outside the
//! portal: their email and phone (remembered as theirs, so inbound SMS and email from
//! them land in their conversation), the channel their unread in-app messages fall
//! back to, quiet hours and the delay. Staff set any customer's; a customer their own.

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

use commcenter_shared::{
    domain::CustomerId,
    domain::contact::{EmailAddress, PhoneNumber},
    domain::reach::{self, FallbackChannel, NewPreferences, Preferences, QuietHours},
};

use super::integrations::invalid;
use crate::{
    auth::Caller,
    body::JsonBody,
    error::{ApiError, ApiResult},
    state::AppState,
};

/// A delay shorter than this would text people who are reading; longer than a week is
/// not a fallback.
const MIN_AFTER_SECS: i32 = 60;
const MAX_AFTER_SECS: i32 = 7 * 24 * 3600;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactRequest {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default = "no_fallback")]
    fallback: String,
    #[serde(default)]
    quiet_hours: Option<QuietHours>,
    #[serde(default)]
    fallback_after_secs: Option<i32>,
}

fn no_fallback() -> String {
    "none".to_owned()
}

fn customer(caller: &Caller, raw: &str) -> ApiResult<CustomerId> {
    let customer = CustomerId::parse(raw)
        .map_err(|e| ApiError::bad_request("invalid_path", format!("customer_id: {}", e.0)))?;
    caller.ensure_sees(&customer)?;
    Ok(customer)
}

fn local_time(field: &str, raw: &str) -> ApiResult<NaiveTime> {
    NaiveTime::parse_from_str(raw, "%H:%M")
        .map_err(|_| invalid(field, format!("must be a local time HH:MM, not {raw:?}")))
}

pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    JsonBody(request): JsonBody<ContactRequest>,
) -> ApiResult<Json<Preferences>> {
    let customer = customer(&caller, &raw)?;
    let email = request
        .email
        .as_deref()
        .map(|raw| EmailAddress::parse(raw).map_err(|e| invalid("email", e)))
        .transpose()?;
    let region = state.settings.contacts.default_phone_region;
    let phone = request
        .phone
        .as_deref()
        .map(|raw| PhoneNumber::parse(raw, region).map_err(|e| invalid("phone", e)))
        .transpose()?;
    let fallback = FallbackChannel::parse(&request.fallback).map_err(|e| ApiError::Invalid(e.0))?;
    match fallback {
        FallbackChannel::Sms if phone.is_none() => {
            return Err(invalid("fallback", "sms needs a phone"));
        }
        FallbackChannel::Email if email.is_none() => {
            return Err(invalid("fallback", "email needs an email"));
        }
        _ => {}
    }
    if let Some(after) = request.fallback_after_secs
        && !(MIN_AFTER_SECS..=MAX_AFTER_SECS).contains(&after)
    {
        return Err(invalid(
            "fallback_after_secs",
            format!("must be {MIN_AFTER_SECS} to {MAX_AFTER_SECS} seconds, not {after}"),
        ));
    }
    let quiet = match &request.quiet_hours {
        None => None,
        Some(q) => {
            let start = local_time("quiet_hours.start", &q.start)?;
            let end = local_time("quiet_hours.end", &q.end)?;
            if start == end {
                return Err(invalid(
                    "quiet_hours",
                    "start and end are the same time: give a window, or leave quiet_hours out",
                ));
            }
            Some((start, end, q.time_zone.as_str()))
        }
    };
    let mut tx = state.pool.begin().await?;
    if let Some((_, _, zone)) = quiet
        && !reach::is_time_zone(&mut tx, zone).await?
    {
        return Err(invalid(
            "quiet_hours.time_zone",
            format!("{zone:?} is not a time zone name (such as Europe/Paris)"),
        ));
    }
    let saved = reach::save(
        &mut tx,
        &customer,
        &NewPreferences {
            email: email.as_ref().map(EmailAddress::as_str),
            phone: phone.as_ref().map(PhoneNumber::as_str),
            fallback,
            quiet_hours: quiet,
            fallback_after_secs: request.fallback_after_secs,
        },
        caller.user_id(),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(saved))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Preferences>> {
    let customer = customer(&caller, &raw)?;
    let mut conn = state.pool.acquire().await?;
    reach::find(&mut conn, &customer)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no contact set for customer {customer}")))
}
