//! The other party's address on the provider channels, parsed at the boundary:
//! [`PhoneNumber`] (E.164, for SMS, MMS and calls) and [`EmailAddress`] / [`Mailbox`]
//! (RFC 5322, for email). Once built, a value is valid and normalised, so the same
//! person is always written the same way and `customer_contacts` finds them again.
//!
//! Phone numbers are checked against libphonenumber's metadata (the `phonenumber`
//! crate): a number must exist in its country's plan, not merely have enough digits.
//! Email addresses are RFC 5322 addr-specs in ASCII (checked by `email_address`), with
//! a dotted domain, since mail to a bare host name cannot leave Gmail.

use std::fmt;

use phonenumber::Mode;
use serde::{Serialize, Serializer};
use sqlx::PgConnection;

use crate::domain::{CustomerId, Invalid, PhoneRegion};

/// A phone number in E.164 (`+16505550101`): what RingCentral takes and what
/// `customer_contacts` is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Longer input than this is not a phone number, however it is punctuated.
    const MAX_INPUT: usize = 40;

    /// Reads a number as people write it: `+1 650 555 0101`, `(650) 555-0101` (in
    /// `region`), `650.555.0101`. Letters are refused, vanity numbers and extensions
    /// included: an SMS cannot reach `1-800-FLOWERS` as written, nor an extension.
    pub fn parse(raw: &str, region: PhoneRegion) -> Result<Self, Invalid> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(Invalid("a phone number must not be empty".into()));
        }
        if raw.chars().count() > Self::MAX_INPUT {
            return Err(Invalid(format!(
                "a phone number is at most {} characters",
                Self::MAX_INPUT
            )));
        }
        let plus_only_first = raw.rfind('+').unwrap_or(0) == 0;
        if !plus_only_first
            || !raw
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '(' | ')' | '-' | '.'))
        {
            return Err(Invalid(format!(
                "{raw:?} is not a phone number: use digits, spaces and ( ) - . only, with + first for an international number"
            )));
        }
        let number = phonenumber::parse(Some(region.country()), raw)
            .map_err(|e| Invalid(format!("{raw:?} is not a phone number: {e}")))?;
        if !phonenumber::is_valid(&number) {
            return Err(Invalid(format!(
                "{raw:?} is not a valid phone number{}",
                if raw.starts_with('+') {
                    String::new()
                } else {
                    format!(" in {region} (write +country code for another country)")
                }
            )));
        }
        Ok(Self(number.format().mode(Mode::E164).to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An RFC 5322 addr-spec (`local@domain`), ASCII, with the domain lowercased (domains
/// are case-insensitive; local parts may not be, so they are kept as written).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// RFC 5321's limit on a forward path, the longest address mail can be sent to.
    const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(Invalid("an email address must not be empty".into()));
        }
        if !raw.is_ascii() {
            return Err(Invalid(format!(
                "{raw:?} is not an email address we can send to: only ASCII addresses are supported"
            )));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(Invalid(format!(
                "an email address is at most {} characters",
                Self::MAX_LEN
            )));
        }
        let options = email_address::Options::default()
            .with_minimum_sub_domains(2)
            .without_domain_literal()
            .without_display_text();
        let parsed = email_address::EmailAddress::parse_with_options(raw, options)
            .map_err(|e| Invalid(format!("{raw:?} is not an email address: {e}")))?;
        Ok(Self(format!(
            "{}@{}",
            parsed.local_part(),
            parsed.domain().to_ascii_lowercase()
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the last `@` (a quoted local part may contain `@` itself).
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A recipient as people write one: `jane@example.com`, `<jane@example.com>`,
/// `Jane Doe <jane@example.com>` or `"Doe, Jane" <jane@example.com>`. The name is kept
/// unquoted (the mail writer encodes it); [`Mailbox`]'s `Display` is the header form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mailbox {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub address: EmailAddress,
}

impl Mailbox {
    /// Display names longer than this are refused (a header line's worth).
    const MAX_NAME_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let raw = raw.trim();
        let Some((name, address)) = split_angle_address(raw) else {
            return Ok(Self {
                name: None,
                address: EmailAddress::parse(raw)?,
            });
        };
        let address = EmailAddress::parse(address)?;
        let name = display_name(name)
            .map_err(|why| Invalid(format!("{raw:?} has an unusable display name: {why}")))?;
        Ok(Self { name, address })
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            None => write!(f, "{}", self.address),
            // A phrase of atoms goes as it is; anything else is quoted.
            Some(name) if name.chars().all(|c| c == ' ' || is_atext(c)) => {
                write!(f, "{name} <{}>", self.address)
            }
            Some(name) => write!(
                f,
                "\"{}\" <{}>",
                name.replace('\\', "\\\\").replace('"', "\\\""),
                self.address
            ),
        }
    }
}

/// `name <address>` split at the `<` that opens the final angle address (one inside a
/// quoted name or a quoted local part does not count); `None` without angle brackets.
fn split_angle_address(raw: &str) -> Option<(&str, &str)> {
    let inner = raw.strip_suffix('>')?;
    let mut open = None;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '<' if !in_quote => open = Some(i),
            _ => {}
        }
    }
    let open = open?;
    Some((&inner[..open], &inner[open + 1..]))
}

/// The display name, unquoted; `None` when there is none.
fn display_name(raw: &str) -> Result<Option<String>, String> {
    let raw = raw.trim();
    let name = match raw.strip_prefix('"') {
        Some(rest) => {
            let body = rest
                .strip_suffix('"')
                .ok_or("a quoted name must end with a quote")?;
            let mut name = String::with_capacity(body.len());
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => name.push(chars.next().ok_or("it ends with a lone backslash")?),
                    '"' => return Err("a quote inside a quoted name must be escaped".into()),
                    c => name.push(c),
                }
            }
            name
        }
        None if raw.contains(['"', '<', '>']) => {
            return Err("quote a name that contains \" < or >".into());
        }
        None => raw.to_owned(),
    };
    // Control characters (CR and LF above all) would let a name inject headers.
    if name.chars().any(char::is_control) {
        return Err("it contains control characters".into());
    }
    if name.chars().count() > Mailbox::MAX_NAME_CHARS {
        return Err(format!("at most {} characters", Mailbox::MAX_NAME_CHARS));
    }
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok((!name.is_empty()).then_some(name))
}

/// RFC 5322 `atext`: what may appear in a display name without quotes.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// Which kind of contact a `customer_contacts` row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactKind {
    Phone,
    Email,
}

impl ContactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::Email => "email",
        }
    }
}

/// Records that `address` belongs to `customer` (the latest send wins), so inbound SMS,
/// email and imported calls from it land in that customer's conversation.
pub async fn remember(
    conn: &mut PgConnection,
    kind: ContactKind,
    address: &str,
    customer: &CustomerId,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO customer_contacts (kind, address, customer_id) VALUES ($1, $2, $3)
         ON CONFLICT (kind, address) DO UPDATE
             SET customer_id = EXCLUDED.customer_id, updated_at = now()
             WHERE customer_contacts.customer_id <> EXCLUDED.customer_id",
    )
    .bind(kind.as_str())
    .bind(address)
    .bind(customer.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(raw: &str) -> Result<String, Invalid> {
        PhoneNumber::parse(raw, PhoneRegion::US).map(|n| n.0)
    }

    #[test]
    fn phone_numbers_are_normalised_to_e164() {
        for raw in [
            "(650) 555-0101",
            "650-555-0101",
            "650.555.0101",
            "6505550101",
            "1 650 555 0101",
            "+1 (650) 555-0101",
            "  +16505550101  ",
        ] {
            assert_eq!(phone(raw).as_deref(), Ok("+16505550101"), "{raw:?}");
        }
        assert_eq!(phone("+44 20 7946 0958").as_deref(), Ok("+442079460958"));
        let gb: PhoneRegion = "gb".parse().unwrap();
        assert_eq!(
            PhoneNumber::parse("020 7946 0958", gb).unwrap().as_str(),
            "+442079460958"
        );
    }

    #[test]
    fn phone_numbers_that_are_not_are_refused_with_a_reason() {
        for raw in [
            "",
            "   ",
            "12",
            "+1 555 CALL-NOW",
            "1-800-FLOWERS",
            "abc",
            "650-555-0101 ext. 12",
            "650-555-0101;ext=12",
            "tel:+16505550101",
            "+1 650+555 0101",
            "+999 123 4567",
            // Valid digits for the UK, read as a US number.
            "020 7946 0958",
            "+1 555 555 0101",
            &"1".repeat(41),
        ] {
            let error = phone(raw).expect_err(raw);
            assert!(error.0.contains("phone number"), "{raw:?}: {error}");
        }
        let error = phone("020 7946 0958").unwrap_err();
        assert!(error.0.contains("in US"), "{error}");
    }

    #[test]
    fn regions_parse_and_show_as_codes() {
        assert_eq!("us".parse::<PhoneRegion>(), Ok(PhoneRegion::US));
        assert_eq!(PhoneRegion::default().to_string(), "US");
        assert_eq!("DE".parse::<PhoneRegion>().unwrap().to_string(), "DE");
        assert!("XX".parse::<PhoneRegion>().is_err());
        assert!("".parse::<PhoneRegion>().is_err());
        assert!("USA".parse::<PhoneRegion>().is_err());
    }

    #[test]
    fn email_addresses_are_checked_and_their_domain_lowercased() {
        let address = EmailAddress::parse(" Jane.Doe+quotes@Example.COM ").unwrap();
        assert_eq!(address.as_str(), "Jane.Doe+quotes@example.com");
        assert_eq!(address.domain(), "example.com");
        let quoted = EmailAddress::parse("\"jane@home\"@example.org").unwrap();
        assert_eq!(quoted.domain(), "example.org");
        for raw in [
            "",
            "jane",
            "jane@",
            "@example.com",
            "jane@localhost",
            "jane@@example.com",
            "jane doe@example.com",
            "jane..doe@example.com",
            ".jane@example.com",
            "jane@example..com",
            "jane@-example.com",
            "jane@[192.168.0.1]",
            "jané@example.com",
            "jane@exämple.com",
            "Jane <jane@example.com>",
            "jane@example.com\r\nBcc: x@evil.com",
            &format!("{}@example.com", "a".repeat(65)),
            &format!("jane@{}.com", "a".repeat(250)),
        ] {
            let error = EmailAddress::parse(raw).expect_err(raw);
            assert!(error.0.contains("email address"), "{raw:?}: {error}");
        }
    }

    #[test]
    fn mailboxes_take_display_names_and_normalise_them() {
        let cases = [
            ("jane@Example.com", None, "jane@example.com"),
            ("<jane@example.com>", None, "jane@example.com"),
            (
                "Jane Doe <jane@EXAMPLE.com>",
                Some("Jane Doe"),
                "Jane Doe <jane@example.com>",
            ),
            (
                "  Jane   Doe   <jane@example.com>  ",
                Some("Jane Doe"),
                "Jane Doe <jane@example.com>",
            ),
            (
                "\"Doe, Jane\" <jane@example.com>",
                Some("Doe, Jane"),
                "\"Doe, Jane\" <jane@example.com>",
            ),
            (
                "Doe, Jane <jane@example.com>",
                Some("Doe, Jane"),
                "\"Doe, Jane\" <jane@example.com>",
            ),
            (
                r#""Jane \"JD\" Doe" <jane@example.com>"#,
                Some("Jane \"JD\" Doe"),
                r#""Jane \"JD\" Doe" <jane@example.com>"#,
            ),
            (
                "José Núñez <jose@example.com>",
                Some("José Núñez"),
                "\"José Núñez\" <jose@example.com>",
            ),
            (
                "\"a <b>\" <\"x<y\"@example.com>",
                Some("a <b>"),
                "\"a <b>\" <\"x<y\"@example.com>",
            ),
        ];
        for (raw, name, shown) in cases {
            let mailbox = Mailbox::parse(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(mailbox.name.as_deref(), name, "{raw:?}");
            assert_eq!(mailbox.to_string(), shown, "{raw:?}");
            assert_eq!(
                Mailbox::parse(shown).unwrap(),
                mailbox,
                "{shown:?} round-trips"
            );
        }
    }

    #[test]
    fn mailboxes_with_unsafe_names_or_addresses_are_refused() {
        for raw in [
            "Jane <jane@example>",
            "Jane <>",
            "Jane <jane@example.com",
            "Jane\r\nBcc: x@evil.com <jane@example.com>",
            "\"Jane <jane@example.com>",
            "\"Ja\"ne\" <jane@example.com>",
            "Ja\"ne <jane@example.com>",
            "Jane> <jane@example.com>",
            "\"Jane\\\" <jane@example.com>",
            &format!("{} <jane@example.com>", "n".repeat(201)),
        ] {
            assert!(Mailbox::parse(raw).is_err(), "{raw:?} is refused");
        }
    }
}
