//! Composed emails, parsed back as a mail reader would.

use std::time::Duration;

use bytes::Bytes;
use commcenter_providers::settings::{GmailSettings, Secret};
use commcenter_providers::{
    Attachment, Failure,
    gmail::{Email, Gmail, message_id_for},
};
use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use uuid::Uuid;

fn gmail() -> Gmail {
    Gmail::new(&GmailSettings {
        client_id: "client".into(),
        client_secret: Secret::new("secret"),
        token_url: "http://127.0.0.1:9/token".into(),
        api_url: "http://127.0.0.1:9".into(),
        refresh_token: Secret::new("refresh"),
        sender: "team@example.com".into(),
        timeout: Duration::from_secs(5),
        poll_every: None,
    })
    .expect("client")
}

fn email() -> Email {
    let communication = Uuid::parse_str("0190a5c8-7d0e-7c3b-9f1e-2b3c4d5e6f70").expect("uuid");
    Email {
        message_id: message_id_for(communication, "team@example.com"),
        from: "team@example.com".into(),
        to: vec!["client@example.org".into()],
        subject: "Réunion — 日本".into(),
        text: "Bonjour,\nvoici le plan de la façade.\n".into(),
        attachments: vec![],
        in_reply_to: None,
        references: vec![],
        thread_id: None,
    }
}

fn texts(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(text) => vec![text.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|t| t.to_string()).collect(),
        _ => vec![],
    }
}

#[test]
fn message_ids_are_per_communication_and_sender_domain() {
    let id = Uuid::parse_str("0190a5c8-7d0e-7c3b-9f1e-2b3c4d5e6f70").expect("uuid");
    assert_eq!(
        message_id_for(id, "Team@Example.COM"),
        "<0190a5c8-7d0e-7c3b-9f1e-2b3c4d5e6f70@example.com>"
    );
    assert_eq!(
        message_id_for(id, "team@example.com"),
        message_id_for(id, "team@example.com")
    );
    assert_ne!(
        message_id_for(id, "team@example.com"),
        message_id_for(Uuid::new_v4(), "team@example.com")
    );
    assert_eq!(
        message_id_for(id, "no-domain"),
        "<0190a5c8-7d0e-7c3b-9f1e-2b3c4d5e6f70@localhost>"
    );
}

#[test]
fn a_plain_email_parses_back_with_encoded_subject() {
    let raw = gmail().compose(&email()).expect("composed");
    let text = String::from_utf8(raw.clone()).expect("7-bit text");
    assert!(raw.is_ascii(), "headers and body are encoded to ASCII");
    assert!(
        text.contains("Subject: =?utf-8?"),
        "RFC 2047 subject:\n{text}"
    );
    let message = MessageParser::default().parse(&raw).expect("parses");
    assert_eq!(message.subject(), Some("Réunion — 日本"));
    assert_eq!(
        message.message_id(),
        Some("0190a5c8-7d0e-7c3b-9f1e-2b3c4d5e6f70@example.com")
    );
    assert_eq!(
        message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("team@example.com")
    );
    assert_eq!(
        message
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("client@example.org")
    );
    // Text travels in canonical form, CRLF line ends.
    assert_eq!(
        message.body_text(0).as_deref(),
        Some("Bonjour,\r\nvoici le plan de la façade.\r\n")
    );
    assert!(message.date().is_some());
    assert_eq!(message.attachment_count(), 0);
    assert!(message.in_reply_to().is_empty());
}

#[test]
fn the_same_email_composes_to_the_same_message_id() {
    let first = MessageParser::default()
        .parse(&gmail().compose(&email()).expect("composed"))
        .map(|m| m.message_id().map(str::to_owned));
    let again = MessageParser::default()
        .parse(&gmail().compose(&email()).expect("composed"))
        .map(|m| m.message_id().map(str::to_owned));
    assert_eq!(first, again);
}

#[test]
fn attachments_go_in_multipart_mixed_with_encoded_names() {
    let pdf = Bytes::from_static(b"%PDF-1.4\n\x00\x01\x02\xff binary\n%%EOF");
    let mut email = email();
    email.attachments = vec![
        Attachment {
            name: "façade plan.pdf".into(),
            content_type: "application/pdf".into(),
            bytes: pdf.clone(),
        },
        Attachment {
            name: "notes.txt".into(),
            content_type: "text/plain".into(),
            bytes: Bytes::from_static(b"one\ntwo\n"),
        },
        Attachment {
            name: format!("{}.png", "日本語のとても長いファイル名".repeat(3)),
            content_type: "image/png".into(),
            bytes: Bytes::from_static(b"\x89PNG"),
        },
    ];
    let raw = gmail().compose(&email).expect("composed");
    let text = String::from_utf8(raw.clone()).expect("ASCII");
    assert!(text.contains("Content-Type: multipart/mixed"), "{text}");
    assert!(
        text.contains("filename*=UTF-8''fa%C3%A7ade%20plan.pdf"),
        "RFC 2231 file name:\n{text}"
    );
    assert!(
        text.lines().all(|line| line.len() <= 998),
        "no line over RFC 5322's limit"
    );

    let message = MessageParser::default().parse(&raw).expect("parses");
    assert_eq!(message.subject(), Some("Réunion — 日本"));
    // Text travels in canonical form, CRLF line ends.
    assert_eq!(
        message.body_text(0).as_deref(),
        Some("Bonjour,\r\nvoici le plan de la façade.\r\n")
    );
    let attachments: Vec<_> = message.attachments().collect();
    assert_eq!(attachments.len(), 3);
    assert_eq!(attachments[0].attachment_name(), Some("façade plan.pdf"));
    assert_eq!(attachments[0].contents(), pdf.as_ref());
    let content_type = attachments[0].content_type().expect("content type");
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("application", Some("pdf"))
    );
    assert_eq!(attachments[1].attachment_name(), Some("notes.txt"));
    assert_eq!(attachments[1].contents(), b"one\ntwo\n");
    assert_eq!(
        attachments[2].attachment_name(),
        Some(email.attachments[2].name.as_str())
    );
}

#[test]
fn replies_carry_in_reply_to_and_references() {
    let mut email = email();
    email.subject = "Re: Réunion — 日本".into();
    email.in_reply_to = Some("<second@mail.example.org>".into());
    email.references = vec!["<first@mail.example.org>".into()];
    let message_raw = gmail().compose(&email).expect("composed");
    let message = MessageParser::default()
        .parse(&message_raw)
        .expect("parses");
    assert_eq!(texts(message.in_reply_to()), ["second@mail.example.org"]);
    // References ends with the message replied to, added when the caller left it out.
    assert_eq!(
        texts(message.references()),
        ["first@mail.example.org", "second@mail.example.org"]
    );

    email.references = vec![
        "first@mail.example.org".into(),
        "second@mail.example.org".into(),
    ];
    let message_raw = gmail().compose(&email).expect("composed");
    let message = MessageParser::default()
        .parse(&message_raw)
        .expect("parses");
    assert_eq!(
        texts(message.references()),
        ["first@mail.example.org", "second@mail.example.org"]
    );
}

#[test]
fn a_subject_cannot_write_headers() {
    let mut email = email();
    email.subject = "Hello\r\nBcc: victim@example.net".into();
    let raw = gmail().compose(&email).expect("composed");
    let message = MessageParser::default().parse(&raw).expect("parses");
    assert!(message.header("Bcc").is_none());
    assert_eq!(message.subject(), Some("Hello  Bcc: victim@example.net"));
}

#[test]
fn bad_addresses_and_ids_are_refused() {
    type Change = Box<dyn Fn(&mut Email)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|e| e.to = vec![]), "no_recipient"),
        (
            Box::new(|e| e.to = vec!["not an address".into()]),
            "invalid_address",
        ),
        (
            Box::new(|e| e.to = vec!["a@example.org\r\nBcc: x@example.net".into()]),
            "invalid_address",
        ),
        (
            Box::new(|e| e.to = vec!["a@b@example.org".into()]),
            "invalid_address",
        ),
        (
            Box::new(|e| e.from = "@example.com".into()),
            "invalid_address",
        ),
        (
            Box::new(|e| e.message_id = "<no-at-sign>".into()),
            "invalid_message_id",
        ),
        (
            Box::new(|e| e.in_reply_to = Some("<a b@example.org>".into())),
            "invalid_message_id",
        ),
    ];
    for (change, code) in cases {
        let mut email = email();
        change(&mut email);
        let error = gmail().compose(&email).expect_err(code);
        assert_eq!(
            (error.failure, error.code.as_deref()),
            (Failure::Permanent, Some(code)),
            "{}",
            error.message
        );
    }
}
