//! The RingCentral webhook's body: the api's envelope check, then what the
//! `ringcentral.event` job reads of an instant message. Refused or read, never a panic.
#![no_main]

use commcenter_api::routes::integrations::webhook;
use commcenter_providers::ringcentral::MessageRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(notification) = webhook::notification(body) else {
        return;
    };
    let uuid = notification["uuid"].as_str().expect("an accepted notification has a uuid");
    assert!(!uuid.trim().is_empty() && uuid.len() <= 200);
    assert!(notification["event"].as_str().is_some());
    assert!(notification["body"].is_object());
    let _ = MessageRecord::from_json(notification["body"].clone());
});
