//! The operators' live view: jobs run per minute (succeeded, retried, dead) and each
//! queue's depth over time, kept in the database so every api instance draws the same
//! picture without Prometheus.
//!
//! Every worker process counts the jobs it finishes by minute and kind and adds its
//! counts to `job_activity` every few seconds; it also samples the queues' depths into
//! `queue_depths`, keeping the deepest seen in each minute. A process killed outright
//! loses its last few seconds of counts: the chart is a picture, the ledger the truth.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// The most minutes one look may cover: a day.
pub const MAX_MINUTES: i64 = 24 * 60;

/// Jobs finished in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct JobCounts {
    pub succeeded: i64,
    /// Failed and waiting in a delay tier.
    pub retried: i64,
    /// Failed for good.
    pub dead: i64,
}

impl JobCounts {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(at)
}

/// Adds a process's counts (by minute and kind) to the totals, in one statement.
pub async fn add_job_counts(
    pool: &PgPool,
    counts: &[(DateTime<Utc>, String, JobCounts)],
) -> sqlx::Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    let (mut minutes, mut kinds, mut succeeded, mut retried, mut dead) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (minute, kind, c) in counts {
        minutes.push(*minute);
        kinds.push(kind.as_str());
        succeeded.push(c.succeeded);
        retried.push(c.retried);
        dead.push(c.dead);
    }
    sqlx::query(
        "INSERT INTO job_activity (minute, kind, succeeded, retried, dead)
         SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
         ON CONFLICT (minute, kind) DO UPDATE SET
             succeeded = job_activity.succeeded + EXCLUDED.succeeded,
             retried = job_activity.retried + EXCLUDED.retried,
             dead = job_activity.dead + EXCLUDED.dead",
    )
    .bind(&minutes)
    .bind(&kinds)
    .bind(&succeeded)
    .bind(&retried)
    .bind(&dead)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the queues' depths seen at `at`: each minute keeps the deepest.
pub async fn record_queue_depths(
    pool: &PgPool,
    at: DateTime<Utc>,
    depths: &[(String, i64)],
) -> sqlx::Result<()> {
    let (queues, messages): (Vec<&str>, Vec<i64>) =
        depths.iter().map(|(q, n)| (q.as_str(), *n)).unzip();
    sqlx::query(
        "INSERT INTO queue_depths (minute, queue, messages)
         SELECT $1, * FROM unnest($2::text[], $3::bigint[])
         ON CONFLICT (minute, queue) DO UPDATE
             SET messages = greatest(queue_depths.messages, EXCLUDED.messages)",
    )
    .bind(minute_of(at))
    .bind(&queues)
    .bind(&messages)
    .execute(pool)
    .await?;
    Ok(())
}

/// One minute of the chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Minute {
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub jobs: JobCounts,
}

/// One queue's depth per minute (`None`: no sample that minute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueSeries {
    pub queue: String,
    pub depths: Vec<Option<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// The last `minutes` minutes up to the one `now` is in, oldest first, every
    /// minute present.
    pub minutes: Vec<Minute>,
    /// Every queue sampled in that time, by name, its depths aligned with `minutes`.
    pub queues: Vec<QueueSeries>,
}

/// The last `minutes` minutes (1 to [`MAX_MINUTES`]) up to `now`.
pub async fn activity(pool: &PgPool, minutes: i64, now: DateTime<Utc>) -> sqlx::Result<Activity> {
    let last = minute_of(now);
    let first = last - chrono::Duration::minutes(minutes - 1);
    let jobs: Vec<(DateTime<Utc>, i64, i64, i64)> = sqlx::query_as(
        "SELECT m.minute, coalesce(sum(a.succeeded), 0)::bigint, coalesce(sum(a.retried), 0)::bigint,
                coalesce(sum(a.dead), 0)::bigint
         FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') AS m (minute)
         LEFT JOIN job_activity a ON a.minute = m.minute
         GROUP BY m.minute ORDER BY m.minute",
    )
    .bind(first)
    .bind(last)
    .fetch_all(pool)
    .await?;
    let samples: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT queue, minute, messages FROM queue_depths
         WHERE minute >= $1 AND minute <= $2 ORDER BY queue, minute",
    )
    .bind(first)
    .bind(last)
    .fetch_all(pool)
    .await?;
    let mut queues: BTreeMap<String, Vec<Option<i64>>> = BTreeMap::new();
    for (queue, minute, messages) in samples {
        let index = (minute - first).num_minutes() as usize;
        let depths = queues
            .entry(queue)
            .or_insert_with(|| vec![None; minutes as usize]);
        if let Some(slot) = depths.get_mut(index) {
            *slot = Some(messages);
        }
    }
    Ok(Activity {
        minutes: jobs
            .into_iter()
            .map(|(at, succeeded, retried, dead)| Minute {
                at,
                jobs: JobCounts {
                    succeeded,
                    retried,
                    dead,
                },
            })
            .collect(),
        queues: queues
            .into_iter()
            .map(|(queue, depths)| QueueSeries { queue, depths })
            .collect(),
    })
}
