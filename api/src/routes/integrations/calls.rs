//! `POST /api/integrations/ringcentral/call-log`: a phone call that happened, logged
//! by staff (and with RingCentral's call log by a worker).

use axum::{extract::State, http::HeaderMap};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Map;

use uuid::Uuid;

use commcenter_shared::{
    domain::contact::PhoneNumber,
    domain::{CustomerId, Direction, MessageText},
};

use super::{Answer, invalid, ringcentral_ready};
use crate::{
    accept::{Acceptance, Channel, Composed, NewCommunication, begin_or_repeat},
    auth::Caller,
    body::JsonBody,
    state::AppState,
};
use commcenter_shared::domain::text;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    Inbound,
    Outbound,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogCallRequest {
    pub customer_id: CustomerId,
    /// The project (a job at the customer\'s site) it belongs to.
    #[serde(default)]
    pub project_id: Option<Uuid>,
    pub phone: String,
    pub direction: CallDirection,
    /// Seconds.
    pub duration: i64,
    #[serde(default)]
    pub notes: Option<String>,
    /// RFC 3339; now when absent.
    #[serde(default)]
    pub occurred_at: Option<String>,
}

/// A day: no call logged by hand lasts longer.
const CALL_MAX_SECONDS: i64 = 86_400;
/// Clocks of the portal's users run a little ahead at times.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

pub async fn log(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<LogCallRequest>,
) -> Answer {
    caller.ensure_staff()?;
    ringcentral_ready(&state)?;
    let ringcentral = &state.settings.ringcentral;
    let phone = PhoneNumber::parse(&request.phone, state.settings.contacts.default_phone_region)
        .map_err(|e| invalid("phone", e))?;
    if !(0..=CALL_MAX_SECONDS).contains(&request.duration) {
        return Err(invalid(
            "duration",
            format!(
                "must be 0 to {CALL_MAX_SECONDS} seconds, not {}",
                request.duration
            ),
        )
        .into());
    }
    let notes = request.notes.as_deref().unwrap_or_default();
    if let Some(why) = text::refusal_if_any(notes, MessageText::MAX_CHARS) {
        return Err(invalid("notes", why).into());
    }
    let now = Utc::now();
    let occurred_at = match request.occurred_at.as_deref() {
        None => now,
        Some(raw) => {
            let at = DateTime::parse_from_rfc3339(raw)
                .map_err(|e| {
                    invalid(
                        "occurred_at",
                        format!("{raw:?} is not an RFC 3339 time ({e})"),
                    )
                })?
                .with_timezone(&Utc);
            if at > now + CLOCK_SKEW {
                return Err(invalid("occurred_at", format!("{raw} is in the future")).into());
            }
            at
        }
    };
    let mut acceptance = begin_or_repeat!(Acceptance::begin(
        &state,
        &caller,
        &headers,
        "POST /api/integrations/ringcentral/call-log",
        &request
    ));
    let project_id = acceptance
        .project(&caller, &request.customer_id, request.project_id)
        .await?;
    let direction = match request.direction {
        CallDirection::Inbound => Direction::Inbound,
        CallDirection::Outbound => Direction::Outbound,
    };
    let composed = Composed {
        message: notes.to_owned(),
        ..Default::default()
    };
    Ok(acceptance
        .record(
            &state,
            &caller,
            NewCommunication {
                direction,
                ..NewCommunication::outbound(
                    &request.customer_id,
                    project_id,
                    &composed,
                    &[],
                    Channel::Phone {
                        phone: phone.as_str(),
                        local: Some(ringcentral.from_number.as_str()).filter(|n| !n.is_empty()),
                        duration_seconds: request.duration as i32,
                        occurred_at,
                    },
                )
            },
            Map::new(),
        )
        .await?)
}
