//! Full-text search over communications: PostgreSQL's text search on the generated
//! `search_document` (subject, text, attachment file names, the other party's
//! address, weighted in that order; see the migration), queried with
//! `websearch_to_tsquery` (words, "quoted phrases", -exclusions, OR) under English
//! stemming, ranked (among the newest [`RANKED_MATCHES`] matches), with the matched
//! words marked in an HTML-escaped snippet.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::{
    domain::communications::{COLUMNS as COMMUNICATION_COLUMNS, Communication},
    domain::{CommunicationStatus, CommunicationType, CustomerId, Direction},
};

/// What to search for, and in what.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    /// Web-search syntax.
    pub query: &'a str,
    pub customer_id: Option<&'a CustomerId>,
    pub communication_type: Option<CommunicationType>,
    pub direction: Option<Direction>,
    pub status: Option<CommunicationStatus>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    pub has_attachments: Option<bool>,
    /// Leave out internal notes (a customer's search).
    pub public_only: bool,
    /// Strictly after this (rank, created_at, id) in the ranked order: the cursor.
    pub after: Option<(f32, DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct Hit {
    #[sqlx(flatten)]
    pub communication: Communication,
    pub rank: f32,
    /// The text with the matched words in `<mark>…</mark>`, everything else escaped.
    pub highlight: String,
}

/// Does the query have anything to search for? Stop words alone (`the`, `and`) and
/// punctuation do not.
pub async fn has_terms(conn: &mut PgConnection, query: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT numnode(websearch_to_tsquery('english', $1)) > 0")
        .bind(query)
        .fetch_one(conn)
        .await
}

/// How many of the newest matches are ranked. A query of words in most messages would
/// otherwise read and rank hundreds of thousands of rows; bounded, the planner walks
/// the newest messages until it has this many matches (or, for rarer words, takes them
/// all from the GIN index), and the ranking is of those.
pub const RANKED_MATCHES: i64 = 1000;

/// The best matches first (rank, then newest) among the newest [`RANKED_MATCHES`], one
/// page.
pub async fn search(conn: &mut PgConnection, q: &SearchQuery<'_>) -> sqlx::Result<Vec<Hit>> {
    // Only the page's rows are highlighted, which is the costly part. The query text is
    // written out where it is used (not in a CTE), and the statement is planned with
    // its values (not persistent): how common the words are decides the plan.
    let sql = format!(
        "WITH candidates AS (
             SELECT c.* FROM communications c
             WHERE c.search_document @@ websearch_to_tsquery('english', $1)
               AND ($2::text IS NULL OR c.customer_id = $2)
               AND ($3::text IS NULL OR c.type = $3)
               AND ($4::text IS NULL OR c.direction = $4)
               AND ($5::text IS NULL OR c.status = $5)
               AND ($6::timestamptz IS NULL OR c.created_at >= $6)
               AND ($7::timestamptz IS NULL OR c.created_at < $7)
               AND ($8::boolean IS NULL OR (jsonb_array_length(c.attachments) > 0) = $8)
               AND (NOT $14 OR c.visibility = 'public')
             ORDER BY c.created_at DESC, c.id DESC
             LIMIT $13
         ),
         page AS (
             SELECT *, ts_rank(search_document, websearch_to_tsquery('english', $1)) AS rank
             FROM candidates
         ),
         ranked AS (
             SELECT * FROM page
             WHERE $9::real IS NULL OR (rank, created_at, id) < ($9, $10, $11)
             ORDER BY rank DESC, created_at DESC, id DESC
             LIMIT $12
         )
         SELECT {COMMUNICATION_COLUMNS}, rank,
             -- A short text whole; a long one as up to two fragments around the matches.
             ts_headline('english', e.escaped, websearch_to_tsquery('english', $1),
                 CASE WHEN length(e.escaped) <= 400
                     THEN 'StartSel=<mark>, StopSel=</mark>, HighlightAll=true'
                     ELSE 'StartSel=<mark>, StopSel=</mark>, MaxWords=30, MinWords=12, MaxFragments=2, FragmentDelimiter=\" … \"'
                 END) AS highlight
         FROM ranked,
             LATERAL (SELECT replace(replace(replace(replace(replace(
                 coalesce(nullif(message, ''), subject, ''),
                 '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '\"', '&quot;'), '''', '&#39;') AS escaped) e
         ORDER BY rank DESC, created_at DESC, id DESC"
    );
    sqlx::query_as(&sql)
        .persistent(false)
        .bind(q.query)
        .bind(q.customer_id.map(CustomerId::as_str))
        .bind(q.communication_type.map(CommunicationType::as_str))
        .bind(q.direction.map(Direction::as_str))
        .bind(q.status.map(CommunicationStatus::as_str))
        .bind(q.from)
        .bind(q.until)
        .bind(q.has_attachments)
        .bind(q.after.map(|a| a.0))
        .bind(q.after.map(|a| a.1))
        .bind(q.after.map(|a| a.2))
        .bind(q.limit)
        .bind(RANKED_MATCHES)
        .bind(q.public_only)
        .fetch_all(conn)
        .await
}
