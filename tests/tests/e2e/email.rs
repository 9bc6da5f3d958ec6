//! Email through Gmail, end to end: the portal's request, the workers, this test's
//! fake Gmail; threads, attachments, lost answers and revoked mailboxes.

use commcenter_fakes::{Endpoint, Fault};
use commcenter_tests::{TestApp, spawn_app};
use serde_json::{Value, json};

const EMAIL: &str = "/api/integrations/gmail/send";

async fn send(app: &TestApp, body: Value) -> String {
    let response = app.post_json(EMAIL, &app.staff_token(), &body).await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn row(app: &TestApp, id: &str) -> Value {
    sqlx::query_scalar::<_, sqlx::types::Json<Value>>(
        "SELECT to_jsonb(c) FROM communications c WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
    .0
}

#[tokio::test]
async fn an_email_goes_out_once_with_our_message_id_and_a_reply_stays_in_its_thread() {
    let app = spawn_app().await;
    let first = send(
        &app,
        json!({ "customer_id": "cust-1", "to": "Jane Doe <jane@example.org>",
                "subject": "Réunion — devis", "message": "Bonjour Jane,\nvoici le devis." }),
    )
    .await;
    app.wait_for_status(&first, "sent").await;
    let sent = app.gmail.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, format!("{first}@example.com"));
    assert_eq!(sent[0].subject, "Réunion — devis");
    let stored = row(&app, &first).await;
    assert_eq!(stored["provider_message_id"], sent[0].id.as_str());
    assert_eq!(stored["provider_thread_id"], sent[0].thread_id.as_str());
    assert_eq!(stored["provider_status"], "SENT");

    let reply = send(
        &app,
        json!({ "customer_id": "cust-1", "to": "jane@example.org", "subject": "Réunion — devis",
                "message": "Any questions?", "reply_to_communication_id": first }),
    )
    .await;
    app.wait_for_status(&reply, "sent").await;
    let sent = app.gmail.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1].thread_id, sent[0].thread_id,
        "the reply joins the thread"
    );
    assert_eq!(
        sent[1].in_reply_to.as_deref(),
        Some(sent[0].message_id.as_str())
    );
    app.assert_no_jobs_left().await;
}

#[tokio::test]
async fn an_email_carries_its_attachment() {
    let app = spawn_app().await;
    let pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n".to_vec();
    let form = reqwest::multipart::Form::new()
        .text("customer_id", "cust-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(pdf.clone()).file_name("façade plan.pdf"),
        );
    let upload: Value = app
        .client
        .post(app.url("/api/communications/upload"))
        .bearer_auth(app.staff_token())
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file_id = upload["files"][0]["file_id"].as_str().unwrap();
    let id = send(
        &app,
        json!({ "customer_id": "cust-1", "to": "jane@example.org", "subject": "Plans",
                "message": "Attached.", "attachments": [file_id] }),
    )
    .await;
    app.wait_for_status(&id, "sent").await;
    let sent = app.gmail.sent();
    assert_eq!(sent[0].attachments.len(), 1);
    assert_eq!(
        sent[0].attachments[0].name.as_deref(),
        Some("façade plan.pdf")
    );
    assert_eq!(sent[0].attachments[0].size, pdf.len());
}

#[tokio::test]
async fn an_email_whose_answer_is_lost_is_found_by_its_message_id_not_sent_again() {
    let app = spawn_app().await;
    app.gmail
        .fail_next(Endpoint::Send, Fault::AcceptThenDrop, 1);
    let id = send(
        &app,
        json!({ "customer_id": "cust-1", "to": "jane@example.org", "subject": "Once",
                "message": "Only once." }),
    )
    .await;
    app.wait_for_status(&id, "sent").await;
    assert_eq!(app.gmail.sent().len(), 1, "sent once");
    let searched = app.gmail.requests().iter().any(|r| {
        r.query
            .as_deref()
            .unwrap_or_default()
            .contains("rfc822msgid")
    });
    assert!(searched, "the unknown outcome was looked up by Message-ID");
}

#[tokio::test]
async fn a_revoked_mailbox_fails_the_email_at_once_saying_it_must_be_reconnected() {
    let app = spawn_app().await;
    app.gmail.revoke();
    let id = send(
        &app,
        json!({ "customer_id": "cust-1", "to": "jane@example.org", "subject": "Hello",
                "message": "Hi." }),
    )
    .await;
    app.wait_for_status(&id, "failed").await;
    let reason = row(&app, &id).await["failure_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("reconnect"), "{reason}");
    assert!(app.gmail.token_requests() <= 2);
    assert!(app.gmail.sent().is_empty());
}

#[tokio::test]
async fn gmail_quota_errors_are_retried_and_the_email_goes_out_once() {
    let app = spawn_app().await;
    app.gmail
        .fail_next(Endpoint::Send, Fault::RateLimited { retry_after: None }, 2);
    let id = send(
        &app,
        json!({ "customer_id": "cust-1", "to": "jane@example.org", "subject": "Busy",
                "message": "Eventually." }),
    )
    .await;
    app.wait_for_status(&id, "sent").await;
    assert_eq!(app.gmail.sent().len(), 1);
}
