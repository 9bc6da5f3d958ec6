//! `search`: full-text search and the conversation list at size, each beside the
//! original's way of doing it, measured in one run on this machine
//! (`cargo run --release -p commcenter-bench --bin search`).
//!
//! Loads a database of its own (dropped at the end unless `--keep`) with 1,000,000
//! communications over 100,000 conversations: 8 to 20 words each, drawn from a
//! 5,000-word vocabulary with a skewed (Zipf-like) frequency, as text is. Then:
//!
//! - Search (`shared::search::search`, the api's query, one page of 20): p50/p99 of
//!   two-word queries and of phrase queries, words drawn from ranks 20–1,000 of the
//!   vocabulary (not stop-word common, not vanishingly rare), every query different;
//!   beside the original's way, a case-insensitive substring scan (`ILIKE '%word%'` for
//!   each word, or the phrase) of the same queries. Target: p99 < 50 ms and ≥ 50 × the
//!   scan. Two of the 20 most common words are measured too: the worst case, where
//!   thousands of matches are ranked.
//! - Conversations (`shared::store::list_conversations`, a page of 50 with unread
//!   counts, newest activity first): p50/p99 of the first page, of a later page by
//!   cursor and of a status filter, beside the straight aggregate (latest message and
//!   unread count computed from the messages by GROUP BY, sorted).
//!
//! Figures go to stdout as a table; the exit code is 0 unless the bench could not run.

// A reporting tool: stdout is its output.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};

use commcenter_shared::{
    domain::search::{self, SearchQuery},
    domain::store::{self, ConversationListing},
    domain::{ConversationStatus, Direction},
    platform::db,
};

#[derive(Debug, Parser)]
#[command(about = "Search and conversation listing at size, beside the original's way")]
struct Options {
    /// Communications to load.
    #[arg(long, default_value_t = 1_000_000)]
    messages: i64,
    /// Conversations (customers) they are spread over.
    #[arg(long, default_value_t = 100_000)]
    conversations: i64,
    /// Queries of each kind through the index.
    #[arg(long, default_value_t = 300)]
    queries: usize,
    /// Substring scans of each kind (each reads every row).
    #[arg(long, default_value_t = 10)]
    scans: usize,
    /// The server; a database `cc_bench_search` is made on it.
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

const DATABASE: &str = "cc_bench_search";
const VOCABULARY: usize = 5_000;

/// Field-service words first (the common ones), then made-up words for the long tail.
fn vocabulary() -> Vec<String> {
    let common = "roof invoice crew quote gutter estimate schedule arrival window repair \
        payment deposit permit inspection shingle siding paint deck fence driveway \
        concrete plumbing leak pipe drain heater furnace filter vent duct attic \
        insulation garage door lock key gate code tomorrow morning afternoon evening \
        monday tuesday wednesday thursday friday saturday weekend delay weather rain \
        storm damage claim insurance adjuster photo picture receipt contract signature \
        warranty material lumber nail screw bolt ladder truck trailer crane dumpster \
        cleanup debris safety helmet glove boot site address street avenue corner \
        neighbor parking driveway access backyard front porch window glass frame trim \
        molding cabinet counter tile floor carpet hardwood stair railing ceiling light \
        fixture outlet switch breaker panel wire meter solar panel battery charger";
    let mut words: Vec<String> = common.split_whitespace().map(str::to_owned).collect();
    words.dedup();
    let syllables = [
        "ka", "lo", "mi", "ne", "tu", "ra", "po", "si", "de", "gu", "va", "ze", "bo", "fi", "ha",
        "ju", "wi", "xo", "ye", "qu",
    ];
    let mut i = 0usize;
    while words.len() < VOCABULARY {
        let a = syllables[i % syllables.len()];
        let b = syllables[(i / syllables.len()) % syllables.len()];
        let c = syllables[(i / (syllables.len() * syllables.len())) % syllables.len()];
        words.push(format!("{a}{b}{c}n"));
        i += 1;
    }
    words
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let url = replace_database(&options.admin_url, DATABASE);
    let mut admin = PgConnection::connect(&options.admin_url)
        .await
        .context("connecting to PostgreSQL (TEST_DATABASE_URL)")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut admin)
            .await?;
    let pool = PgPoolOptions::new().max_connections(2).connect_lazy(&url)?;
    let loaded = if exists && options.keep {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM communications")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        count == options.messages
    } else {
        false
    };
    if !loaded {
        pool.close().await;
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
        load(&pool, &options).await?;
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

async fn load(pool: &PgPool, options: &Options) -> anyhow::Result<()> {
    let words = vocabulary();
    let started = Instant::now();
    // The trigger keeps each conversation's latest message; a bulk load sets them once
    // at the end instead of once per row.
    sqlx::query("ALTER TABLE communications DISABLE TRIGGER communications_note_message")
        .execute(pool)
        .await?;
    let batch = 100_000i64;
    let mut from = 0i64;
    while from < options.messages {
        let to = (from + batch).min(options.messages);
        // Word i is drawn with probability falling off as a power of its rank.
        sqlx::query(
            "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role,
                 message, status, created_at, read_at)
             SELECT gen_random_uuid(), 'cust-' || (g % $3), 
                 (ARRAY['inapp','inapp','inapp','sms','email'])[1 + g % 5],
                 CASE WHEN g % 2 = 0 THEN 'outbound' ELSE 'inbound' END,
                 'user-' || (g % 50), CASE WHEN g % 2 = 0 THEN 'staff' ELSE 'customer' END,
                 array_to_string(ARRAY(
                     SELECT ($4::text[])[1 + floor($5 * power(random(), 3))::int]
                     FROM generate_series(1, 8 + (g * 7919) % 13) WHERE g >= 0), ' '),
                 CASE WHEN g % 7 = 0 THEN 'sent' ELSE 'read' END,
                 now() - make_interval(secs => ($2 - g) * 30),
                 CASE WHEN g % 7 = 0 THEN NULL ELSE now() END
             FROM generate_series($1::bigint, $2::bigint - 1) AS g",
        )
        .bind(from)
        .bind(to)
        .bind(options.conversations)
        .bind(&words)
        .bind(VOCABULARY as f64)
        .execute(pool)
        .await?;
        from = to;
        eprintln!("loaded {from} communications ({:.0?})", started.elapsed());
    }
    sqlx::query(
        "INSERT INTO conversations (customer_id, status, last_communication_id, last_message_at)
         SELECT DISTINCT ON (customer_id) customer_id,
             (ARRAY['open','open','open','closed','archived'])[1 + abs(hashtext(customer_id)) % 5],
             id, created_at
         FROM communications ORDER BY customer_id, created_at DESC, id DESC",
    )
    .execute(pool)
    .await?;
    sqlx::query("ALTER TABLE communications ENABLE TRIGGER communications_note_message")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE communications")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE conversations")
        .execute(pool)
        .await?;
    eprintln!("loaded and analysed in {:.0?}", started.elapsed());
    Ok(())
}

/// A latency summary in milliseconds.
struct Latency {
    p50: f64,
    p99: f64,
    n: u64,
}

fn summary(histogram: &Histogram<u64>) -> Latency {
    Latency {
        p50: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        n: histogram.len(),
    }
}

/// Microseconds, from 1 µs to 10 minutes.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record((elapsed.as_micros() as u64).max(1));
}

/// Pseudo-random and repeatable: the same queries every run.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A word of rank 20 to 1,000: neither near-universal nor vanishingly rare.
    fn word<'a>(&mut self, words: &'a [String]) -> &'a str {
        &words[20 + (self.next() % 980) as usize]
    }
    /// One of the 20 most common words (each in several percent of all messages).
    fn common_word<'a>(&mut self, words: &'a [String]) -> &'a str {
        &words[(self.next() % 20) as usize]
    }
}

async fn measure(pool: &PgPool, options: &Options) -> anyhow::Result<()> {
    let words = vocabulary();
    let mut conn = pool.acquire().await?;
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
    let mut two_words: Vec<(String, Vec<String>)> = Vec::new();
    let mut phrases: Vec<(String, Vec<String>)> = Vec::new();
    let mut common: Vec<(String, Vec<String>)> = Vec::new();
    for _ in 0..options.queries {
        let (a, b) = (draw.common_word(&words), draw.common_word(&words));
        common.push((format!("{a} {b}"), vec![a.to_owned(), b.to_owned()]));
        let (a, b) = (draw.word(&words), draw.word(&words));
        two_words.push((format!("{a} {b}"), vec![a.to_owned(), b.to_owned()]));
        let (a, b) = (draw.word(&words), draw.word(&words));
        phrases.push((format!("\"{a} {b}\""), vec![format!("{a} {b}")]));
    }
    // Warm the caches the way a running system has them.
    for (query, _) in two_words.iter().take(20) {
        run_search(&mut conn, query).await?;
    }

    println!(
        "search over {} communications (one page of 20, ranked, highlighted)",
        options.messages
    );
    println!(
        "{:<22} {:>10} {:>10} {:>8} {:>12} {:>12} {:>8} {:>9}",
        "query", "p50 ms", "p99 ms", "hits/q", "scan p50", "scan p99", "scans", "speed-up"
    );
    for (label, queries) in [
        ("two words", &two_words),
        ("phrase", &phrases),
        ("two common words", &common),
    ] {
        let mut indexed = histogram()?;
        let mut hits = 0usize;
        for (query, _) in queries.iter() {
            let started = Instant::now();
            hits += run_search(&mut conn, query).await?;
            record(&mut indexed, started.elapsed());
        }
        let mut scanned = histogram()?;
        for (_, patterns) in queries.iter().take(options.scans) {
            let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let started = Instant::now();
            substring_scan(&mut conn, &patterns, 20).await?;
            record(&mut scanned, started.elapsed());
        }
        let (i, s) = (summary(&indexed), summary(&scanned));
        println!(
            "{:<22} {:>10.2} {:>10.2} {:>8.1} {:>12.1} {:>12.1} {:>8} {:>8.0}×",
            label,
            i.p50,
            i.p99,
            hits as f64 / i.n as f64,
            s.p50,
            s.p99,
            s.n,
            s.p50 / i.p50.max(0.001)
        );
    }

    println!(
        "\nconversations ({} of them; a page of 50 with unread counts)",
        options.conversations
    );
    println!(
        "{:<22} {:>10} {:>10} {:>12} {:>12} {:>9}",
        "listing", "p50 ms", "p99 ms", "agg p50", "agg p99", "speed-up"
    );
    let page_two = store::list_conversations(&mut conn, &listing(None, None, 51))
        .await?
        .last()
        .map(|c| (c.activity_at, c.customer_id.clone()));
    for (label, status, before) in [
        ("first page", None, None),
        ("second page", None, page_two.clone()),
        ("status closed", Some(ConversationStatus::Closed), None),
    ] {
        let mut indexed = histogram()?;
        for _ in 0..options.queries {
            let started = Instant::now();
            store::list_conversations(&mut conn, &listing(status, before.clone(), 51)).await?;
            record(&mut indexed, started.elapsed());
        }
        let mut aggregated = histogram()?;
        for _ in 0..options.scans {
            let started = Instant::now();
            straight_aggregate(&mut conn, status).await?;
            record(&mut aggregated, started.elapsed());
        }
        let (i, a) = (summary(&indexed), summary(&aggregated));
        println!(
            "{:<22} {:>10.2} {:>10.2} {:>12.1} {:>12.1} {:>8.0}×",
            label,
            i.p50,
            i.p99,
            a.p50,
            a.p99,
            a.p50 / i.p50.max(0.001)
        );
    }
    Ok(())
}

fn listing(
    status: Option<ConversationStatus>,
    before: Option<(chrono::DateTime<chrono::Utc>, String)>,
    limit: i64,
) -> ConversationListing<'static> {
    ConversationListing {
        status,
        customer_id: None,
        unread_direction: Direction::Inbound,
        before,
        limit,
    }
}

async fn run_search(conn: &mut PgConnection, query: &str) -> anyhow::Result<usize> {
    let hits = search::search(
        conn,
        &SearchQuery {
            query,
            customer_id: None,
            communication_type: None,
            direction: None,
            status: None,
            from: None,
            until: None,
            has_attachments: None,
            public_only: false,
            after: None,
            limit: 21,
        },
    )
    .await?;
    Ok(hits.len())
}

/// The conversation list without the kept latest message and its indexes: each
/// conversation's latest message and unread count from every message, then sorted.
async fn straight_aggregate(
    conn: &mut PgConnection,
    status: Option<ConversationStatus>,
) -> anyhow::Result<()> {
    sqlx::query(
        "SELECT c.customer_id, c.status, l.id, l.message, l.created_at, l.unread
         FROM conversations c
         JOIN (SELECT customer_id,
                      (array_agg(id ORDER BY created_at DESC))[1] AS id,
                      (array_agg(message ORDER BY created_at DESC))[1] AS message,
                      max(created_at) AS created_at,
                      count(*) FILTER (WHERE direction = 'inbound' AND read_at IS NULL) AS unread
               FROM communications GROUP BY customer_id) l ON l.customer_id = c.customer_id
         WHERE ($1::text IS NULL OR c.status = $1)
         ORDER BY l.created_at DESC, c.customer_id DESC
         LIMIT 51",
    )
    .bind(status.map(ConversationStatus::as_str))
    .fetch_all(conn)
    .await?;
    Ok(())
}

/// The original's way, the baseline: a case-insensitive substring scan of every message
/// for each word (or the phrase), newest first.
async fn substring_scan(
    conn: &mut PgConnection,
    words: &[&str],
    limit: i64,
) -> sqlx::Result<Vec<uuid::Uuid>> {
    let patterns: Vec<String> = words
        .iter()
        .map(|w| {
            format!(
                "%{}%",
                w.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        })
        .collect();
    sqlx::query_scalar(
        "SELECT id FROM communications
         WHERE message ILIKE ALL ($1)
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(&patterns)
    .bind(limit)
    .fetch_all(conn)
    .await
}

fn replace_database(url: &str, database: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => format!("{url}/{database}"),
    }
}
