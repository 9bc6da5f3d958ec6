//! Field crews and their work: crews and members, projects at customers' sites,
//! dispatches and acknowledgements, and crews' reported positions. Repository
//! functions over those tables, each taking the caller's connection.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    communications::{
        Channel, Communication, Composed, EmailThread, Outbound, Sender,
        outbound::{self},
    },
    contact::Mailbox,
    domain::{CommunicationType, CustomerId, Direction, ProjectStatus, Visibility},
};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Member {
    pub user_id: String,
    pub name: String,
    /// E.164: where dispatch texts go.
    pub phone: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Crew {
    pub id: Uuid,
    pub name: String,
    pub members: Vec<Member>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct CrewRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The crew `user` is a member of, if any (a user is in at most one).
pub async fn crew_of(conn: &mut PgConnection, user: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT crew_id FROM crew_members WHERE user_id = $1")
        .bind(user)
        .fetch_optional(conn)
        .await
}

/// Is `project` assigned to the crew `user` is in?
pub async fn member_sees_project(
    conn: &mut PgConnection,
    user: &str,
    project: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projects p JOIN crew_members m ON m.crew_id = p.crew_id
                        WHERE p.id = $1 AND m.user_id = $2)",
    )
    .bind(project)
    .bind(user)
    .fetch_one(conn)
    .await
}

/// Users already in another crew than `crew` (None: in any crew).
pub async fn members_elsewhere(
    conn: &mut PgConnection,
    users: &[String],
    crew: Option<Uuid>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT user_id FROM crew_members
         WHERE user_id = ANY($1) AND ($2::uuid IS NULL OR crew_id <> $2)
         ORDER BY user_id",
    )
    .bind(users)
    .bind(crew)
    .fetch_all(conn)
    .await
}

pub async fn insert_crew(conn: &mut PgConnection, id: Uuid, name: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO crews (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(conn)
        .await
        .map(drop)
}

/// Replaces the crew's members with `members`.
pub async fn set_members(
    conn: &mut PgConnection,
    crew: Uuid,
    members: &[Member],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM crew_members WHERE crew_id = $1")
        .bind(crew)
        .execute(&mut *conn)
        .await?;
    let users: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let phones: Vec<&str> = members.iter().map(|m| m.phone.as_str()).collect();
    sqlx::query(
        "INSERT INTO crew_members (user_id, crew_id, name, phone)
         SELECT u, $1, n, p FROM unnest($2::text[], $3::text[], $4::text[]) AS m(u, n, p)",
    )
    .bind(crew)
    .bind(&users)
    .bind(&names)
    .bind(&phones)
    .execute(conn)
    .await
    .map(drop)
}

/// Renames the crew; false if there is no such (live) crew.
pub async fn rename_crew(conn: &mut PgConnection, crew: Uuid, name: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE crews SET name = $2, updated_at = now() WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(crew)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn touch_crew(conn: &mut PgConnection, crew: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE crews SET updated_at = now() WHERE id = $1")
        .bind(crew)
        .execute(conn)
        .await
        .map(drop)
}

/// Deletes the crew: the row stays (dispatches name it), its members are freed.
pub async fn delete_crew(conn: &mut PgConnection, crew: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE crews SET deleted_at = now(), updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(crew)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM crew_members WHERE crew_id = $1")
        .bind(crew)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Projects not yet done or cancelled that the crew is assigned to.
pub async fn open_projects_of(conn: &mut PgConnection, crew: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM projects
         WHERE crew_id = $1 AND status NOT IN ('done', 'cancelled') ORDER BY id",
    )
    .bind(crew)
    .fetch_all(conn)
    .await
}

pub async fn find_crew(conn: &mut PgConnection, crew: Uuid) -> sqlx::Result<Option<Crew>> {
    let Some(row): Option<CrewRow> = sqlx::query_as(
        "SELECT id, name, created_at, updated_at FROM crews WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(crew)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let members = sqlx::query_as(
        "SELECT user_id, name, phone FROM crew_members WHERE crew_id = $1 ORDER BY user_id",
    )
    .bind(crew)
    .fetch_all(conn)
    .await?;
    Ok(Some(with_members(row, members)))
}

/// Every live crew with its members, by name.
pub async fn list_crews(conn: &mut PgConnection) -> sqlx::Result<Vec<Crew>> {
    let rows: Vec<CrewRow> = sqlx::query_as(
        "SELECT id, name, created_at, updated_at FROM crews
         WHERE deleted_at IS NULL ORDER BY name, id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let members: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT m.crew_id, m.user_id, m.name, m.phone FROM crew_members m
         JOIN crews c ON c.id = m.crew_id AND c.deleted_at IS NULL
         ORDER BY m.user_id",
    )
    .fetch_all(conn)
    .await?;
    let mut by_crew: std::collections::HashMap<Uuid, Vec<Member>> =
        std::collections::HashMap::new();
    for (crew, user_id, name, phone) in members {
        by_crew.entry(crew).or_default().push(Member {
            user_id,
            name,
            phone,
        });
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let own = by_crew.remove(&row.id).unwrap_or_default();
            with_members(row, own)
        })
        .collect())
}

fn with_members(row: CrewRow, members: Vec<Member>) -> Crew {
    Crew {
        id: row.id,
        name: row.name,
        members,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub customer_id: CustomerId,
    pub title: String,
    pub address: String,
    pub lat: f64,
    pub lng: f64,
    pub scheduled_start: Option<DateTime<Utc>>,
    pub scheduled_end: Option<DateTime<Utc>>,
    pub crew_id: Option<Uuid>,
    pub status: ProjectStatus,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const PROJECT_COLUMNS: &str = "id, customer_id, title, address, lat, lng, scheduled_start,
    scheduled_end, crew_id, status, created_by, created_at, updated_at";

/// The project, its row locked for the rest of the transaction when `lock`.
pub async fn find_project(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<Project>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What `GET /api/projects` filters on; all optional.
#[derive(Debug, Clone, Default)]
pub struct ProjectFilter {
    pub customer_id: Option<CustomerId>,
    pub crew_id: Option<Uuid>,
    pub status: Option<ProjectStatus>,
    /// Projects whose scheduled window touches this UTC day (or, unscheduled, that were
    /// created on it).
    pub date: Option<chrono::NaiveDate>,
    pub limit: i64,
}

pub async fn list_projects(
    conn: &mut PgConnection,
    f: &ProjectFilter,
) -> sqlx::Result<Vec<Project>> {
    sqlx::query_as(&format!(
        "SELECT {PROJECT_COLUMNS} FROM projects
         WHERE ($1::text IS NULL OR customer_id = $1)
           AND ($2::uuid IS NULL OR crew_id = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::date IS NULL
                OR (scheduled_start IS NOT NULL
                    AND scheduled_start < ($4::date + 1)::timestamp AT TIME ZONE 'UTC'
                    AND coalesce(scheduled_end, scheduled_start) >= $4::timestamp AT TIME ZONE 'UTC')
                OR (scheduled_start IS NULL
                    AND (created_at AT TIME ZONE 'UTC')::date = $4))
         ORDER BY coalesce(scheduled_start, created_at) DESC, id DESC
         LIMIT $5"
    ))
    .bind(f.customer_id.as_ref().map(CustomerId::as_str))
    .bind(f.crew_id)
    .bind(f.status)
    .bind(f.date)
    .bind(f.limit)
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Dispatch {
    pub id: Uuid,
    pub project_id: Uuid,
    pub crew_id: Uuid,
    pub note: String,
    pub eta: Option<DateTime<Utc>>,
    pub notify_customer: bool,
    pub dispatched_by: String,
    pub created_at: DateTime<Utc>,
    pub arrived_at: Option<DateTime<Utc>>,
}

pub const DISPATCH_COLUMNS: &str =
    "id, project_id, crew_id, note, eta, notify_customer, dispatched_by, created_at, arrived_at";

pub async fn find_dispatch(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Dispatch>> {
    sqlx::query_as(&format!(
        "SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Members of the crew with no live WebSocket now (a presence row on a live api
/// instance), and, with `unacknowledged_of`, only those who have not acknowledged it.
pub async fn members_to_text(
    conn: &mut PgConnection,
    crew: Uuid,
    connected: bool,
    unacknowledged_of: Option<Uuid>,
    presence_ttl_secs: f64,
) -> sqlx::Result<Vec<Member>> {
    sqlx::query_as(
        "SELECT m.user_id, m.name, m.phone FROM crew_members m
         WHERE m.crew_id = $1
           AND $2 = EXISTS (SELECT 1 FROM presence p
                            JOIN presence_instances i USING (instance_id)
                            WHERE p.user_id = m.user_id
                              AND i.heartbeat_at > now() - make_interval(secs => $4))
           AND ($3::uuid IS NULL OR NOT EXISTS (SELECT 1 FROM dispatch_acks a
                                               WHERE a.dispatch_id = $3 AND a.user_id = m.user_id))
         ORDER BY m.user_id",
    )
    .bind(crew)
    .bind(connected)
    .bind(unacknowledged_of)
    .bind(presence_ttl_secs)
    .fetch_all(conn)
    .await
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
    pub fn of(settings: &'a crate::settings::Settings) -> Self {
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

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Position {
    pub crew_id: Uuid,
    pub crew_name: String,
    pub user_id: String,
    pub lat: f64,
    pub lng: f64,
    pub accuracy_m: Option<f64>,
    pub at: DateTime<Utc>,
}

/// Each live crew's latest reported position (crews that never reported are absent).
pub async fn latest_positions(conn: &mut PgConnection) -> sqlx::Result<Vec<Position>> {
    sqlx::query_as(
        "SELECT c.id AS crew_id, c.name AS crew_name, l.user_id, l.lat, l.lng, l.accuracy_m, l.at
         FROM crews c
         CROSS JOIN LATERAL (SELECT * FROM crew_locations l
                             WHERE l.crew_id = c.id ORDER BY l.at DESC, l.id DESC LIMIT 1) l
         WHERE c.deleted_at IS NULL
         ORDER BY c.name, c.id",
    )
    .fetch_all(conn)
    .await
}

/// Great-circle distance in metres (haversine on a sphere of the Earth's mean radius):
/// within a few metres of the ellipsoid at the distances a site radius cares about.
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let (lat1, lng1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lng2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lng2 - lng1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::distance_m;

    #[test]
    fn haversine_distances() {
        assert_eq!(distance_m((10.0, 20.0), (10.0, 20.0)), 0.0);
        // One degree of latitude is about 111.2 km.
        let degree = distance_m((0.0, 0.0), (1.0, 0.0));
        assert!((degree - 111_195.0).abs() < 10.0, "{degree}");
        // Paris to London, about 343.5 km.
        let d = distance_m((48.8566, 2.3522), (51.5074, -0.1278));
        assert!((d - 343_500.0).abs() < 1_500.0, "{d}");
        // Across the antimeridian.
        let d = distance_m((0.0, 179.9), (0.0, -179.9));
        assert!((d - 22_239.0).abs() < 5.0, "{d}");
    }
}
