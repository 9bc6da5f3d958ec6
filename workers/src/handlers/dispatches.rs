//! `dispatch.notify` and `dispatch.remind`: telling a dispatched crew.
//!
//! `dispatch.notify` records the crew's `dispatch.new` event and texts each member with
//! no WebSocket open right now. `dispatch.remind`, enqueued by the workers' sweep once
//! `DISPATCH_ACK_SECS` have passed, texts each member who was connected (so got no
//! text) and has not acknowledged. Each text is an internal SMS of the project with its
//! own `sms.send` job (`dispatch::text_member`): sent at most once, retried,
//! dead-lettered like every SMS. Both run in their job's transaction, so a redelivery
//! of a job that succeeded changes nothing.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgConnection;

use commcenter_shared::{
    domain::crews::{self, Dispatch, Project},
    domain::dispatch::{self, TextAbout},
    ledger::events::{self, Event, EventBody},
    ledger::jobs::payloads,
};

use crate::job::{Handler, JobContext, JobError};

/// What both handlers need to text members.
#[derive(Debug, Clone)]
pub struct Texting {
    /// `RINGCENTRAL_FROM_NUMBER`; none: RingCentral is not configured, no texts.
    pub from_number: Option<String>,
    pub max_attempts: i32,
    /// A member is connected when an api instance heartbeating within this long holds
    /// their WebSocket.
    pub presence_ttl: Duration,
}

impl Texting {
    /// Texts `members`; none when RingCentral is not configured (said in the log).
    async fn text(
        &self,
        conn: &mut PgConnection,
        project: &Project,
        members: &[crews::Member],
        text: &str,
    ) -> Result<usize, JobError> {
        if members.is_empty() {
            return Ok(0);
        }
        let Some(from_number) = &self.from_number else {
            tracing::warn!(
                members = members.len(),
                "RingCentral is not configured (RINGCENTRAL_FROM_NUMBER): crew members are not texted"
            );
            return Ok(0);
        };
        for member in members {
            dispatch::text_member(
                conn,
                TextAbout::Project(project),
                member,
                from_number,
                text,
                self.max_attempts,
            )
            .await?;
        }
        Ok(members.len())
    }
}

/// The dispatch and its project, or a permanent failure naming what is missing.
async fn load(conn: &mut PgConnection, id: uuid::Uuid) -> Result<(Dispatch, Project), JobError> {
    let dispatch = crews::find_dispatch(conn, id)
        .await?
        .ok_or_else(|| JobError::permanent(format!("dispatch {id} does not exist")))?;
    let project = crews::find_project(conn, dispatch.project_id, false)
        .await?
        .ok_or_else(|| {
            JobError::permanent(format!("project {} does not exist", dispatch.project_id))
        })?;
    Ok((dispatch, project))
}

pub struct NotifyDispatchHandler(pub Texting);

#[async_trait]
impl Handler<payloads::NotifyDispatch> for NotifyDispatchHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::NotifyDispatch,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        let (dispatch, project) = load(conn, payload.dispatch_id).await?;
        let customer = project.customer_id.clone();
        let event = Event::of_project(
            customer,
            project.id,
            dispatch.crew_id,
            EventBody::DispatchNew {
                dispatch_id: dispatch.id,
                title: project.title.clone(),
                address: project.address.clone(),
                lat: project.lat,
                lng: project.lng,
                note: dispatch.note.clone(),
                eta: dispatch.eta,
                dispatched_by: dispatch.dispatched_by.clone(),
            },
        );
        events::record(conn, &event).await?;
        let offline = crews::members_to_text(
            conn,
            dispatch.crew_id,
            false,
            None,
            self.0.presence_ttl.as_secs_f64(),
        )
        .await?;
        let texted = self
            .0
            .text(
                conn,
                &project,
                &offline,
                &dispatch::crew_text(&dispatch, &project),
            )
            .await?;
        tracing::info!(dispatch = %dispatch.id, texted, "crew notified");
        Ok(())
    }
}

pub struct RemindDispatchHandler(pub Texting);

#[async_trait]
impl Handler<payloads::RemindDispatch> for RemindDispatchHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::RemindDispatch,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        let (dispatch, project) = load(conn, payload.dispatch_id).await?;
        if dispatch.arrived_at.is_some() || project.status.is_final() {
            return Ok(()); // There already, or no longer wanted.
        }
        let waiting = crews::members_to_text(
            conn,
            dispatch.crew_id,
            true,
            Some(dispatch.id),
            self.0.presence_ttl.as_secs_f64(),
        )
        .await?;
        let text = dispatch::reminder_text(&dispatch, &project);
        let texted = self.0.text(conn, &project, &waiting, &text).await?;
        tracing::info!(dispatch = %dispatch.id, texted, "unacknowledged members reminded");
        Ok(())
    }
}
