//! Analytics: how many messages came and went, how long customers waited for an
//! answer, how conversations opened and closed, how much of what we sent was read.
//!
//! Computed on read, from facts the database keeps as messages are written
//! (`migrations/…_analytics.sql`): each customer message's first answer (`answered_at`,
//! `answered_by`; a deleted answer hands the message to the next one), whether it opened
//! or reopened its conversation, and every conversation's status changes. A range is
//! one scan of the `communications_analytics` index, so edits, deletions and late read
//! receipts are in the figures as soon as they are in the rows.
//!
//! Definitions (docs/analytics.md):
//! - a customer message *awaits an answer* when it is an inbound in-app, SMS or email
//!   message from the customer; an *answer* is a public outbound message by staff, crew
//!   or an operator, on any channel, at or after it;
//! - *response time*: from a customer message to its first answer; *first response*:
//!   the same, for the messages that opened or reopened a conversation;
//! - medians and 90th percentiles interpolate (`percentile_cont`);
//! - a message still waiting when staff close its conversation waits no more: it is
//!   `closed_unanswered`, not `unanswered`;
//! - deleted messages and internal notes count nowhere.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};

use crate::domain::{CommunicationType, Direction, Invalid};

/// The longest range a request may cover.
pub const MAX_RANGE_DAYS: i64 = 400;
/// The range when none is given: the 30 days up to now.
pub const DEFAULT_RANGE_DAYS: i64 = 30;

/// A bound of a range as the caller wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// `2026-12-01`: that day in the range's time zone (as `from`, its start; as `to`,
    /// its end, so `from=2026-12-01&to=2026-12-01` is one whole day).
    Date(NaiveDate),
    /// `2026-12-01T09:30:00`: a wall-clock time in the range's time zone.
    Local(NaiveDateTime),
    /// `2026-12-01T09:30:00Z` or with an offset: that instant.
    Instant(DateTime<Utc>),
}

impl Moment {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
            return Ok(Self::Date(date));
        }
        if let Ok(instant) = DateTime::parse_from_rfc3339(raw) {
            return Ok(Self::Instant(instant.with_timezone(&Utc)));
        }
        for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
            if let Ok(local) = NaiveDateTime::parse_from_str(raw, format) {
                return Ok(Self::Local(local));
            }
        }
        Err(Invalid(format!(
            "{raw:?} is not an ISO date (2026-12-01) or date and time (2026-12-01T09:30:00, \
             with Z or an offset for an instant)"
        )))
    }

    /// The wall-clock time this bound stands for, or the instant.
    fn split(self, is_end: bool) -> (Option<NaiveDateTime>, Option<DateTime<Utc>>) {
        match self {
            Self::Date(date) => {
                let day = if is_end {
                    date.succ_opt().unwrap_or(date)
                } else {
                    date
                };
                (day.and_hms_opt(0, 0, 0), None)
            }
            Self::Local(local) => (Some(local), None),
            Self::Instant(instant) => (None, Some(instant)),
        }
    }
}

/// A half-open range of time `[from, to)` and the time zone its buckets and dates are
/// read in.
#[derive(Debug, Clone, Serialize)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub tz: String,
}

/// Why a range was refused: the parameter, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRange {
    pub parameter: &'static str,
    pub problem: String,
}

/// Resolves the caller's bounds in `tz` (an IANA name PostgreSQL knows): by default the
/// 30 days up to `now`; refused when it ends before it starts or spans over 400 days.
pub async fn resolve_range(
    conn: &mut PgConnection,
    from: Option<Moment>,
    to: Option<Moment>,
    tz: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Result<Range, BadRange>> {
    if !crate::domain::reach::is_time_zone(conn, tz).await? {
        return Ok(Err(BadRange {
            parameter: "tz",
            problem: format!("{tz:?} is not a time zone name (e.g. UTC, America/Chicago)"),
        }));
    }
    let (to_local, to_instant) = to.map_or((None, Some(now)), |m| m.split(true));
    let (from_local, from_instant) = from.map_or((None, None), |m| m.split(false));
    let (from, to): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "WITH bound AS (SELECT coalesce($3, $4::timestamp AT TIME ZONE $5) AS to_at)
         SELECT coalesce($1, $2::timestamp AT TIME ZONE $5, to_at - make_interval(days => $6)),
                to_at
         FROM bound",
    )
    .bind(from_instant)
    .bind(from_local)
    .bind(to_instant)
    .bind(to_local)
    .bind(tz)
    .bind(DEFAULT_RANGE_DAYS as i32)
    .fetch_one(conn)
    .await?;
    if to <= from {
        return Ok(Err(BadRange {
            parameter: "to",
            problem: format!("the range ends ({to}) before it starts ({from})"),
        }));
    }
    if to - from > chrono::Duration::days(MAX_RANGE_DAYS) {
        return Ok(Err(BadRange {
            parameter: "from",
            problem: format!(
                "the range spans {} days; at most {MAX_RANGE_DAYS}",
                (to - from).num_days()
            ),
        }));
    }
    Ok(Ok(Range {
        from,
        to,
        tz: tz.to_owned(),
    }))
}

/// How long customers waited: answered messages' median and 90th percentile, in
/// seconds (none when nothing was answered), how many still wait, and how many staff
/// closed the conversation on without an answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Waits {
    pub answered: i64,
    pub median: Option<f64>,
    pub p90: Option<f64>,
    pub unanswered: i64,
    pub closed_unanswered: i64,
}

/// Outbound messages and how many were read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReadRate {
    pub outbound: i64,
    pub read: i64,
    /// `read / outbound`; none when nothing went out.
    pub rate: Option<f64>,
}

/// The first-response distribution's bands: answered in under each bound (seconds),
/// the last open-ended.
pub const BANDS: [Option<i64>; 7] = [
    Some(60),
    Some(300),
    Some(900),
    Some(3600),
    Some(4 * 3600),
    Some(24 * 3600),
    None,
];

/// First responses answered within one band: at least the previous band's bound, under
/// `under_seconds` (none: the rest).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Band {
    pub under_seconds: Option<i64>,
    pub answered: i64,
}

/// One channel's figures, or all channels'.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub inbound: i64,
    pub outbound: i64,
    pub first_response_seconds: Waits,
    /// How first responses spread over [`BANDS`] (unanswered ones are in
    /// `first_response_seconds.unanswered`).
    pub first_response_distribution: Vec<Band>,
    pub response_seconds: Waits,
    pub read_rate: ReadRate,
}

/// Conversations' status changes in the range (whatever the channel).
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow)]
pub struct ConversationCounts {
    /// Began (their first message, or staff setting a status first).
    pub opened: i64,
    pub closed: i64,
    pub archived: i64,
    /// Open again after closed or archived, by a customer's message or by staff.
    pub reopened: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub range: Range,
    pub channel: Option<CommunicationType>,
    #[serde(flatten)]
    pub all: Figures,
    pub conversations: ConversationCounts,
    /// Per channel (every channel listed, zeros included; only the one asked for when
    /// `channel` is set).
    pub channels: BTreeMap<&'static str, Figures>,
}

/// The aggregates the figures are read from, over [`MESSAGES`]. Every column they read
/// is in `communications_analytics`, so the scan reads the index only.
fn figures_sql() -> String {
    let mut lower = 0;
    let bands: Vec<String> = BANDS
        .iter()
        .enumerate()
        .map(|(i, upper)| {
            let below = upper.map_or(String::new(), |u| format!(" AND wait < {u}"));
            let column = format!(
                "count(*) FILTER (WHERE awaits AND opens_conversation AND wait >= {lower}{below}) AS band_{i}"
            );
            lower = upper.unwrap_or(lower);
            column
        })
        .collect();
    format!("{FIGURES}, {}", bands.join(", "))
}

impl Default for Figures {
    /// Nothing in the range: zeros, every band present.
    fn default() -> Self {
        Self {
            inbound: 0,
            outbound: 0,
            first_response_seconds: Waits::default(),
            first_response_distribution: BANDS
                .iter()
                .map(|under_seconds| Band {
                    under_seconds: *under_seconds,
                    answered: 0,
                })
                .collect(),
            response_seconds: Waits::default(),
            read_rate: ReadRate::default(),
        }
    }
}

const FIGURES: &str = "
    count(*) FILTER (WHERE direction = 'inbound') AS inbound,
    count(*) FILTER (WHERE direction = 'outbound') AS outbound,
    count(answered_at) FILTER (WHERE awaits AND opens_conversation) AS first_answered,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY wait) FILTER (WHERE awaits AND opens_conversation) AS first_median,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY wait) FILTER (WHERE awaits AND opens_conversation) AS first_p90,
    count(*) FILTER (WHERE awaits AND opens_conversation AND answered_at IS NULL AND wait_closed_at IS NULL) AS first_unanswered,
    count(wait_closed_at) FILTER (WHERE awaits AND opens_conversation AND answered_at IS NULL) AS first_closed_unanswered,
    count(answered_at) FILTER (WHERE awaits) AS answered,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY wait) FILTER (WHERE awaits) AS median,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY wait) FILTER (WHERE awaits) AS p90,
    count(*) FILTER (WHERE awaits AND answered_at IS NULL AND wait_closed_at IS NULL) AS unanswered,
    count(wait_closed_at) FILTER (WHERE awaits AND answered_at IS NULL) AS closed_unanswered,
    count(read_at) FILTER (WHERE direction = 'outbound') AS read";

/// The public, undeleted messages of a range (`$1`, `$2`) and channel (`$3`, or all),
/// with whether each awaits an answer and how long it waited.
const MESSAGES: &str = "
    SELECT created_at, type, direction, customer_id, read_at, answered_at, answered_by,
           wait_closed_at, opens_conversation,
           awaits_answer(type, direction, sender_role) AS awaits,
           extract(epoch FROM answered_at - created_at)::float8 AS wait
    FROM communications
    WHERE visibility = 'public' AND deleted_at IS NULL
      AND created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR type = $3)";

fn figures(row: &PgRow) -> sqlx::Result<Figures> {
    let outbound: i64 = row.try_get("outbound")?;
    let read: i64 = row.try_get("read")?;
    Ok(Figures {
        inbound: row.try_get("inbound")?,
        outbound,
        first_response_distribution: BANDS
            .iter()
            .enumerate()
            .map(|(i, under_seconds)| {
                Ok(Band {
                    under_seconds: *under_seconds,
                    answered: row.try_get(format!("band_{i}").as_str())?,
                })
            })
            .collect::<sqlx::Result<_>>()?,
        first_response_seconds: Waits {
            answered: row.try_get("first_answered")?,
            median: row.try_get("first_median")?,
            p90: row.try_get("first_p90")?,
            unanswered: row.try_get("first_unanswered")?,
            closed_unanswered: row.try_get("first_closed_unanswered")?,
        },
        response_seconds: Waits {
            answered: row.try_get("answered")?,
            median: row.try_get("median")?,
            p90: row.try_get("p90")?,
            unanswered: row.try_get("unanswered")?,
            closed_unanswered: row.try_get("closed_unanswered")?,
        },
        read_rate: ReadRate {
            outbound,
            read,
            rate: (outbound > 0).then(|| read as f64 / outbound as f64),
        },
    })
}

pub async fn summary(
    pool: &PgPool,
    range: &Range,
    channel: Option<CommunicationType>,
) -> sqlx::Result<Summary> {
    // One scan: a row per channel, and (the grouping set `()`) one for them all.
    let rows = sqlx::query(&format!(
        "SELECT type, GROUPING(type) = 1 AS total, {}
         FROM ({MESSAGES}) m GROUP BY GROUPING SETS ((type), ())",
        figures_sql()
    ))
    .bind(range.from)
    .bind(range.to)
    .bind(channel)
    .fetch_all(pool)
    .await?;
    let mut channels: BTreeMap<&'static str, Figures> = CommunicationType::ALL
        .iter()
        .filter(|c| channel.is_none_or(|only| only == **c))
        .map(|c| (c.as_str(), Figures::default()))
        .collect();
    let mut all = Figures::default();
    for row in &rows {
        if row.try_get("total")? {
            all = figures(row)?;
        } else {
            let channel: CommunicationType = row.try_get("type")?;
            channels.insert(channel.as_str(), figures(row)?);
        }
    }
    let conversations = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE from_status IS NULL) AS opened,
                count(*) FILTER (WHERE to_status = 'closed') AS closed,
                count(*) FILTER (WHERE to_status = 'archived') AS archived,
                count(*) FILTER (WHERE from_status IN ('closed', 'archived') AND to_status = 'open')
                    AS reopened
         FROM conversation_transitions WHERE at >= $1 AND at < $2",
    )
    .bind(range.from)
    .bind(range.to)
    .fetch_one(pool)
    .await?;
    Ok(Summary {
        range: range.clone(),
        channel,
        all,
        conversations,
        channels,
    })
}

/// A volume bucket's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
    Week,
}

impl Bucket {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            other => Err(Invalid(format!(
                "bucket must be hour, day or week, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
        }
    }
}

/// Messages in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Point {
    /// The bucket's first instant.
    pub start: DateTime<Utc>,
    /// The same, on the range's wall clock (`2026-12-01T00:00:00`).
    pub local: String,
    pub inbound: i64,
    pub outbound: i64,
    pub total: i64,
}

/// Messages per bucket over the range, every bucket present (zeros included), buckets
/// cut on the range's wall clock (a week starts on Monday).
pub async fn volume(
    pool: &PgPool,
    range: &Range,
    bucket: Bucket,
    channel: Option<CommunicationType>,
    direction: Option<Direction>,
) -> sqlx::Result<Vec<Point>> {
    sqlx::query_as(&format!(
        "WITH counts AS (
             SELECT date_trunc($5, created_at AT TIME ZONE $4) AS local_start,
                    count(*) FILTER (WHERE direction = 'inbound') AS inbound,
                    count(*) FILTER (WHERE direction = 'outbound') AS outbound
             FROM ({MESSAGES}) m WHERE ($6::text IS NULL OR direction = $6)
             GROUP BY 1),
         buckets AS (
             SELECT generate_series(date_trunc($5, $1 AT TIME ZONE $4),
                                    $2 AT TIME ZONE $4 - interval '1 microsecond',
                                    ('1 ' || $5)::interval) AS local_start)
         SELECT b.local_start AT TIME ZONE $4 AS start,
                to_char(b.local_start, 'YYYY-MM-DD\"T\"HH24:MI:SS') AS local,
                coalesce(c.inbound, 0) AS inbound, coalesce(c.outbound, 0) AS outbound,
                coalesce(c.inbound + c.outbound, 0) AS total
         FROM buckets b LEFT JOIN counts c USING (local_start)
         ORDER BY b.local_start"
    ))
    .bind(range.from)
    .bind(range.to)
    .bind(channel)
    .bind(&range.tz)
    .bind(bucket.as_str())
    .bind(direction)
    .fetch_all(pool)
    .await
}

/// What response times are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// Who answered (staff, crew or operator): their answers only.
    Staff,
    Channel,
    Customer,
}

impl GroupBy {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "staff" => Ok(Self::Staff),
            "channel" => Ok(Self::Channel),
            "customer" => Ok(Self::Customer),
            other => Err(Invalid(format!(
                "group_by must be staff, channel or customer, not {other:?}"
            ))),
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Staff => "answered_by",
            Self::Channel => "type",
            Self::Customer => "customer_id",
        }
    }
}

/// One group's response times.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The staff member's user id, the channel, or the customer id.
    pub key: String,
    /// Customer messages in the group that await an answer.
    pub messages: i64,
    pub first_response_seconds: Waits,
    pub response_seconds: Waits,
}

/// Response times per group, the groups with the most messages first (ties by key), at
/// most `limit` of them.
pub async fn response_times(
    pool: &PgPool,
    range: &Range,
    group_by: GroupBy,
    channel: Option<CommunicationType>,
    limit: i64,
) -> sqlx::Result<Vec<Group>> {
    let key = group_by.column();
    let rows = sqlx::query(&format!(
        "SELECT {key}::text AS key, count(*) AS messages, {}
         FROM ({MESSAGES}) m
         WHERE awaits AND {key} IS NOT NULL
         GROUP BY {key} ORDER BY count(*) DESC, {key} LIMIT $4",
        figures_sql()
    ))
    .bind(range.from)
    .bind(range.to)
    .bind(channel)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let f = figures(row)?;
            Ok(Group {
                key: row.try_get("key")?,
                messages: row.try_get("messages")?,
                first_response_seconds: f.first_response_seconds,
                response_seconds: f.response_seconds,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_dates_wall_clock_times_or_instants() {
        assert_eq!(
            Moment::parse("2026-12-01").unwrap(),
            Moment::Date(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap())
        );
        assert!(matches!(
            Moment::parse("2026-12-01T09:30:00").unwrap(),
            Moment::Local(_)
        ));
        assert!(matches!(
            Moment::parse("2026-12-01T09:30").unwrap(),
            Moment::Local(_)
        ));
        assert_eq!(
            Moment::parse("2026-12-01T09:30:00+02:00").unwrap(),
            Moment::Instant("2026-12-01T07:30:00Z".parse().unwrap())
        );
        for bad in ["yesterday", "2026-13-01", "01/12/2026", ""] {
            let error = Moment::parse(bad).unwrap_err().0;
            assert!(error.contains("ISO date"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_date_as_the_end_of_a_range_takes_in_the_whole_day() {
        let day = Moment::parse("2026-12-01").unwrap();
        let (start, _) = day.split(false);
        let (end, _) = day.split(true);
        assert_eq!(start.unwrap().to_string(), "2026-12-01 00:00:00");
        assert_eq!(end.unwrap().to_string(), "2026-12-02 00:00:00");
    }

    #[test]
    fn buckets_and_groupings_name_what_they_accept() {
        assert_eq!(Bucket::parse("week").unwrap(), Bucket::Week);
        assert!(
            Bucket::parse("month")
                .unwrap_err()
                .0
                .contains("hour, day or week")
        );
        assert_eq!(GroupBy::parse("staff").unwrap(), GroupBy::Staff);
        assert!(
            GroupBy::parse("crew")
                .unwrap_err()
                .0
                .contains("staff, channel or customer")
        );
    }
}
