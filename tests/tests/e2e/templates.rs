//! Message templates: created, listed, edited into versions, deactivated, previewed,
//! and sent from; staff only; every bad input named.

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, spawn_app};
use serde_json::{Value, json};

async fn answer(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

async fn create(app: &TestApp, body: Value) -> Value {
    answer(app.create_template(&app.staff_token(), &body).await, 201).await
}

fn message_of(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_reports_its_variables_and_renders_into_a_send_that_names_it() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let template = create(
        &app,
        json!({ "name": "Arrival", "type": "inapp", "category": "scheduling",
                "content": "Hi {{name}}, the crew arrives {{ day }} at {{time}}." }),
    )
    .await;
    assert_eq!(template["variables"], json!(["name", "day", "time"]));
    assert_eq!(template["version"], 1);
    assert_eq!(template["active"], true);
    assert_eq!(template["created_by"], "staff-1");
    let id = template["id"].as_str().unwrap().to_owned();

    let sent = answer(
        app.post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "template_id": id,
                     "variables": { "name": "Ann", "day": "Monday", "time": "9:00" } }),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(sent["message"], "Hi Ann, the crew arrives Monday at 9:00.");
    assert_eq!(sent["template_id"], id.as_str());
    assert_eq!(sent["template_version"], 1);

    // Every missing variable, named at once; nothing written.
    let refused = answer(
        app.post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "template_id": id, "variables": { "name": "Ann" } }),
        )
        .await,
        422,
    )
    .await;
    assert!(message_of(&refused).contains("day, time"), "{refused}");
    for (body, names) in [
        (
            json!({ "customer_id": "cust-1", "template_id": id, "message": "hi", "variables": {} }),
            "not both",
        ),
        (
            json!({ "customer_id": "cust-1", "variables": { "a": 1 } }),
            "template_id",
        ),
        (
            json!({ "customer_id": "cust-1", "template_id": uuid::Uuid::nil(), "variables": {} }),
            "template_id",
        ),
        (
            json!({ "customer_id": "cust-1", "template_id": id, "variables": { "name": [1], "day": "x", "time": "y" } }),
            "variables.name",
        ),
    ] {
        let refused = answer(
            app.post_json("/api/messages/send", &staff, &body).await,
            422,
        )
        .await;
        assert!(message_of(&refused).contains(names), "{body}: {refused}");
    }
    assert_eq!(app.count("communications").await, 1);

    // An edit is a new version; what was sent keeps naming the old one.
    let edited = answer(
        app.patch_json(
            &format!("/api/communications/templates/{id}"),
            &staff,
            &json!({ "content": "Hello {{name}}, see you {{day}}." }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(edited["version"], 2);
    assert_eq!(edited["variables"], json!(["name", "day"]));
    let sent = answer(
        app.post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "template_id": id, "variables": { "name": "Bo", "day": "Friday" } }),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(sent["template_version"], 2);
    let versions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_template_versions WHERE template_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(versions, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sms_and_email_templates_render_with_segments_and_subjects() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let sms = create(
        &app,
        json!({ "name": "On the way", "type": "sms", "content": "{{crew}} is on the way: {{eta}}" }),
    )
    .await;
    let preview = answer(
        app.post_json(
            &format!(
                "/api/communications/templates/{}/preview",
                sms["id"].as_str().unwrap()
            ),
            &staff,
            &json!({ "variables": { "crew": "Team A", "eta": "x".repeat(200) } }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(preview["segments"], 2);
    assert!(
        preview["message"]
            .as_str()
            .unwrap()
            .starts_with("Team A is on the way")
    );
    let refused = answer(
        app.post_json(
            &format!(
                "/api/communications/templates/{}/preview",
                sms["id"].as_str().unwrap()
            ),
            &staff,
            &json!({ "variables": {} }),
        )
        .await,
        422,
    )
    .await;
    assert!(message_of(&refused).contains("crew, eta"));
    let sent = answer(
        app.post_json(
            "/api/integrations/ringcentral/sms",
            &staff,
            &json!({ "customer_id": "cust-1", "to": "+14155550100", "template_id": sms["id"],
                     "variables": { "crew": "Team A", "eta": "10 min" } }),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(sent["message"], "Team A is on the way: 10 min");
    assert_eq!(sent["segments"], 1);

    let email = create(
        &app,
        json!({ "name": "Quote", "type": "email", "subject": "Your quote {{number}}",
                "content": "Dear {{name}}, your quote is attached." }),
    )
    .await;
    assert_eq!(email["variables"], json!(["number", "name"]));
    let sent = answer(
        app.post_json(
            "/api/integrations/gmail/send",
            &staff,
            &json!({ "customer_id": "cust-1", "to": "jane@example.com", "template_id": email["id"],
                     "variables": { "number": "Q-7", "name": "Jane" } }),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(sent["subject"], "Your quote Q-7");
    assert_eq!(sent["message"], "Dear Jane, your quote is attached.");
    // A template of another channel does not fit.
    let refused = answer(
        app.post_json(
            "/api/integrations/ringcentral/sms",
            &staff,
            &json!({ "customer_id": "cust-1", "to": "+14155550100", "template_id": email["id"],
                     "variables": { "number": "1", "name": "J" } }),
        )
        .await,
        422,
    )
    .await;
    assert!(message_of(&refused).contains("is for email"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_filters_and_deleting_deactivates() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let a = create(
        &app,
        json!({ "name": "A", "type": "inapp", "category": "billing", "content": "a" }),
    )
    .await;
    create(
        &app,
        json!({ "name": "B", "type": "sms", "category": "billing", "content": "b" }),
    )
    .await;
    create(
        &app,
        json!({ "name": "C", "type": "inapp", "category": "scheduling", "content": "c" }),
    )
    .await;
    let names = |body: Value| -> Vec<String> {
        body["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |query: &'static str| {
        let app = &app;
        let staff = staff.clone();
        async move {
            answer(
                app.get(&format!("/api/communications/templates{query}"), &staff)
                    .await,
                200,
            )
            .await
        }
    };
    assert_eq!(names(list("").await), ["A", "B", "C"]);
    assert_eq!(names(list("?type=inapp").await), ["A", "C"]);
    assert_eq!(names(list("?category=billing").await), ["A", "B"]);
    assert_eq!(names(list("?type=inapp&category=billing").await), ["A"]);

    let id = a["id"].as_str().unwrap();
    let deleted = answer(
        app.delete(&format!("/api/communications/templates/{id}"), &staff)
            .await,
        200,
    )
    .await;
    assert_eq!(deleted["active"], false);
    assert_eq!(names(list("").await), ["B", "C"]);
    assert_eq!(names(list("?active=false").await), ["A"]);
    assert_eq!(names(list("?active=all").await), ["A", "B", "C"]);
    // Its name is free again; a deleted template is not sent from.
    create(
        &app,
        json!({ "name": "A", "type": "inapp", "content": "again" }),
    )
    .await;
    let refused = answer(
        app.post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "template_id": id, "variables": {} }),
        )
        .await,
        422,
    )
    .await;
    assert!(message_of(&refused).contains("no active template"));
    answer(
        app.delete(&format!("/api/communications/templates/{id}"), &staff)
            .await,
        200,
    )
    .await;
    answer(
        app.patch_json(
            &format!("/api/communications/templates/{id}"),
            &staff,
            &json!({ "content": "x" }),
        )
        .await,
        409,
    )
    .await;
    answer(
        app.get("/api/communications/templates?active=maybe", &staff)
            .await,
        400,
    )
    .await;
    answer(
        app.get("/api/communications/templates?type=phone", &staff)
            .await,
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_templates_are_refused_naming_the_problem_and_only_staff_manage_them() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    create(
        &app,
        json!({ "name": "Taken", "type": "inapp", "content": "x" }),
    )
    .await;
    for (body, status, names) in [
        (
            json!({ "name": "N", "type": "inapp", "content": "Hi {{name" }),
            400,
            "not closed",
        ),
        (
            json!({ "name": "N", "type": "inapp", "content": "Hi {{first name}}" }),
            400,
            "placeholder",
        ),
        (
            json!({ "name": "N", "type": "fax", "content": "x" }),
            400,
            "type",
        ),
        (
            json!({ "name": "N", "type": "phone", "content": "x" }),
            400,
            "type",
        ),
        (
            json!({ "name": "", "type": "inapp", "content": "x" }),
            400,
            "name",
        ),
        (
            json!({ "name": "N", "type": "inapp", "content": " " }),
            400,
            "content",
        ),
        (
            json!({ "name": "N", "type": "sms", "content": "x", "subject": "s" }),
            400,
            "subject",
        ),
        (
            json!({ "name": "N", "type": "email", "content": "x", "subject": "a\nb" }),
            400,
            "subject",
        ),
        (
            json!({ "name": "N", "type": "email", "content": "x", "subject": "{{a" }),
            400,
            "subject",
        ),
        (
            json!({ "name": "taken", "type": "sms", "content": "x" }),
            409,
            "taken",
        ),
        (json!({ "name": "N", "content": "x" }), 422, "type"),
    ] {
        let refused = answer(app.create_template(&staff, &body).await, status).await;
        assert!(
            message_of(&refused).to_lowercase().contains(names),
            "{body}: {refused}"
        );
    }
    assert_eq!(app.count("message_templates").await, 1);

    let customer = app.customer_token("cust-1");
    let crew = app.token("crew-1", Role::Crew, None);
    for token in [&customer, &crew] {
        answer(
            app.create_template(
                token,
                &json!({ "name": "M", "type": "inapp", "content": "x" }),
            )
            .await,
            403,
        )
        .await;
        answer(app.get("/api/communications/templates", token).await, 403).await;
    }
    answer(
        app.get("/api/communications/templates/not-a-uuid", &staff)
            .await,
        400,
    )
    .await;
    answer(
        app.get(
            &format!("/api/communications/templates/{}", uuid::Uuid::nil()),
            &staff,
        )
        .await,
        404,
    )
    .await;
}
