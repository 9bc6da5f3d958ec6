//! Inbound email MIME as Gmail hands it over (`format=raw`): any bytes either give a
//! mail or none (never a panic), and what is kept can be stored: no NUL anywhere, ids
//! in angle brackets.
#![no_main]

use commcenter_workers::handlers::inbound_email::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let Some(mail) = parse("gmail-1", "thread-1", raw) else {
        return;
    };
    let texts = [&mail.sender, &mail.subject, &mail.text]
        .into_iter()
        .chain(mail.message_id.as_ref())
        .chain(mail.in_reply_to.as_ref())
        .chain(&mail.references);
    for text in texts {
        assert!(!text.contains('\0'), "{text:?} holds NUL");
    }
    for id in mail
        .message_id
        .iter()
        .chain(&mail.in_reply_to)
        .chain(&mail.references)
    {
        assert!(id.starts_with('<') && id.ends_with('>'), "{id:?}");
    }
});
