//! The Communication Center itself. At the root, the newtypes parsed at the boundary:
//! once built, a value is known to be valid (ids, roles, statuses); every layer uses
//! them. Beside them:
//!
//! - [`communications`]: every message, email, SMS and call: the row, its reads, what
//!   we send composed one way ([`communications::outbound`]), and every change of its
//!   state with the event it announces ([`communications::writes`]).
//! - [`store`]: conversations, files and blobs.
//! - [`contact`]: the other party's phone number (E.164) or email address, parsed and
//!   normalised, and which customer it belongs to.
//! - [`filetype`]: what an upload is, by its first bytes; safe display and stored names.
//! - [`templates`]: message templates: placeholders found, rendered, stored in versions.
//! - [`search`]: full-text search over communications, ranked and highlighted.
//! - [`reach`]: a customer's own addresses and preferences, and the fallback of unread
//!   in-app messages to SMS or email.
//! - [`crews`]: field crews and members, projects at customers' sites, crews'
//!   positions (and the distance between two of them).
//! - [`dispatch`]: sending a crew: dispatches, acknowledgements, arrival on site, and
//!   every text about it.
//! - [`push`]: Web Push: the VAPID key and people's browser subscriptions.
//! - [`analytics`]: message volume, response times, conversations opened and closed,
//!   read rates, from facts the database keeps as messages are written.

pub mod analytics;
pub mod communications;
pub mod contact;
pub mod crews;
pub mod dispatch;
pub mod filetype;
pub mod push;
pub mod reach;
pub mod search;
pub mod store;
pub mod templates;
pub mod text;

use std::{fmt, str::FromStr};

use phonenumber::country;

use serde::{Deserialize, Serialize};

/// Why a value was refused, in words fit for an API error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Ids of people and customers: 1 to 64 characters of `A-Z a-z 0-9 _ - . @ :`, so they
/// are safe in routing, logs and URLs.
fn parse_id(what: &str, raw: &str) -> Result<String, Invalid> {
    if raw.is_empty() {
        return Err(Invalid(format!("{what} must not be empty")));
    }
    if raw.len() > 64 {
        return Err(Invalid(format!("{what} must be at most 64 characters")));
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':'))
    {
        return Err(Invalid(format!(
            "{what} may contain only letters, digits and _ - . @ :"
        )));
    }
    Ok(raw.to_owned())
}

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, Invalid> {
                parse_id($what, raw).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        // A stored id is read back through `parse`, like every text column: a row
        // holds an id the code can use, never a string to re-parse.
        $crate::domain::text_type!($name, |raw| $name::parse(raw));
    };
}

id_type!(CustomerId, "customer_id");
id_type!(UserId, "user_id");

/// Stores an enum as the `TEXT` its `as_str` gives, and reads it back through its
/// `parse`: a stored value the code does not know is a decode error naming it, never a
/// silent default. `Display` shows the same text.
macro_rules! text_column {
    ($name:ident) => {
        $crate::domain::text_column!($name, |raw| $name::parse(raw));
    };
    ($name:ident, $parse:expr) => {
        $crate::domain::text_type!($name, $parse);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// `TEXT` in PostgreSQL: written as its `as_str`, read back through `parse`.
macro_rules! text_type {
    ($name:ident, $parse:expr) => {
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let raw = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                let parse: fn(&str) -> Result<Self, _> = $parse;
                Ok(parse(raw)?)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }
    };
}

pub(crate) use {text_column, text_type};

text_column!(CommunicationType);
text_column!(Direction);
text_column!(CommunicationStatus);
text_column!(ConversationStatus);
text_column!(Visibility);
text_column!(ProjectStatus);
text_column!(Role);

/// Where an uploaded file is: being hashed and thumbnailed, ready to use, or refused
/// by processing (with the reason on the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Processing,
    Ready,
    Failed,
}

impl FileStatus {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "processing" => Ok(Self::Processing),
            "ready" => Ok(Self::Ready),
            "failed" => Ok(Self::Failed),
            other => Err(Invalid(format!("unknown file status {other:?}"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
}

text_column!(FileStatus);

/// The country a phone number written without `+` is read in (`DEFAULT_PHONE_REGION`,
/// an ISO 3166 alpha-2 code such as `US` or `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneRegion(country::Id);

impl PhoneRegion {
    pub const US: Self = Self(country::Id::US);

    pub(crate) fn country(self) -> country::Id {
        self.0
    }
}

impl Default for PhoneRegion {
    fn default() -> Self {
        Self::US
    }
}

impl FromStr for PhoneRegion {
    type Err = Invalid;

    fn from_str(raw: &str) -> Result<Self, Invalid> {
        raw.trim()
            .to_ascii_uppercase()
            .parse()
            .map(Self)
            .map_err(|_| {
                Invalid(format!(
                    "{raw:?} is not a country code with a phone numbering plan (ISO 3166 alpha-2, e.g. US)"
                ))
            })
    }
}

impl fmt::Display for PhoneRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// Who a caller is, which decides what they may see and do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A customer, through the portal: only their own conversation.
    Customer,
    /// Office staff, through the admin dashboard: every conversation.
    Staff,
    /// A crew member: only what is shared with their crew.
    Crew,
    /// Runs the system: dead letters and replays, and what staff can do.
    Operator,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "customer" => Ok(Self::Customer),
            "staff" => Ok(Self::Staff),
            "crew" => Ok(Self::Crew),
            "operator" => Ok(Self::Operator),
            other => Err(Invalid(format!(
                "role must be customer, staff, crew or operator, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Staff => "staff",
            Self::Crew => "crew",
            Self::Operator => "operator",
        }
    }

    /// Staff and operators act on every customer's conversation.
    pub fn sees_every_customer(self) -> bool {
        matches!(self, Self::Staff | Self::Operator)
    }
}

/// The channel a communication went over. On the wire and in the database these are
/// the original API's words (`inapp`, `sms`, `email`, `phone`); `in_app` and `call`, our
/// earlier words, are still taken as input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommunicationType {
    #[serde(rename = "inapp", alias = "in_app")]
    InApp,
    #[serde(rename = "sms")]
    Sms,
    #[serde(rename = "email")]
    Email,
    #[serde(rename = "phone", alias = "call")]
    Phone,
}

impl CommunicationType {
    pub const ALL: [Self; 4] = [Self::InApp, Self::Sms, Self::Email, Self::Phone];

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "inapp" | "in_app" => Ok(Self::InApp),
            "sms" => Ok(Self::Sms),
            "email" => Ok(Self::Email),
            "phone" | "call" => Ok(Self::Phone),
            other => Err(Invalid(format!(
                "type must be inapp, sms, email or phone, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InApp => "inapp",
            Self::Sms => "sms",
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }

    /// The provider that carries this channel, as the original's `integration` said.
    pub fn integration(self) -> Option<&'static str> {
        match self {
            Self::InApp => None,
            Self::Sms | Self::Phone => Some("ringcentral"),
            Self::Email => Some("gmail"),
        }
    }
}

/// Which way a communication went, seen from the business: `inbound` from the customer,
/// `outbound` to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "inbound" => Ok(Self::Inbound),
            "outbound" => Ok(Self::Outbound),
            other => Err(Invalid(format!(
                "direction must be inbound or outbound, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

pub use text::is_blank;

/// Where a communication is on its way to the other party. Statuses only move forward
/// (queued → sent → delivered → read); `failed` is terminal until an operator replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommunicationStatus {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl CommunicationStatus {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "queued" => Ok(Self::Queued),
            "sent" => Ok(Self::Sent),
            "delivered" => Ok(Self::Delivered),
            "read" => Ok(Self::Read),
            "failed" => Ok(Self::Failed),
            other => Err(Invalid(format!("unknown communication status {other:?}"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }

    /// Position on the forward-only path; a move is allowed only to a higher rank.
    pub fn rank(self) -> i32 {
        match self {
            Self::Queued => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 4,
        }
    }
}

/// The receipts a party can post about a communication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Receipt {
    Delivered,
    Read,
}

impl Receipt {
    pub fn status(self) -> CommunicationStatus {
        match self {
            Self::Delivered => CommunicationStatus::Delivered,
            Self::Read => CommunicationStatus::Read,
        }
    }
}

/// A conversation's state, as staff set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    Open,
    Closed,
    Archived,
}

impl ConversationStatus {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            "archived" => Ok(Self::Archived),
            other => Err(Invalid(format!(
                "status must be open, closed or archived, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Archived => "archived",
        }
    }
}

/// The text of a message: trimmed of nothing, but never blank and never longer than
/// the bound (counted in characters, as the portal counts them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MessageText(String);

impl MessageText {
    pub const MAX_CHARS: usize = 10_000;

    /// Shown to people: [`text::refusal`]'s rule.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match text::refusal(raw, Self::MAX_CHARS) {
            Some(why) => Err(Invalid(format!("message: {why}"))),
            None => Ok(Self(raw.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_empty_long_and_odd_characters() {
        assert!(CustomerId::parse("cust-42").is_ok());
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse(&"x".repeat(65)).is_err());
        assert!(CustomerId::parse("a/b").is_err());
        assert!(UserId::parse("a b").is_err());
    }

    #[test]
    fn statuses_rank_forward_only() {
        use CommunicationStatus::*;
        assert!(Queued.rank() < Sent.rank());
        assert!(Sent.rank() < Delivered.rank());
        assert!(Delivered.rank() < Read.rank());
        assert!(Read.rank() < Failed.rank());
    }

    #[test]
    fn message_text_bounds() {
        assert!(MessageText::parse("hello").is_ok());
        assert!(MessageText::parse("   ").is_err());
        assert!(MessageText::parse(&"é".repeat(MessageText::MAX_CHARS)).is_ok());
        assert!(MessageText::parse(&"é".repeat(MessageText::MAX_CHARS + 1)).is_err());
        assert!(MessageText::parse("a\0b").is_err());
        assert!(MessageText::parse("\u{200B}\u{FEFF} \u{2060}").is_err());
        assert!(MessageText::parse("\u{200B}a").is_ok());
    }

    #[test]
    fn channel_words_are_the_originals_and_the_old_ones_still_parse() {
        for (raw, parsed, wire) in [
            ("inapp", CommunicationType::InApp, "inapp"),
            ("in_app", CommunicationType::InApp, "inapp"),
            ("phone", CommunicationType::Phone, "phone"),
            ("call", CommunicationType::Phone, "phone"),
            ("sms", CommunicationType::Sms, "sms"),
        ] {
            assert_eq!(CommunicationType::parse(raw).unwrap(), parsed);
            assert_eq!(parsed.as_str(), wire);
            let json: CommunicationType = serde_json::from_value(serde_json::json!(raw)).unwrap();
            assert_eq!(json, parsed);
            assert_eq!(serde_json::to_value(parsed).unwrap(), wire);
        }
        assert!(CommunicationType::parse("fax").is_err());
    }
}

/// Who may see a message: everyone in the conversation, or (`internal`) staff and the
/// project's crew only, never the customer, and never through SMS or email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    #[default]
    Public,
    Internal,
}

impl Visibility {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "public" => Ok(Self::Public),
            "internal" => Ok(Self::Internal),
            other => Err(Invalid(format!(
                "visibility must be public or internal, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
        }
    }
}

/// Where a project (a job at a customer's site) is. It moves forward only:
/// scheduled → dispatched → on_site → done; `cancelled` from any state but `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectStatus {
    Scheduled,
    Dispatched,
    OnSite,
    Done,
    Cancelled,
}

impl ProjectStatus {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "scheduled" => Ok(Self::Scheduled),
            "dispatched" => Ok(Self::Dispatched),
            "on_site" => Ok(Self::OnSite),
            "done" => Ok(Self::Done),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(Invalid(format!(
                "status must be scheduled, dispatched, on_site, done or cancelled, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Dispatched => "dispatched",
            Self::OnSite => "on_site",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Cancelled)
    }

    /// Why `self` may not move to `next`, if it may not.
    pub fn refusal(self, next: Self) -> Option<String> {
        let rank = |s: Self| match s {
            Self::Scheduled => 0,
            Self::Dispatched => 1,
            Self::OnSite => 2,
            Self::Done => 3,
            Self::Cancelled => 4,
        };
        let allowed = match next {
            _ if self.is_final() => false,
            Self::Cancelled => true,
            _ => rank(next) > rank(self),
        };
        (!allowed).then(|| {
            format!(
                "a project that is {} cannot become {}: statuses move forward only \
                 (scheduled, dispatched, on_site, done; or cancelled before done)",
                self.as_str(),
                next.as_str()
            )
        })
    }
}

#[cfg(test)]
mod project_status_tests {
    use super::ProjectStatus::*;

    #[test]
    fn project_statuses_move_forward_only() {
        assert_eq!(Scheduled.refusal(Dispatched), None);
        assert_eq!(Scheduled.refusal(OnSite), None);
        assert_eq!(Dispatched.refusal(Cancelled), None);
        assert!(OnSite.refusal(Dispatched).is_some());
        assert!(Dispatched.refusal(Dispatched).is_some());
        assert!(Done.refusal(Cancelled).is_some());
        assert!(Cancelled.refusal(Scheduled).is_some());
    }
}
