//! Field crews and their work: crews and members, projects at customers' sites,
//! dispatches and acknowledgements, and crews' reported positions. Repository
//! functions over those tables, each taking the caller's connection.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{CustomerId, ProjectStatus};

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
    /// The members who acknowledged it, first first.
    pub acknowledged_by: Vec<String>,
}

pub const DISPATCH_COLUMNS: &str =
    "id, project_id, crew_id, note, eta, notify_customer, dispatched_by, created_at, arrived_at,
     ARRAY(SELECT user_id FROM dispatch_acks WHERE dispatch_id = dispatches.id ORDER BY at)
         AS acknowledged_by";

/// The project's latest dispatches, newest first.
pub async fn latest_dispatches(
    conn: &mut PgConnection,
    project: Uuid,
) -> sqlx::Result<Vec<Dispatch>> {
    sqlx::query_as(&format!(
        "SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE project_id = $1
         ORDER BY created_at DESC LIMIT 20"
    ))
    .bind(project)
    .fetch_all(conn)
    .await
}

pub async fn find_dispatch(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Dispatch>> {
    sqlx::query_as(&format!(
        "SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// How many members the crew has.
pub async fn member_count(conn: &mut PgConnection, crew: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM crew_members WHERE crew_id = $1")
        .bind(crew)
        .fetch_one(conn)
        .await
}

/// The crew's name (a deleted crew's too).
pub async fn crew_name(conn: &mut PgConnection, crew: Uuid) -> sqlx::Result<String> {
    sqlx::query_scalar("SELECT name FROM crews WHERE id = $1")
        .bind(crew)
        .fetch_one(conn)
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
