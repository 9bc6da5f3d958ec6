//! Sending a crew and telling people: a dispatch and its acknowledgements, the crew's
//! arrival on site, and every text of it, composed here once: the customer's "on the
//! way" and "has arrived" (a template of the customer's channel when one renders), the
//! crew members' dispatch texts and reminders, staff's broadcasts. Each message is a
//! communication composed through [`crate::domain::communications::outbound`], with its job.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::communications::{
        Channel, Communication, Composed, EmailThread, Outbound, Sender,
        outbound::{self},
    },
    domain::contact::Mailbox,
    domain::crews::{self, DISPATCH_COLUMNS, Dispatch, Member, PROJECT_COLUMNS, Project},
    domain::{CommunicationType, CustomerId, Direction, ProjectStatus, Role, Visibility},
    ledger::events::{self, Event, EventBody},
    ledger::jobs::{self, NewJob, payloads},
};

/// The customer's template for "your crew is on the way" (by name, of their channel).
pub const ON_THE_WAY_TEMPLATE: &str = "crew_on_the_way";
/// The customer's template for "your crew has arrived".
pub const ARRIVED_TEMPLATE: &str = "crew_arrived";

/// A dispatch to write: the checks (the project may be dispatched, the crew is live
/// and has members) are the caller's.
#[derive(Debug, Clone)]
pub struct NewDispatch<'a> {
    pub project_id: Uuid,
    pub crew_id: Uuid,
    pub note: &'a str,
    pub eta: Option<DateTime<Utc>>,
    /// Also tell the customer their crew is on the way.
    pub notify_customer: bool,
    pub by: Sender<'a>,
}

/// What a dispatch wrote.
#[derive(Debug, Clone)]
pub struct Dispatched {
    pub dispatch: Dispatch,
    pub project: Project,
    /// The `dispatch.notify` job that tells the crew.
    pub job_id: Uuid,
    /// The message telling the customer, when asked for.
    pub customer_message_id: Option<Uuid>,
}

/// Sends the crew: the dispatch, the project `dispatched` to that crew, the job that
/// tells the crew, and (when asked) the customer's "on the way", in the caller's
/// transaction.
pub async fn dispatch(
    conn: &mut PgConnection,
    new: &NewDispatch<'_>,
    senders: Senders<'_>,
    max_attempts: i32,
) -> sqlx::Result<Dispatched> {
    let dispatch: Dispatch = sqlx::query_as(&format!(
        "INSERT INTO dispatches (id, project_id, crew_id, note, eta, notify_customer, dispatched_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {DISPATCH_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(new.project_id)
    .bind(new.crew_id)
    .bind(new.note)
    .bind(new.eta)
    .bind(new.notify_customer)
    .bind(new.by.id)
    .fetch_one(&mut *conn)
    .await?;
    let project: Project = sqlx::query_as(&format!(
        "UPDATE projects SET crew_id = $2, status = 'dispatched', updated_at = now()
         WHERE id = $1 RETURNING {PROJECT_COLUMNS}"
    ))
    .bind(new.project_id)
    .bind(new.crew_id)
    .fetch_one(&mut *conn)
    .await?;
    let job = NewJob::of(&payloads::NotifyDispatch {
        dispatch_id: dispatch.id,
    })
    .for_customer(&project.customer_id);
    let job_id = jobs::enqueue(conn, job, max_attempts).await?;
    let customer_message_id = if new.notify_customer {
        let crew_name = crews::crew_name(conn, new.crew_id).await?;
        let eta = new
            .eta
            .map(|eta| eta.format("%H:%M UTC").to_string())
            .unwrap_or_default();
        let fallback = if eta.is_empty() {
            format!(
                "Your crew ({crew_name}) is on the way to {}.",
                project.address
            )
        } else {
            format!(
                "Your crew ({crew_name}) is on the way to {}, arriving about {eta}.",
                project.address
            )
        };
        let notice = Notice {
            template: ON_THE_WAY_TEMPLATE,
            variables: &variables(&project, &crew_name, &eta),
            fallback,
            subject: "Your crew is on the way",
        };
        let message =
            notify_customer(conn, &project, new.by, &notice, senders, max_attempts).await?;
        Some(message.id)
    } else {
        None
    };
    Ok(Dispatched {
        dispatch,
        project,
        job_id,
        customer_message_id,
    })
}

/// A crew member acknowledges the dispatch: recorded once, announced once
/// (`dispatch.acknowledged`); returns when they first did.
pub async fn acknowledge(
    conn: &mut PgConnection,
    dispatch: &Dispatch,
    project: &Project,
    user: &str,
) -> sqlx::Result<DateTime<Utc>> {
    let inserted: Option<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO dispatch_acks (dispatch_id, user_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING RETURNING at",
    )
    .bind(dispatch.id)
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(at) = inserted {
        let event = Event::of_project(
            project.customer_id.clone(),
            project.id,
            dispatch.crew_id,
            EventBody::DispatchAcknowledged {
                dispatch_id: dispatch.id,
                user_id: user.to_owned(),
            },
        );
        events::record(conn, &event).await?;
        return Ok(at);
    }
    // Acknowledged before: the same answer.
    sqlx::query_scalar("SELECT at FROM dispatch_acks WHERE dispatch_id = $1 AND user_id = $2")
        .bind(dispatch.id)
        .bind(user)
        .fetch_one(conn)
        .await
}

/// Where arrivals are judged and who is told.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// `ARRIVAL_RADIUS_M`: how near the site a position must be.
    pub radius_m: f64,
    pub senders: Senders<'a>,
    pub max_attempts: i32,
}

/// A crew reported `position`: each project it is dispatched to (and not yet at)
/// whose site is within the radius becomes `on_site`, staff and the crew get
/// `project.arrived`, and the customer "your crew has arrived" if the dispatch asked.
/// Once per dispatch: `arrived_at` is set under the project's row lock. Returns the
/// projects arrived at.
pub async fn arrive(
    conn: &mut PgConnection,
    crew: Uuid,
    user: &str,
    position: (f64, f64),
    arrival: Arrival<'_>,
) -> sqlx::Result<Vec<Uuid>> {
    let en_route: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT d.id, d.project_id FROM dispatches d
         JOIN projects p ON p.id = d.project_id
         WHERE d.crew_id = $1 AND d.arrived_at IS NULL
           AND p.crew_id = $1 AND p.status = 'dispatched'
         ORDER BY d.created_at",
    )
    .bind(crew)
    .fetch_all(&mut *conn)
    .await?;
    let mut arrived = Vec::new();
    for (dispatch_id, project_id) in en_route {
        let Some(project) = crews::find_project(conn, project_id, true).await? else {
            continue;
        };
        let distance_m = crews::distance_m(position, (project.lat, project.lng));
        if project.status != ProjectStatus::Dispatched || distance_m > arrival.radius_m {
            continue;
        }
        let dispatch: Option<Dispatch> = sqlx::query_as(&format!(
            "UPDATE dispatches SET arrived_at = now() WHERE id = $1 AND arrived_at IS NULL
             RETURNING {DISPATCH_COLUMNS}"
        ))
        .bind(dispatch_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(dispatch) = dispatch else { continue };
        sqlx::query("UPDATE projects SET status = 'on_site', updated_at = now() WHERE id = $1")
            .bind(project_id)
            .execute(&mut *conn)
            .await?;
        let event = Event::of_project(
            project.customer_id.clone(),
            project_id,
            crew,
            EventBody::ProjectArrived {
                dispatch_id,
                user_id: user.to_owned(),
                distance_m: distance_m.round(),
            },
        );
        events::record(conn, &event).await?;
        if dispatch.notify_customer {
            let crew_name = crews::crew_name(conn, crew).await?;
            let notice = Notice {
                template: ARRIVED_TEMPLATE,
                variables: &variables(&project, &crew_name, ""),
                fallback: format!(
                    "Your crew ({crew_name}) has arrived at {}.",
                    project.address
                ),
                subject: "Your crew has arrived",
            };
            let by = Sender::user(&dispatch.dispatched_by, Role::Staff);
            notify_customer(
                conn,
                &project,
                by,
                &notice,
                arrival.senders,
                arrival.max_attempts,
            )
            .await?;
        }
        arrived.push(project_id);
    }
    Ok(arrived)
}

/// What a customer template about the crew may use.
fn variables(project: &Project, crew: &str, eta: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("title".to_owned(), json!(project.title)),
        ("address".to_owned(), json!(project.address)),
        ("crew".to_owned(), json!(crew)),
        ("eta".to_owned(), json!(eta)),
    ])
}

/// The text a dispatched crew's members get.
pub fn crew_text(dispatch: &Dispatch, project: &Project) -> String {
    let mut text = format!("Dispatch: {} at {}.", project.title, project.address);
    if let Some(eta) = dispatch.eta {
        text.push_str(&format!(" ETA {}.", eta.format("%H:%M UTC")));
    }
    if !dispatch.note.is_empty() {
        text.push(' ');
        text.push_str(&dispatch.note);
        if !dispatch.note.ends_with(['.', '!', '?']) {
            text.push('.');
        }
    }
    text.push_str(" Acknowledge in the crew app.");
    text
}

/// The text members who have not acknowledged get, once.
pub fn reminder_text(dispatch: &Dispatch, project: &Project) -> String {
    format!("Reminder: {}", crew_text(dispatch, project))
}

/// Staff's broadcast, as an offline member reads it.
pub fn broadcast_text(message: &str) -> String {
    format!("From dispatch: {message}")
}

/// A message to a customer about their crew: which template, and what to say without it.
pub struct Notice<'a> {
    /// The active template of this name and of the channel's type is used when there
    /// is one; its variables: `title`, `address`, `crew`, `eta`.
    pub template: &'a str,
    pub variables: &'a std::collections::BTreeMap<String, serde_json::Value>,
    /// The text (and, by email, the subject) when no template renders.
    pub fallback: String,
    pub subject: &'a str,
}

/// Where this system can send from: RingCentral's number and Gmail's mailbox, when
/// they are configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Senders<'a> {
    pub sms_from: Option<&'a str>,
    pub email_from: Option<&'a str>,
}

impl<'a> Senders<'a> {
    pub fn of(settings: &'a crate::platform::settings::Settings) -> Self {
        Self {
            sms_from: settings.ringcentral.sms_from(),
            email_from: settings.gmail.email_from(),
        }
    }
}

/// The channel a customer is reached on, when we can send on it: the one they chose
/// (their contact preferences' fallback channel), else the one they last wrote on (in-app,
/// SMS or email); in-app otherwise.
async fn customer_channel(
    conn: &mut PgConnection,
    customer: &CustomerId,
    senders: Senders<'_>,
) -> sqlx::Result<(CommunicationType, Option<String>)> {
    let chosen: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT fallback, phone, email FROM customer_preferences WHERE customer_id = $1",
    )
    .bind(customer.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    match chosen {
        Some((channel, Some(phone), _)) if channel == "sms" && senders.sms_from.is_some() => {
            return Ok((CommunicationType::Sms, Some(phone)));
        }
        Some((channel, _, Some(email))) if channel == "email" && senders.email_from.is_some() => {
            return Ok((CommunicationType::Email, Some(email)));
        }
        _ => {}
    }
    let last: Option<(CommunicationType, Option<String>)> = sqlx::query_as(
        "SELECT type, remote_address FROM communications
         WHERE customer_id = $1 AND direction = 'inbound' AND visibility = 'public'
           AND type IN ('inapp', 'sms', 'email')
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(customer.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(match last {
        Some((CommunicationType::Sms, Some(number))) if senders.sms_from.is_some() => {
            (CommunicationType::Sms, Some(number))
        }
        Some((CommunicationType::Email, Some(address))) if senders.email_from.is_some() => {
            (CommunicationType::Email, Some(address))
        }
        _ => (CommunicationType::InApp, None),
    })
}

/// A message to the project's customer about their crew ("on the way", "has arrived"),
/// with the job that carries it out, on the customer's channel ([`customer_channel`]):
/// from the active template of that channel named in `notice` when one renders, else
/// its fallback text.
pub async fn notify_customer(
    conn: &mut PgConnection,
    project: &Project,
    sender: Sender<'_>,
    notice: &Notice<'_>,
    senders: Senders<'_>,
    max_attempts: i32,
) -> sqlx::Result<Communication> {
    let (channel, address) = customer_channel(conn, &project.customer_id, senders).await?;
    let found: Option<(Uuid, i32, String, Option<String>)> = sqlx::query_as(
        "SELECT id, version, content, subject FROM message_templates
         WHERE lower(name) = lower($1) AND type = $2 AND active",
    )
    .bind(notice.template)
    .bind(channel)
    .fetch_optional(&mut *conn)
    .await?;
    let rendered = found.and_then(|(id, version, content, subject)| {
        match Composed::render((id, version), &content, subject.as_deref(), notice.variables) {
            Ok(composed) => Some(composed),
            Err(error) => {
                tracing::warn!(template = %id, %error, "the crew template does not render with title, address, crew and eta; sending the default text");
                None
            }
        }
    });
    let composed = match rendered {
        Some(composed) => composed,
        None => Composed::text(notice.fallback.clone()),
    };
    let recipient;
    let channel = match (channel, address.as_deref(), senders) {
        (
            CommunicationType::Sms,
            Some(to),
            Senders {
                sms_from: Some(from),
                ..
            },
        ) => Channel::Sms { to, from },
        (
            CommunicationType::Email,
            Some(to),
            Senders {
                email_from: Some(from),
                ..
            },
        ) => {
            recipient = [Mailbox::parse(to).map_err(|e| sqlx::Error::Decode(e.into()))?];
            Channel::Email {
                recipients: &recipient,
                from,
                thread: EmailThread::default(),
            }
        }
        _ => Channel::InApp,
    };
    // An email needs a subject: the template's, else the notice's own.
    let composed = match channel {
        Channel::Email { .. } if composed.subject.is_none() => Composed {
            subject: Some(notice.subject.to_owned()),
            ..composed
        },
        _ => composed,
    };
    let (communication, _) = outbound::record(
        conn,
        &Outbound {
            customer_id: &project.customer_id,
            sender,
            direction: Direction::Outbound,
            visibility: Visibility::Public,
            project_id: Some(project.id),
            composed: &composed,
            attachments: serde_json::json!([]),
            metadata: serde_json::Map::new(),
            channel,
            // The customer's own preferences or messages named the address.
            customer_addresses: false,
        },
        max_attempts,
    )
    .await?;
    Ok(communication)
}

/// What a text to a crew member is filed under.
#[derive(Debug, Clone, Copy)]
pub enum TextAbout<'a> {
    /// A project's dispatch: an internal message of the project (its crew and staff see
    /// it, its customer never does).
    Project(&'a Project),
    /// A broadcast to the crew: filed in the crew's own conversation, `crew:<id>`, which
    /// only staff see (internal, no customer's).
    Crew(Uuid),
}

/// An SMS to a crew member, with its `sms.send` job: a communication like any SMS, so it
/// has the never-twice sending, retries and dead-lettering of every SMS, and staff can
/// see that it went. The member's number is not remembered as a customer's.
pub async fn text_member(
    conn: &mut PgConnection,
    about: TextAbout<'_>,
    member: &Member,
    from_number: &str,
    text: &str,
    max_attempts: i32,
) -> sqlx::Result<Communication> {
    let crew_conversation;
    let (customer, project_id) = match about {
        TextAbout::Project(project) => (&project.customer_id, Some(project.id)),
        TextAbout::Crew(crew) => {
            crew_conversation = CustomerId::parse(&format!("crew:{crew}"))
                .map_err(|e| sqlx::Error::Decode(e.into()))?;
            (&crew_conversation, None)
        }
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("crew_member".into(), serde_json::json!(member.user_id));
    let (communication, _) = outbound::record(
        conn,
        &Outbound {
            customer_id: customer,
            sender: Sender::system("dispatch"),
            direction: Direction::Outbound,
            visibility: Visibility::Internal,
            project_id,
            composed: &Composed::text(text),
            attachments: serde_json::json!([]),
            metadata,
            channel: Channel::Sms {
                to: &member.phone,
                from: from_number,
            },
            customer_addresses: false,
        },
        max_attempts,
    )
    .await?;
    Ok(communication)
}
