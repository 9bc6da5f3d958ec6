//! Reaching a customer who is not in the portal: their own addresses and preferences,
//! and the fallback of the in-app messages they leave unread to SMS or email.
//!
//! The fallback sweep ([`send_due_fallbacks`]) runs on the workers' clock. For each
//! customer with a fallback channel, outside their quiet hours, it takes the outbound
//! in-app messages nobody on their side has received (no delivered or read receipt)
//! that are older than their delay, rows locked and skipped when another worker holds
//! them, and writes one SMS or email carrying them all (a digest when there are
//! several) with its send job, marking each message with it, in one transaction. So a
//! message falls back once. The send itself checks again, just before it calls the
//! provider ([`still_unread`]): read meanwhile, nothing is sent.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    domain::communications::{
        Channel, Composed, EmailThread, Outbound, Sender,
        outbound::{self},
        writes,
    },
    domain::contact::Mailbox,
    domain::{CustomerId, Direction, Invalid, Visibility},
};

/// Where an unread in-app message goes on to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FallbackChannel {
    Sms,
    Email,
    None,
}

impl FallbackChannel {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "sms" => Ok(Self::Sms),
            "email" => Ok(Self::Email),
            "none" => Ok(Self::None),
            other => Err(Invalid(format!(
                "fallback must be sms, email or none, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Email => "email",
            Self::None => "none",
        }
    }
}

crate::domain::text_column!(FallbackChannel);

/// Local times during which nothing falls back; it waits for their end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    /// `HH:MM`, local.
    pub start: String,
    pub end: String,
    /// An IANA name (`Europe/Paris`).
    pub time_zone: String,
}

/// A customer's contact and fallback preferences.
#[derive(Debug, Clone, Serialize)]
pub struct Preferences {
    pub customer_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub fallback: FallbackChannel,
    pub quiet_hours: Option<QuietHours>,
    /// Seconds an in-app message stays unread before it falls back (none: the
    /// `FALLBACK_AFTER_SECS` default).
    pub fallback_after_secs: Option<i32>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

type PreferencesRow = (
    String,
    Option<String>,
    Option<String>,
    FallbackChannel,
    Option<NaiveTime>,
    Option<NaiveTime>,
    Option<String>,
    Option<i32>,
    String,
    DateTime<Utc>,
);

fn preferences(row: PreferencesRow) -> Preferences {
    let (customer_id, email, phone, fallback, start, end, time_zone, after, by, at) = row;
    let quiet_hours = match (start, end, time_zone) {
        (Some(start), Some(end), Some(time_zone)) => Some(QuietHours {
            start: start.format("%H:%M").to_string(),
            end: end.format("%H:%M").to_string(),
            time_zone,
        }),
        _ => None,
    };
    Preferences {
        customer_id,
        email,
        phone,
        fallback,
        quiet_hours,
        fallback_after_secs: after,
        updated_by: by,
        updated_at: at,
    }
}

const PREFERENCES_COLUMNS: &str = "customer_id, email, phone, fallback, quiet_start, quiet_end,
    time_zone, fallback_after_secs, updated_by, updated_at";

pub async fn find(
    conn: &mut PgConnection,
    customer: &CustomerId,
) -> sqlx::Result<Option<Preferences>> {
    let row: Option<PreferencesRow> = sqlx::query_as(&format!(
        "SELECT {PREFERENCES_COLUMNS} FROM customer_preferences WHERE customer_id = $1"
    ))
    .bind(customer.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(preferences))
}

/// What a customer's preferences are set to (checked by the caller).
pub struct NewPreferences<'a> {
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub fallback: FallbackChannel,
    pub quiet_hours: Option<(NaiveTime, NaiveTime, &'a str)>,
    pub fallback_after_secs: Option<i32>,
}

/// Replaces the customer's preferences; their addresses are remembered as theirs, so
/// inbound SMS and email from them land in their conversation.
pub async fn save(
    conn: &mut PgConnection,
    customer: &CustomerId,
    p: &NewPreferences<'_>,
    by: &str,
) -> sqlx::Result<Preferences> {
    let row: PreferencesRow = sqlx::query_as(&format!(
        "INSERT INTO customer_preferences (customer_id, email, phone, fallback, quiet_start,
                                           quiet_end, time_zone, fallback_after_secs, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (customer_id) DO UPDATE
             SET email = EXCLUDED.email, phone = EXCLUDED.phone, fallback = EXCLUDED.fallback,
                 quiet_start = EXCLUDED.quiet_start, quiet_end = EXCLUDED.quiet_end,
                 time_zone = EXCLUDED.time_zone, fallback_after_secs = EXCLUDED.fallback_after_secs,
                 updated_by = EXCLUDED.updated_by, updated_at = now()
         RETURNING {PREFERENCES_COLUMNS}"
    ))
    .bind(customer.as_str())
    .bind(p.email)
    .bind(p.phone)
    .bind(p.fallback)
    .bind(p.quiet_hours.map(|q| q.0))
    .bind(p.quiet_hours.map(|q| q.1))
    .bind(p.quiet_hours.map(|q| q.2))
    .bind(p.fallback_after_secs)
    .bind(by)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(email) = p.email {
        crate::domain::contact::remember(
            conn,
            crate::domain::contact::ContactKind::Email,
            email,
            customer,
        )
        .await?;
    }
    if let Some(phone) = p.phone {
        crate::domain::contact::remember(
            conn,
            crate::domain::contact::ContactKind::Phone,
            phone,
            customer,
        )
        .await?;
    }
    Ok(preferences(row))
}

/// Is `name` a time zone PostgreSQL (which does the quiet-hours arithmetic) knows?
pub async fn is_time_zone(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
}

/// What the sweep needs beside the database.
#[derive(Debug, Clone)]
pub struct FallbackSettings {
    /// `FALLBACK_AFTER_SECS`: a customer's delay when they set none.
    pub default_after: Duration,
    /// `PORTAL_URL`: linked from every fallback, when set.
    pub portal_url: Option<String>,
    /// RingCentral's number and Gmail's mailbox, when configured: a customer whose
    /// channel cannot be sent on waits (and the log says why).
    pub sms_from: Option<String>,
    pub email_from: Option<String>,
    pub max_attempts: i32,
}

/// What the sweep considers unread: outbound public in-app messages with no delivered
/// or read receipt, not yet fallen back, not deleted (the partial index's predicate),
/// and not failed.
const AWAITING: &str = "c.type = 'inapp' AND c.direction = 'outbound' AND c.visibility = 'public'
    AND c.delivered_at IS NULL AND c.fallback_id IS NULL AND c.deleted_at IS NULL
    AND c.status IN ('queued', 'sent')";

/// The longest SMS text a fallback writes (four segments; RingCentral takes 1000).
const SMS_MAX_CHARS: usize = 640;

/// A customer with messages due: id, channel, email, phone, delay in seconds.
type DueCustomer = (
    CustomerId,
    FallbackChannel,
    Option<String>,
    Option<String>,
    i32,
);

/// One sweep as of `now` (the workers pass the clock; tests a time of their own):
/// answers how many fallbacks it wrote.
pub async fn send_due_fallbacks(
    pool: &PgPool,
    now: DateTime<Utc>,
    settings: &FallbackSettings,
) -> sqlx::Result<usize> {
    let due: Vec<DueCustomer> = sqlx::query_as(&format!(
        "SELECT p.customer_id, p.fallback, p.email, p.phone,
                    coalesce(p.fallback_after_secs, $2)
             FROM customer_preferences p
             WHERE p.fallback <> 'none'
               AND NOT coalesce(
                   CASE WHEN p.quiet_start < p.quiet_end
                        THEN ($1 AT TIME ZONE p.time_zone)::time >= p.quiet_start
                             AND ($1 AT TIME ZONE p.time_zone)::time < p.quiet_end
                        ELSE ($1 AT TIME ZONE p.time_zone)::time >= p.quiet_start
                             OR ($1 AT TIME ZONE p.time_zone)::time < p.quiet_end
                   END, false)
               AND EXISTS (SELECT 1 FROM communications c
                           WHERE c.customer_id = p.customer_id AND {AWAITING}
                             AND c.created_at < $1 - make_interval(
                                 secs => coalesce(p.fallback_after_secs, $2)))
             ORDER BY p.customer_id
             LIMIT 200"
    ))
    .bind(now)
    .bind(settings.default_after.as_secs() as i32)
    .fetch_all(pool)
    .await?;
    let mut written = 0;
    for (customer, channel, email, phone, after_secs) in due {
        let (address, from) = match channel {
            FallbackChannel::Sms => (phone, settings.sms_from.as_deref()),
            FallbackChannel::Email => (email, settings.email_from.as_deref()),
            FallbackChannel::None => continue,
        };
        let (Some(address), Some(from)) = (address, from) else {
            tracing::warn!(customer = %customer, channel = channel.as_str(), "cannot fall back: the channel is not configured here");
            continue;
        };
        let cutoff = now - chrono::Duration::seconds(i64::from(after_secs));
        if fall_back(pool, &customer, channel, &address, from, cutoff, settings).await? {
            written += 1;
        }
    }
    Ok(written)
}

/// One customer's fallback, in one transaction; false if another worker took the
/// messages first.
async fn fall_back(
    pool: &PgPool,
    customer: &CustomerId,
    channel: FallbackChannel,
    address: &str,
    from: &str,
    cutoff: DateTime<Utc>,
    settings: &FallbackSettings,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let unread: Vec<(Uuid, String, Value)> = sqlx::query_as(&format!(
        "SELECT c.id, c.message, c.attachments FROM communications c
         WHERE c.customer_id = $1 AND {AWAITING} AND c.created_at < $2
         ORDER BY c.created_at, c.id
         FOR UPDATE SKIP LOCKED"
    ))
    .bind(customer.as_str())
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await?;
    if unread.is_empty() {
        return Ok(false);
    }
    let carried: Vec<Uuid> = unread.iter().map(|(id, _, _)| *id).collect();
    let (text, subject) = compose(&unread, channel, settings.portal_url.as_deref());
    let recipient;
    let channel_to = match channel {
        FallbackChannel::Email => {
            recipient = [Mailbox::parse(address).map_err(|e| sqlx::Error::Decode(e.into()))?];
            Channel::Email {
                recipients: &recipient,
                from,
                thread: EmailThread::default(),
            }
        }
        _ => Channel::Sms { to: address, from },
    };
    let composed = Composed {
        subject,
        ..Composed::text(text)
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("fallback_for".into(), json!(carried));
    let (fallback, _) = outbound::record(
        &mut tx,
        &Outbound {
            customer_id: customer,
            sender: Sender::system("fallback"),
            direction: Direction::Outbound,
            visibility: Visibility::Public,
            project_id: None,
            composed: &composed,
            attachments: json!([]),
            metadata,
            channel: channel_to,
            // The customer's own preferences named the address.
            customer_addresses: false,
        },
        settings.max_attempts,
    )
    .await?;
    let id = fallback.id;
    writes::link_fallback(&mut tx, &carried, id, channel.as_str()).await?;
    tx.commit().await?;
    tracing::info!(customer = %customer, fallback = %id, channel = channel.as_str(), messages = carried.len(), "unread messages fell back");
    Ok(true)
}

/// The fallback's text (and an email's subject): the message itself, or a numbered
/// digest, each with its files counted, and the portal's link; an SMS trimmed to fit.
fn compose(
    unread: &[(Uuid, String, Value)],
    channel: FallbackChannel,
    portal_url: Option<&str>,
) -> (String, Option<String>) {
    let line = |message: &str, attachments: &Value| {
        let files = attachments.as_array().map_or(0, Vec::len);
        match (message.trim(), files) {
            ("", 0) => String::new(),
            ("", 1) => "(a file)".to_owned(),
            ("", n) => format!("({n} files)"),
            (text, 0) => text.to_owned(),
            (text, 1) => format!("{text} (and a file)"),
            (text, n) => format!("{text} (and {n} files)"),
        }
    };
    let count = unread.len();
    let mut body = if count == 1 {
        line(&unread[0].1, &unread[0].2)
    } else {
        let mut digest = format!("You have {count} unread messages:");
        for (i, (_, message, attachments)) in unread.iter().enumerate() {
            digest.push_str(&format!("\n{}) {}", i + 1, line(message, attachments)));
        }
        digest
    };
    let link = portal_url.map(|url| format!("\nRead and reply: {url}"));
    match channel {
        FallbackChannel::Email => {
            if let Some(link) = &link {
                body.push('\n');
                body.push_str(link);
            }
            let subject = if count == 1 {
                "You have an unread message".to_owned()
            } else {
                format!("You have {count} unread messages")
            };
            (body, Some(subject))
        }
        _ => {
            let link = link.unwrap_or_default();
            let room = SMS_MAX_CHARS.saturating_sub(link.chars().count());
            if body.chars().count() > room {
                body = body
                    .chars()
                    .take(room.saturating_sub(1))
                    .collect::<String>()
                    + "…";
            }
            (body + &link, None)
        }
    }
}

/// Does a fallback still carry something unread? Asked by the send just before it
/// calls the provider. Not a fallback (no `fallback_for`): yes.
pub async fn still_unread(conn: &mut PgConnection, metadata: &Value) -> sqlx::Result<bool> {
    let Some(carried) = metadata.get("fallback_for").and_then(Value::as_array) else {
        return Ok(true);
    };
    let ids: Vec<Uuid> = carried
        .iter()
        .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
        .collect();
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM communications
                        WHERE id = ANY($1) AND status IN ('queued', 'sent') AND deleted_at IS NULL)",
    )
    .bind(&ids)
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unread(messages: &[(&str, usize)]) -> Vec<(Uuid, String, Value)> {
        messages
            .iter()
            .map(|(text, files)| {
                (
                    Uuid::nil(),
                    (*text).to_owned(),
                    json!(vec![json!({}); *files]),
                )
            })
            .collect()
    }

    #[test]
    fn one_message_goes_as_itself_and_several_as_a_digest() {
        let (text, subject) = compose(&unread(&[("See you at 9", 0)]), FallbackChannel::Sms, None);
        assert_eq!(text, "See you at 9");
        assert_eq!(subject, None);
        let (text, subject) = compose(
            &unread(&[("First", 0), ("", 2), ("Third", 1)]),
            FallbackChannel::Email,
            Some("https://portal.example.com"),
        );
        assert_eq!(
            text,
            "You have 3 unread messages:\n1) First\n2) (2 files)\n3) Third (and a file)\n\nRead and reply: https://portal.example.com"
        );
        assert_eq!(subject.as_deref(), Some("You have 3 unread messages"));
    }

    #[test]
    fn an_sms_is_trimmed_to_fit_and_keeps_its_link() {
        let long = "x".repeat(2000);
        let (text, _) = compose(
            &unread(&[(long.as_str(), 0)]),
            FallbackChannel::Sms,
            Some("https://p.example.com"),
        );
        assert_eq!(text.chars().count(), SMS_MAX_CHARS);
        assert!(
            text.ends_with("…\nRead and reply: https://p.example.com"),
            "{text}"
        );
    }
}
