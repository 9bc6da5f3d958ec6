//! `analytics`: the analytics endpoints' queries at size, each beside the same figures
//! computed by a straight aggregate over the raw table, measured in one run
//! (`cargo run --release -p commcenter-bench --bin analytics`).
//!
//! Loads a database of its own (dropped at the end unless `--keep`) with 1,000,000
//! communications over 100,000 conversations and a year, through the real write path
//! (the triggers that link each customer message to its answer run for every row):
//! each conversation an exchange of ten messages over a few minutes, customers writing
//! in-app, SMS and email, staff (and some crew) answering within a minute or two,
//! the system texting now and then, a few messages left unanswered, most in-app ones
//! read. Then, for a 30-day range (about 86,000 messages):
//!
//! - summary (`analytics::summary`), volume by day (`analytics::volume`) and response
//!   times per staff member (`analytics::response_times`): p50/p99 over `--queries`
//!   runs, each a different 30-day window;
//! - beside each, the straight way: every figure from the raw rows, each customer
//!   message's answer looked up by a subquery (for the summary and the per-staff
//!   table) or a GROUP BY without the covering index (for the volume);
//! - and a check that both ways give the same figures.
//!
//! Target: p99 < 200 ms. Figures go to stdout; the exit code is 0 unless the bench
//! could not run or the two ways disagree.

// A reporting tool: stdout is its output.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::{DateTime, Utc};
use clap::Parser;
use hdrhistogram::Histogram;
use sqlx::{Connection, PgConnection, PgPool, Row, postgres::PgPoolOptions};

use commcenter_shared::{
    domain::analytics::{self, Bucket, GroupBy, Range},
    platform::db,
};

#[derive(Debug, Parser)]
#[command(about = "Analytics at size, beside a straight aggregate over the raw table")]
struct Options {
    /// Communications to load (ten per conversation).
    #[arg(long, default_value_t = 1_000_000)]
    messages: i64,
    /// Runs of each query (each over a different 30-day window).
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Runs of each straight aggregate.
    #[arg(long, default_value_t = 5)]
    scans: usize,
    /// The server; a database `cc_bench_analytics` is made on it.
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://root@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
    /// Keep the loaded database (and reuse it next time).
    #[arg(long)]
    keep: bool,
}

const DATABASE: &str = "cc_bench_analytics";
/// Seconds between one message and the next across the whole load: a million
/// messages span a year.
const SPACING_SECS: i64 = 31;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let url = match options.admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{DATABASE}"),
        None => format!("{}/{DATABASE}", options.admin_url),
    };
    let mut admin = PgConnection::connect(&options.admin_url)
        .await
        .context("connecting to PostgreSQL (TEST_DATABASE_URL)")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut admin)
            .await?;
    let mut loaded = false;
    if exists && options.keep {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM communications")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        loaded = count == options.messages;
        pool.close().await;
    }
    if !loaded {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
            .execute(&mut admin)
            .await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    if !loaded {
        db::migrate(&pool).await?;
        load(&pool, options.messages).await?;
    }
    let outcome = measure(&pool, &options).await;
    pool.close().await;
    if !options.keep {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    outcome
}

/// Row `g` is message `g % 10` of conversation `g / 10`, written in time order so the
/// triggers see each conversation as it happened.
async fn load(pool: &PgPool, messages: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    let batch = 50_000i64;
    let mut from = 0i64;
    while from < messages {
        let to = (from + batch).min(messages);
        sqlx::query(
            "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role,
                 message, status, created_at, read_at)
             SELECT gen_random_uuid(), 'cust-' || (g / 10), channel, direction, sender, role,
                    'text', CASE WHEN direction = 'inbound' THEN 'delivered' ELSE 'sent' END,
                    at, CASE WHEN direction = 'outbound' AND channel = 'inapp' AND g % 3 <> 0
                             THEN at + interval '5 minutes' END
             FROM (
                 SELECT g, at,
                        (ARRAY['inapp','inapp','sms','email'])[1 + (g / 10) % 4] AS channel,
                        CASE WHEN step IN (0, 1, 3, 6) OR (step = 9 AND g % 7 = 0)
                             THEN 'inbound' ELSE 'outbound' END AS direction,
                        CASE WHEN step IN (0, 1, 3, 6) OR (step = 9 AND g % 7 = 0)
                             THEN 'user-of-cust-' || (g / 10)
                             WHEN step = 8 THEN 'dispatch'
                             WHEN (g / 10) % 10 = 0 THEN 'crew-' || (g / 10) % 40
                             ELSE 'staff-' || (g * 7919) % 50 END AS sender,
                        CASE WHEN step IN (0, 1, 3, 6) OR (step = 9 AND g % 7 = 0) THEN 'customer'
                             WHEN step = 8 THEN 'system'
                             WHEN (g / 10) % 10 = 0 THEN 'crew'
                             ELSE 'staff' END AS role
                 FROM (SELECT g, g % 10 AS step,
                              now() - make_interval(secs => ($3 - g) * $4::float8)
                                    + make_interval(secs => (g * 104729) % 29) AS at
                       FROM generate_series($1::bigint, $2::bigint - 1) AS g) s
             ) m
             ORDER BY g",
        )
        .bind(from)
        .bind(to)
        .bind(messages)
        .bind(SPACING_SECS as f64)
        .execute(pool)
        .await?;
        from = to;
        eprintln!("loaded {from} communications ({:.0?})", started.elapsed());
    }
    // A tenth of the conversations were closed at some point.
    sqlx::query(
        "UPDATE conversations SET status = 'closed', updated_by = 'staff-1'
         WHERE abs(hashtext(customer_id)) % 10 = 0",
    )
    .execute(pool)
    .await?;
    for table in [
        "communications",
        "conversations",
        "conversation_transitions",
    ] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(pool)
            .await?;
    }
    eprintln!("loaded and analysed in {:.0?}", started.elapsed());
    Ok(())
}

/// A latency summary in milliseconds.
struct Latency {
    p50: f64,
    p99: f64,
}

fn latency(histogram: &Histogram<u64>) -> Latency {
    Latency {
        p50: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99: histogram.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record((elapsed.as_micros() as u64).max(1));
}

/// The `i`th 30-day window: spread over the loaded span, each one different.
fn window(i: usize, (first, last): (DateTime<Utc>, DateTime<Utc>)) -> Range {
    let room = (last - first - chrono::Duration::days(30)).max(chrono::Duration::zero());
    let from = first + room * ((i as i32 * 7919) % 1000) / 1000;
    Range {
        from,
        to: from + chrono::Duration::days(30),
        tz: "UTC".to_owned(),
    }
}

async fn measure(pool: &PgPool, options: &Options) -> anyhow::Result<()> {
    let loaded_from: (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT min(created_at), max(created_at) FROM communications")
            .fetch_one(pool)
            .await?;
    // Warm the caches the way a running system has them.
    for i in 0..3 {
        analytics::summary(pool, &window(i, loaded_from), None).await?;
    }
    let in_window: i64 = {
        let range = window(0, loaded_from);
        sqlx::query_scalar(
            "SELECT count(*) FROM communications WHERE created_at >= $1 AND created_at < $2",
        )
        .bind(range.from)
        .bind(range.to)
        .fetch_one(pool)
        .await?
    };
    println!(
        "analytics over {} communications, a 30-day range (~{in_window} messages), {} runs each",
        options.messages, options.queries
    );
    println!(
        "{:<26} {:>9} {:>9} {:>12} {:>12} {:>9}",
        "endpoint", "p50 ms", "p99 ms", "straight p50", "straight p99", "speed-up"
    );
    for endpoint in ["summary", "volume (day)", "response-times (staff)"] {
        let mut kept = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for i in 0..options.queries {
            let range = window(i, loaded_from);
            let started = Instant::now();
            match endpoint {
                "summary" => drop(analytics::summary(pool, &range, None).await?),
                "volume (day)" => {
                    drop(analytics::volume(pool, &range, Bucket::Day, None, None).await?);
                }
                _ => {
                    drop(analytics::response_times(pool, &range, GroupBy::Staff, None, 100).await?)
                }
            }
            record(&mut kept, started.elapsed());
        }
        let mut straight = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for i in 0..options.scans {
            let range = window(i, loaded_from);
            let started = Instant::now();
            match endpoint {
                "summary" => drop(straight_summary(pool, &range).await?),
                "volume (day)" => drop(straight_volume(pool, &range).await?),
                _ => drop(straight_per_staff(pool, &range).await?),
            }
            record(&mut straight, started.elapsed());
        }
        let (k, s) = (latency(&kept), latency(&straight));
        println!(
            "{endpoint:<26} {:>9.1} {:>9.1} {:>12.1} {:>12.1} {:>8.1}×",
            k.p50,
            k.p99,
            s.p50,
            s.p99,
            s.p50 / k.p50.max(0.001)
        );
    }
    agree(pool, &window(3, loaded_from)).await?;
    println!("both ways give the same figures (summary, volume, per staff)");
    Ok(())
}

/// The figures both ways compute, as comparable tuples.
type Figures = (
    i64,
    i64,
    i64,
    Option<f64>,
    Option<f64>,
    i64,
    i64,
    Option<f64>,
    i64,
);

/// Every figure from the raw rows: each customer message's answer by a subquery, its
/// opening by whether an earlier customer message exists (the load reopens nothing),
/// whether it was left unanswered by a close from the conversation's transitions (the
/// load closes conversations after their last message).
async fn straight_summary(pool: &PgPool, range: &Range) -> sqlx::Result<Figures> {
    let row = sqlx::query(
        "WITH m AS (
             SELECT c.direction, c.read_at, awaits_answer(c.type, c.direction, c.sender_role) AS awaits,
                    extract(epoch FROM a.created_at - c.created_at)::float8 AS wait,
                    EXISTS (SELECT FROM conversation_transitions t
                            WHERE t.customer_id = c.customer_id AND t.at >= c.created_at
                              AND t.to_status IN ('closed', 'archived')) AS closed,
                    NOT EXISTS (SELECT FROM communications e
                                WHERE e.customer_id = c.customer_id AND e.created_at < c.created_at
                                  AND awaits_answer(e.type, e.direction, e.sender_role)) AS opens
             FROM communications c
             LEFT JOIN LATERAL (
                 SELECT created_at FROM communications a
                 WHERE a.customer_id = c.customer_id AND a.created_at >= c.created_at
                   AND is_answer(a.direction, a.sender_role, a.visibility, a.deleted_at)
                 ORDER BY a.created_at LIMIT 1) a ON awaits_answer(c.type, c.direction, c.sender_role)
             WHERE c.visibility = 'public' AND c.deleted_at IS NULL
               AND c.created_at >= $1 AND c.created_at < $2)
         SELECT count(*) FILTER (WHERE direction = 'inbound'),
                count(*) FILTER (WHERE direction = 'outbound'),
                count(wait) FILTER (WHERE awaits),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY wait) FILTER (WHERE awaits),
                percentile_cont(0.9) WITHIN GROUP (ORDER BY wait) FILTER (WHERE awaits),
                count(*) FILTER (WHERE awaits AND wait IS NULL AND NOT closed),
                count(wait) FILTER (WHERE awaits AND opens),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY wait) FILTER (WHERE awaits AND opens),
                count(read_at) FILTER (WHERE direction = 'outbound')
         FROM m",
    )
    .bind(range.from)
    .bind(range.to)
    .fetch_one(pool)
    .await?;
    Ok((
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        row.get(7),
        row.get(8),
    ))
}

/// Messages per day, grouped from the table itself (no kept buckets, no covering index).
async fn straight_volume(pool: &PgPool, range: &Range) -> sqlx::Result<Vec<(i64, i64)>> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE direction = 'inbound'),
                count(*) FILTER (WHERE direction = 'outbound')
         FROM (SELECT direction, message, created_at FROM communications
               WHERE visibility = 'public' AND deleted_at IS NULL
                 AND created_at >= $1 AND created_at < $2) m
         GROUP BY date_trunc('day', created_at AT TIME ZONE 'UTC') ORDER BY 1",
    )
    .bind(range.from)
    .bind(range.to)
    .fetch_all(pool)
    .await
}

/// Answers per staff member, each customer message's answer found by a subquery.
async fn straight_per_staff(
    pool: &PgPool,
    range: &Range,
) -> sqlx::Result<Vec<(String, i64, Option<f64>)>> {
    sqlx::query_as(
        "SELECT a.sender_id, count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.created_at - c.created_at)::float8)
         FROM communications c
         JOIN LATERAL (
             SELECT sender_id, created_at FROM communications a
             WHERE a.customer_id = c.customer_id AND a.created_at >= c.created_at
               AND is_answer(a.direction, a.sender_role, a.visibility, a.deleted_at)
             ORDER BY a.created_at LIMIT 1) a ON true
         WHERE c.visibility = 'public' AND c.deleted_at IS NULL
           AND c.created_at >= $1 AND c.created_at < $2
           AND awaits_answer(c.type, c.direction, c.sender_role)
         GROUP BY a.sender_id ORDER BY count(*) DESC, a.sender_id LIMIT 100",
    )
    .bind(range.from)
    .bind(range.to)
    .fetch_all(pool)
    .await
}

/// The kept figures and the straight ones must be the same.
async fn agree(pool: &PgPool, range: &Range) -> anyhow::Result<()> {
    let kept = analytics::summary(pool, range, None).await?.all;
    let straight = straight_summary(pool, range).await?;
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
        (a, b) => a == b,
    };
    ensure!(
        (kept.inbound, kept.outbound, kept.response_seconds.answered)
            == (straight.0, straight.1, straight.2)
            && close(kept.response_seconds.median, straight.3)
            && close(kept.response_seconds.p90, straight.4)
            && kept.response_seconds.unanswered == straight.5
            && kept.first_response_seconds.answered == straight.6
            && close(kept.first_response_seconds.median, straight.7)
            && kept.read_rate.read == straight.8,
        "the summary disagrees with the straight aggregate: {kept:?} vs {straight:?}"
    );
    let volume: Vec<(i64, i64)> = analytics::volume(pool, range, Bucket::Day, None, None)
        .await?
        .into_iter()
        .filter(|p| p.total > 0)
        .map(|p| (p.inbound, p.outbound))
        .collect();
    let mut straight_days = straight_volume(pool, range).await?;
    let mut kept_days = volume.clone();
    straight_days.sort_unstable();
    kept_days.sort_unstable();
    ensure!(kept_days == straight_days, "the volume disagrees");
    let per_staff: Vec<(String, i64, Option<f64>)> =
        analytics::response_times(pool, range, GroupBy::Staff, None, 100)
            .await?
            .into_iter()
            .map(|g| {
                (
                    g.key,
                    g.response_seconds.answered,
                    g.response_seconds.median,
                )
            })
            .collect();
    let straight = straight_per_staff(pool, range).await?;
    ensure!(
        per_staff.len() == straight.len()
            && per_staff
                .iter()
                .zip(&straight)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && close(a.2, b.2)),
        "the per-staff figures disagree"
    );
    Ok(())
}
