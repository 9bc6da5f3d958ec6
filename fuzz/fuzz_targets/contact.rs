//! Phone numbers and email addresses as the send endpoints and contacts parse them:
//! anything is accepted in its canonical form or refused, never a panic, and parsing
//! the canonical form again gives it back.
#![no_main]

use commcenter_shared::domain::{
    PhoneRegion,
    contact::{EmailAddress, PhoneNumber},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str, &str)| {
    let (phone, region, email) = input;
    let region: PhoneRegion = region.parse().unwrap_or_default();
    if let Ok(number) = PhoneNumber::parse(phone, region) {
        let canonical = number.as_str();
        assert!(canonical.starts_with('+'), "{canonical} is not E.164");
        assert!(canonical[1..].bytes().all(|b| b.is_ascii_digit()), "{canonical}");
        let again = PhoneNumber::parse(canonical, region).expect("E.164 parses again");
        assert_eq!(again.as_str(), canonical);
    }
    if let Ok(address) = EmailAddress::parse(email) {
        let canonical = address.as_str();
        assert!(!canonical.chars().any(char::is_control), "{canonical:?}");
        assert!(canonical.ends_with(address.domain()));
        let again = EmailAddress::parse(canonical).expect("a parsed address parses again");
        assert_eq!(again.as_str(), canonical);
    }
});
