//! Mail coming into the Gmail mailbox: read incrementally (`history.list` from the
//! remembered `historyId`), matched to customers, filed once, unmatched kept.

use commcenter_fakes::{Endpoint, Fault};
use commcenter_shared::ledger::jobs::payloads::SyncMailbox;
use commcenter_tests::{TestApp, spawn_app};
use serde_json::{Value, json};

use crate::WAIT;

/// One `email.sync`, and every job it leads to, to the end.
async fn sync(app: &TestApp) {
    let enqueued = commcenter_workers::schedule::enqueue_unless_open(&app.pool, &SyncMailbox {}, 8)
        .await
        .unwrap();
    assert!(enqueued, "no sync was open");
    app.assert_no_jobs_left().await;
}

fn mail(
    from: &str,
    subject: &str,
    message_id: &str,
    in_reply_to: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let mut headers = format!(
        "From: {from}\r\nTo: office@example.com\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    );
    if let Some(id) = in_reply_to {
        headers.push_str(&format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"));
    }
    format!("{headers}{body}").into_bytes()
}

/// Staff record `email` as `customer`'s address.
async fn knows(app: &TestApp, customer: &str, email: &str) {
    let path = format!("/api/customers/{customer}/contact");
    let put = app
        .put_json(&path, &app.staff_token(), &json!({ "email": email }))
        .await;
    assert_eq!(put.status(), 200);
}

fn plain(text: &str) -> String {
    format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n")
}

async fn inbound(app: &TestApp, customer: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, sqlx::types::Json<Value>>(
        "SELECT to_jsonb(c) FROM communications c
         WHERE customer_id = $1 AND type = 'email' AND direction = 'inbound' ORDER BY created_at",
    )
    .bind(customer)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|j| j.0)
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_are_filed_by_thread_reply_headers_or_address_and_strangers_kept_aside() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    // The first sync only remembers where the mailbox stands: older mail is not imported.
    app.gmail.receive(&mail(
        "old@example.net",
        "Old",
        "old@x",
        None,
        &plain("old"),
    ));
    sync(&app).await;
    let position: i64 = sqlx::query_scalar("SELECT history_id FROM gmail_sync")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(position > 0);

    // Staff write to cust-1; Jane answers from another address, in the thread.
    let sent = app
        .post_json(
            "/api/integrations/gmail/send",
            &staff,
            &json!({ "customer_id": "cust-1", "to": "jane@example.org", "subject": "Quote", "message": "Here it is." }),
        )
        .await;
    assert_eq!(sent.status(), 202);
    let sent: Value = sent.json().await.unwrap();
    app.wait_for_status(sent["id"].as_str().unwrap(), "sent")
        .await;
    let ours = app.gmail.sent()[0].message_id.clone();
    app.gmail.receive(&mail(
        "Jane <jane.doe@work.example>",
        "Re: Quote",
        "reply-1@work.example",
        Some(&ours),
        &plain("Looks good, go ahead."),
    ));
    // Bob set his address; he writes fresh, in HTML only.
    knows(&app, "cust-2", "bob@example.org").await;
    app.gmail.receive(&mail(
        "Bob <Bob@Example.ORG>",
        "Gutters",
        "bob-1@example.org",
        None,
        "Content-Type: text/html; charset=utf-8\r\n\r\n<p>Can you look at the <b>gutters</b> &amp; roof?</p><script>alert(1)</script>\r\n",
    ));
    // A stranger.
    app.gmail.receive(&mail(
        "who@example.net",
        "Hello?",
        "who-1@example.net",
        None,
        &plain("Anyone there?"),
    ));
    let mut staff_ws = app.ws("staff-1", &staff).await;
    sync(&app).await;

    let jane = inbound(&app, "cust-1").await;
    assert_eq!(jane.len(), 1, "{jane:?}");
    assert_eq!(jane[0]["message"], "Looks good, go ahead.");
    assert_eq!(jane[0]["subject"], "Re: Quote");
    assert_eq!(jane[0]["remote_address"], "jane.doe@work.example");
    assert_eq!(jane[0]["status"], "delivered");
    let bob = inbound(&app, "cust-2").await;
    assert_eq!(bob.len(), 1, "{bob:?}");
    let text = bob[0]["message"].as_str().unwrap();
    assert!(
        text.contains("gutters") && text.contains("& roof"),
        "{text}"
    );
    assert!(
        !text.contains('<') && !text.contains("alert"),
        "HTML reduced to text: {text}"
    );
    let frame = staff_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("staff hear");
    assert_eq!(frame["communication_type"], "email");
    assert_eq!(frame["direction"], "inbound");
    let unmatched: Vec<String> = sqlx::query_scalar("SELECT sender FROM unmatched_emails")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(unmatched, vec!["who@example.net"]);
    let old: i64 = sqlx::query_scalar("SELECT count(*) FROM communications WHERE message = 'old'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(old, 0, "mail from before the first sync is not imported");

    // Filed once: a sync with nothing new files nothing; the same message listed again
    // (our position set back) or arriving again (a new Gmail id, the same Message-ID)
    // is not filed again.
    sync(&app).await;
    sqlx::query("UPDATE gmail_sync SET history_id = $1")
        .bind(position)
        .execute(&app.pool)
        .await
        .unwrap();
    app.gmail.receive(&mail(
        "Jane <jane.doe@work.example>",
        "Re: Quote",
        "reply-1@work.example",
        Some(&ours),
        &plain("Looks good, go ahead."),
    ));
    sync(&app).await;
    assert_eq!(inbound(&app, "cust-1").await.len(), 1);
    assert_eq!(inbound(&app, "cust-2").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_history_falls_back_to_what_came_since_the_last_filed_message() {
    let app = spawn_app().await;
    knows(&app, "cust-3", "ann@example.org").await;
    sync(&app).await;
    app.gmail.receive(&mail(
        "ann@example.org",
        "One",
        "ann-1@example.org",
        None,
        &plain("first"),
    ));
    sync(&app).await;
    app.gmail.expire_history();
    app.gmail.receive(&mail(
        "ann@example.org",
        "Two",
        "ann-2@example.org",
        None,
        &plain("second"),
    ));
    sync(&app).await;
    let filed: Vec<String> = inbound(&app, "cust-3")
        .await
        .iter()
        .map(|c| c["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(filed, vec!["first", "second"]);
    // And incremental reading resumes from the new position.
    app.gmail.receive(&mail(
        "ann@example.org",
        "Three",
        "ann-3@example.org",
        None,
        &plain("third"),
    ));
    sync(&app).await;
    assert_eq!(inbound(&app, "cust-3").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn gmail_failures_are_retried_and_nothing_is_lost() {
    let app = spawn_app().await;
    knows(&app, "cust-4", "max@example.org").await;
    sync(&app).await;
    app.gmail.receive(&mail(
        "max@example.org",
        "Hi",
        "max-1@example.org",
        None,
        &plain("hello"),
    ));
    // history.list and messages.get each fail once (503, then an expired token).
    app.gmail
        .fail_next(Endpoint::Search, Fault::ServerError(503), 1);
    app.gmail.expire_tokens();
    sync(&app).await;
    let filed = inbound(&app, "cust-4").await;
    assert_eq!(filed.len(), 1, "{filed:?}");
    let retried: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id
         WHERE j.kind = 'email.sync' AND a.outcome = 'transient'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(retried, 1, "the 503 was one transient attempt");
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_assign_an_unmatched_email_and_the_senders_next_mail_matches() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    sync(&app).await;
    app.gmail.receive(&mail(
        "new@example.net",
        "Quote?",
        "new-1@example.net",
        None,
        &plain("How much for a roof?"),
    ));
    sync(&app).await;
    let listing = app.get("/api/emails/unmatched", &staff).await;
    assert_eq!(listing.status(), 200);
    let listing: Value = listing.json().await.unwrap();
    let emails = listing["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0]["message"], "How much for a roof?");
    let id = emails[0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/emails/unmatched/{id}/assign");

    // Roles and bad input.
    let customer = app.customer_token("cust-5");
    assert_eq!(
        app.get("/api/emails/unmatched", &customer).await.status(),
        403
    );
    assert_eq!(
        app.post_json(&path, &customer, &json!({ "customer_id": "cust-5" }))
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post_json(&path, &staff, &json!({ "customer_id": "bad id!" }))
            .await
            .status(),
        422
    );
    let unknown = format!("/api/emails/unmatched/{}/assign", uuid::Uuid::now_v7());
    assert_eq!(
        app.post_json(&unknown, &staff, &json!({ "customer_id": "cust-5" }))
            .await
            .status(),
        404
    );

    let mut customer_ws = app.ws("user-of-cust-5", &customer).await;
    let assigned = app
        .post_json(&path, &staff, &json!({ "customer_id": "cust-5" }))
        .await;
    assert_eq!(assigned.status(), 201);
    let assigned: Value = assigned.json().await.unwrap();
    assert_eq!(assigned["customer_id"], "cust-5");
    assert_eq!(assigned["direction"], "inbound");
    let frame = customer_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("the customer sees it");
    assert_eq!(frame["message"], "How much for a roof?");
    assert_eq!(
        app.post_json(&path, &staff, &json!({ "customer_id": "cust-6" }))
            .await
            .status(),
        409
    );
    let listing: Value = app
        .get("/api/emails/unmatched", &staff)
        .await
        .json()
        .await
        .unwrap();
    assert!(listing["emails"].as_array().unwrap().is_empty());

    // The sender is now cust-5's: their next mail matches by itself.
    app.gmail.receive(&mail(
        "new@example.net",
        "Also",
        "new-2@example.net",
        None,
        &plain("And gutters?"),
    ));
    sync(&app).await;
    assert_eq!(inbound(&app, "cust-5").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_of_a_reply_are_stored_as_files_and_a_refused_one_is_named() {
    use base64::Engine;
    let app = spawn_app().await;
    knows(&app, "cust-7", "lee@example.org").await;
    sync(&app).await;
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 90]))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let body = format!(
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nPhoto of the leak attached.\r\n\
         --b1\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=\"leak.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"setup.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --b1--\r\n",
        b64(png.get_ref()),
        b64(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00 this program cannot be run in DOS mode"),
    );
    app.gmail.receive(&mail(
        "lee@example.org",
        "Leak",
        "lee-1@example.org",
        None,
        &body,
    ));
    sync(&app).await;
    let filed = inbound(&app, "cust-7").await;
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert_eq!(filed[0]["message"], "Photo of the leak attached.");
    let attachments = filed[0]["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1, "{attachments:?}");
    assert_eq!(attachments[0]["filename"], "leak.png");
    assert_eq!(attachments[0]["file_type"], "image/png");
    let refused = &filed[0]["metadata"]["refused_attachments"];
    assert_eq!(refused[0]["filename"], "setup.exe", "{refused}");
    // The file went through processing like an upload: ready, with a thumbnail.
    let file_id = attachments[0]["file_id"].as_str().unwrap();
    let status: String =
        sqlx::query_scalar("SELECT status FROM file_attachments WHERE id = $1::uuid")
            .bind(file_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "ready");
    let download = app
        .get(
            attachments[0]["url"].as_str().unwrap(),
            &app.customer_token("cust-7"),
        )
        .await;
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.bytes().await.unwrap().as_ref(),
        png.get_ref().as_slice()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_outside_our_thread_is_matched_by_the_message_it_answers() {
    let app = spawn_app().await;
    sync(&app).await;
    let sent = app
        .post_json(
            "/api/integrations/gmail/send",
            &app.staff_token(),
            &json!({ "customer_id": "cust-8", "to": "kim@example.org", "subject": "Invoice", "message": "Attached." }),
        )
        .await;
    let sent: Value = sent.json().await.unwrap();
    let id = sent["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "sent").await;
    let ours = app.gmail.sent()[0].message_id.clone();
    // The reply comes in another thread (a client that starts one), from an address we
    // do not know: only its References name our message.
    sqlx::query("UPDATE communications SET provider_thread_id = 'elsewhere' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    let raw = format!(
        "From: accounts@kim-corp.example\r\nTo: office@example.com\r\nSubject: Invoice paid\r\nMessage-ID: <paid-1@kim-corp.example>\r\nReferences: <older@x> <{ours}>\r\n\r\nPaid today.\r\n"
    );
    app.gmail.receive(raw.as_bytes());
    sync(&app).await;
    let filed = inbound(&app, "cust-8").await;
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert_eq!(filed[0]["message"], "Paid today.");
    assert_eq!(filed[0]["references"], format!("<older@x> <{ours}>"));
}
