//! Field crews: crews and projects by role, project messages and internal notes,
//! dispatch (texts, reminders, acknowledgement), positions, arrival and broadcasts.

use std::time::Duration;

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, TestOptions, json_of, spawn_app, spawn_app_with};
use serde_json::{Value, json};

use crate::WAIT;

const SITE: (f64, f64) = (37.7749, -122.4194);

fn crew_token(app: &TestApp, user: &str) -> String {
    app.token(user, Role::Crew, None)
}

/// A crew with the given members (user ids; phones made up from their index).
async fn crew(app: &TestApp, name: &str, users: &[&str]) -> String {
    let members: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            json!({ "user_id": user, "name": format!("Member {user}"),
                    "phone": format!("+1415555{:04}", 100 + i + name.len() * 10) })
        })
        .collect();
    let body = json_of(
        app.post_json(
            "/api/crews",
            &app.staff_token(),
            &json!({ "name": name, "members": members }),
        )
        .await,
        201,
    )
    .await;
    body["id"].as_str().unwrap().to_owned()
}

async fn project(app: &TestApp, customer: &str, crew: Option<&str>) -> String {
    let body = json_of(
        app.post_json(
            "/api/projects",
            &app.staff_token(),
            &json!({ "customer_id": customer, "title": "Roof repair", "address": "1 Main St",
                     "lat": SITE.0, "lng": SITE.1, "crew_id": crew,
                     "scheduled_start": "2026-12-10T08:00:00Z",
                     "scheduled_end": "2026-12-10T12:00:00Z" }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(body["status"], "scheduled");
    body["id"].as_str().unwrap().to_owned()
}

fn message_of(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_manage_crews_and_a_user_is_in_one_crew_at_a_time() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let alpha = crew(&app, "Alpha", &["crew-a1", "crew-a2"]).await;
    let beta = crew(&app, "Beta", &["crew-b1"]).await;

    // The same user in a second crew is a conflict naming them.
    let body = json_of(
        app.post_json(
            "/api/crews",
            &staff,
            &json!({ "name": "Gamma", "members": [{ "user_id": "crew-a1", "name": "A", "phone": "+14155550199" }] }),
        )
        .await,
        409,
    )
    .await;
    assert!(message_of(&body).contains("crew-a1"), "{body}");
    // Bad input names the field.
    for (request, field) in [
        (json!({ "name": "" }), "name"),
        (
            json!({ "name": "G", "members": [{ "user_id": "x", "name": "X", "phone": "not a number" }] }),
            "members[0].phone",
        ),
        (
            json!({ "name": "G", "members": [{ "user_id": "bad id!", "name": "X", "phone": "+14155550198" }] }),
            "members[0].user_id",
        ),
        (
            json!({ "name": "G", "members": [
                { "user_id": "x", "name": "X", "phone": "+14155550198" },
                { "user_id": "x", "name": "Y", "phone": "+14155550197" }] }),
            "members[1].user_id",
        ),
    ] {
        let body = json_of(app.post_json("/api/crews", &staff, &request).await, 422).await;
        assert!(message_of(&body).starts_with(field), "{field}: {body}");
    }
    assert_eq!(app.count("crews").await, 2, "nothing half-written");

    // Roles: staff see all; a member their own; another crew's is unknown; customers none.
    let all = json_of(app.get("/api/crews", &staff).await, 200).await;
    assert_eq!(all["crews"].as_array().unwrap().len(), 2);
    let own = json_of(
        app.get("/api/crews", &crew_token(&app, "crew-a2")).await,
        200,
    )
    .await;
    assert_eq!(own["crews"].as_array().unwrap().len(), 1);
    assert_eq!(own["crews"][0]["id"], alpha.as_str());
    assert_eq!(own["crews"][0]["members"].as_array().unwrap().len(), 2);
    let path = format!("/api/crews/{alpha}");
    json_of(app.get(&path, &crew_token(&app, "crew-a1")).await, 200).await;
    json_of(app.get(&path, &crew_token(&app, "crew-b1")).await, 404).await;
    json_of(app.get(&path, &app.customer_token("cust-1")).await, 403).await;
    json_of(
        app.get("/api/crews", &app.customer_token("cust-1")).await,
        403,
    )
    .await;
    json_of(
        app.patch_json(
            &path,
            &crew_token(&app, "crew-a1"),
            &json!({ "name": "Mine" }),
        )
        .await,
        403,
    )
    .await;
    json_of(app.get("/api/crews/not-a-uuid", &staff).await, 400).await;

    // Members move: out of Beta, then into Alpha.
    json_of(
        app.patch_json(
            &path,
            &staff,
            &json!({ "members": [{ "user_id": "crew-b1", "name": "B", "phone": "+14155550177" }] }),
        )
        .await,
        409,
    )
    .await;
    json_of(
        app.patch_json(
            &format!("/api/crews/{beta}"),
            &staff,
            &json!({ "members": [] }),
        )
        .await,
        200,
    )
    .await;
    let renamed = json_of(
        app.patch_json(
            &path,
            &staff,
            &json!({ "name": "Alpha Two", "members": [{ "user_id": "crew-b1", "name": "B", "phone": "(415) 555-0177" }] }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(renamed["name"], "Alpha Two");
    assert_eq!(
        renamed["members"][0]["phone"], "+14155550177",
        "stored as E.164"
    );

    // A crew with a project under way cannot be deleted; once it is done, it can.
    let project_id = project(&app, "cust-1", Some(&alpha)).await;
    let body = json_of(app.delete(&path, &staff).await, 409).await;
    assert!(message_of(&body).contains(&project_id), "{body}");
    json_of(
        app.patch_json(
            &format!("/api/projects/{project_id}"),
            &staff,
            &json!({ "status": "cancelled" }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(app.delete(&path, &staff).await.status(), 204);
    json_of(app.get(&path, &staff).await, 404).await;
    // Its members are free again.
    crew(&app, "Delta", &["crew-b1"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn projects_are_seen_by_their_customer_and_crew_and_move_forward_only() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let alpha = crew(&app, "Alpha", &["crew-a1"]).await;
    let beta = crew(&app, "Beta", &["crew-b1"]).await;
    let mine = project(&app, "cust-1", Some(&alpha)).await;
    let other = project(&app, "cust-2", Some(&beta)).await;

    for (request, field) in [
        (
            json!({ "customer_id": "cust-1", "title": "T", "address": "A", "lat": 91.0, "lng": 0.0 }),
            "lat",
        ),
        (
            json!({ "customer_id": "cust-1", "title": "T", "address": "A", "lat": 0.0, "lng": -181.0 }),
            "lng",
        ),
        (
            json!({ "customer_id": "cust-1", "title": " ", "address": "A", "lat": 0.0, "lng": 0.0 }),
            "title",
        ),
        (
            json!({ "customer_id": "cust-1", "title": "T", "address": "A", "lat": 0.0, "lng": 0.0,
                    "crew_id": "0190a3b0-0000-7000-8000-000000000000" }),
            "crew_id",
        ),
        (
            json!({ "customer_id": "cust-1", "title": "T", "address": "A", "lat": 0.0, "lng": 0.0,
                    "scheduled_start": "2026-12-10T12:00:00Z", "scheduled_end": "2026-12-10T08:00:00Z" }),
            "scheduled_end",
        ),
    ] {
        let body = json_of(app.post_json("/api/projects", &staff, &request).await, 422).await;
        assert!(message_of(&body).starts_with(field), "{field}: {body}");
    }
    json_of(
        app.post_json(
            "/api/projects",
            &app.customer_token("cust-1"),
            &json!({ "customer_id": "cust-1", "title": "T", "address": "A", "lat": 0.0, "lng": 0.0 }),
        )
        .await,
        403,
    )
    .await;

    // Who sees which project.
    let customer = app.customer_token("cust-1");
    let a1 = crew_token(&app, "crew-a1");
    let b1 = crew_token(&app, "crew-b1");
    for (token, id, status) in [
        (&staff, &mine, 200),
        (&customer, &mine, 200),
        (&customer, &other, 404),
        (&a1, &mine, 200),
        (&a1, &other, 404),
        (&b1, &other, 200),
    ] {
        json_of(app.get(&format!("/api/projects/{id}"), token).await, status).await;
    }
    let listed = |body: Value| -> Vec<String> {
        body["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        listed(json_of(app.get("/api/projects", &customer).await, 200).await),
        vec![mine.clone()]
    );
    assert_eq!(
        listed(json_of(app.get("/api/projects", &a1).await, 200).await),
        vec![mine.clone()]
    );
    assert_eq!(
        listed(json_of(app.get("/api/projects", &staff).await, 200).await).len(),
        2
    );
    json_of(
        app.get("/api/projects?customer_id=cust-2", &customer).await,
        403,
    )
    .await;
    json_of(
        app.get(&format!("/api/projects?crew_id={beta}"), &a1).await,
        403,
    )
    .await;
    // Filters.
    let by = |query: &str| app.get_owned(format!("/api/projects?{query}"), staff.clone());
    assert_eq!(
        listed(json_of(by(&format!("crew_id={beta}")).await, 200).await),
        vec![other.clone()]
    );
    assert_eq!(
        listed(
            json_of(
                by("customer_id=cust-1&status=scheduled&date=2026-12-10").await,
                200
            )
            .await
        ),
        vec![mine.clone()]
    );
    assert!(listed(json_of(by("date=2026-12-11").await, 200).await).is_empty());
    json_of(by("date=10/12/2026").await, 400).await;
    json_of(by("status=finished").await, 400).await;

    // Status moves forward only.
    let path = format!("/api/projects/{mine}");
    json_of(
        app.patch_json(&path, &staff, &json!({ "status": "on_site" }))
            .await,
        200,
    )
    .await;
    let body = json_of(
        app.patch_json(&path, &staff, &json!({ "status": "dispatched" }))
            .await,
        409,
    )
    .await;
    assert!(message_of(&body).contains("forward only"), "{body}");
    json_of(
        app.patch_json(&path, &staff, &json!({ "status": "done" }))
            .await,
        200,
    )
    .await;
    json_of(
        app.patch_json(&path, &staff, &json!({ "status": "cancelled" }))
            .await,
        409,
    )
    .await;
    json_of(
        app.patch_json(&path, &staff, &json!({ "title": "Later" }))
            .await,
        409,
    )
    .await;
    json_of(
        app.patch_json(&path, &a1, &json!({ "title": "Mine" }))
            .await,
        403,
    )
    .await;
    // Unassigning with null.
    let body = json_of(
        app.patch_json(
            &format!("/api/projects/{other}"),
            &staff,
            &json!({ "crew_id": null }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["crew_id"], Value::Null);
    json_of(app.get(&format!("/api/projects/{other}"), &b1).await, 404).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crew_writes_on_its_projects_and_internal_notes_never_reach_the_customer() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let alpha = crew(&app, "Alpha", &["crew-a1"]).await;
    crew(&app, "Beta", &["crew-b1"]).await;
    let mine = project(&app, "cust-1", Some(&alpha)).await;
    let theirs = project(&app, "cust-2", None).await;
    let customer = app.customer_token("cust-1");
    let a1 = crew_token(&app, "crew-a1");
    let b1 = crew_token(&app, "crew-b1");

    let mut customer_ws = app.ws("user-of-cust-1", &customer).await;
    let mut a1_ws = app.ws("crew-a1", &a1).await;
    let mut b1_ws = app.ws("crew-b1", &b1).await;
    let mut staff_ws = app.ws("staff-1", &staff).await;

    let send = |token: &str, body: Value| {
        app.post_owned("/api/messages/send".to_owned(), token.to_owned(), body)
    };
    // A crew member writes to the customer on their project.
    let sent = json_of(
        send(
            &a1,
            json!({ "customer_id": "cust-1", "project_id": mine, "message": "On our way" }),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(sent["sender_role"], "crew");
    assert_eq!(sent["project_id"], mine.as_str());
    let frame = customer_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("customer hears");
    assert_eq!(frame["content"], "On our way");
    assert_eq!(frame["project_id"], mine.as_str());
    a1_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("the crew hears its own");

    // And an internal note: staff and the crew see it, the customer never.
    let note = json_of(
        send(
            &a1,
            json!({ "customer_id": "cust-1", "project_id": mine, "message": "Gate code 4412",
                         "visibility": "internal" }),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(note["visibility"], "internal");
    let frame = staff_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("staff");
    assert_eq!(frame["content"], "On our way");
    let frame = staff_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("staff");
    assert_eq!(frame["content"], "Gate code 4412");
    assert_eq!(frame["internal"], true);
    let frame = a1_ws.next_of_type("message.new", WAIT).await.expect("crew");
    assert_eq!(frame["content"], "Gate code 4412");
    // Staff's own note on the project reaches the crew too.
    json_of(
        send(
            &staff,
            json!({ "customer_id": "cust-1", "project_id": mine, "message": "Dog on site",
                            "visibility": "internal" }),
        )
        .await,
        202,
    )
    .await;
    a1_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("crew sees staff's note");
    app.assert_no_jobs_left().await;

    let customer_frames = customer_ws.drain(Duration::from_millis(500)).await;
    assert!(
        customer_frames.iter().all(|f| !f.to_string().contains("Gate code") && !f.to_string().contains("Dog on site")),
        "{customer_frames:?}"
    );
    let b1_frames = b1_ws.drain(Duration::from_millis(100)).await;
    assert!(
        b1_frames.iter().all(|f| f["type"] != "message.new"),
        "{b1_frames:?}"
    );

    // Listings: the customer's has no notes; the crew lists the project; search too.
    let listed = |body: Value| -> Vec<String> {
        body["communications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let own = listed(json_of(app.get("/api/communications", &customer).await, 200).await);
    assert_eq!(own, vec!["On our way"]);
    let by_project = format!("/api/communications?project_id={mine}");
    assert_eq!(
        listed(json_of(app.get(&by_project, &customer).await, 200).await),
        vec!["On our way"]
    );
    assert_eq!(
        listed(json_of(app.get(&by_project, &a1).await, 200).await),
        vec!["Dog on site", "Gate code 4412", "On our way"]
    );
    assert_eq!(
        listed(json_of(app.get(&by_project, &staff).await, 200).await).len(),
        3
    );
    json_of(app.get(&by_project, &b1).await, 404).await;
    json_of(app.get("/api/communications", &a1).await, 403).await;
    let note_id = note["id"].as_str().unwrap();
    json_of(
        app.get(&format!("/api/communications/{note_id}/status"), &customer)
            .await,
        404,
    )
    .await;
    json_of(
        app.get(&format!("/api/communications/{note_id}/status"), &a1)
            .await,
        200,
    )
    .await;
    let hits = |body: Value| body["communications"].as_array().map_or(0, Vec::len);
    assert_eq!(
        hits(
            json_of(
                app.search(&customer, &json!({ "query": "gate code" }))
                    .await,
                200
            )
            .await
        ),
        0
    );
    assert_eq!(
        hits(
            json_of(
                app.search(&staff, &json!({ "query": "gate code" })).await,
                200
            )
            .await
        ),
        1
    );
    // The conversation's latest message is not the note.
    let conversations = json_of(app.conversations(&staff, "").await, 200).await;
    assert!(
        !conversations.to_string().contains("Dog on site"),
        "{conversations}"
    );

    // Refusals.
    let body = json_of(
        send(&a1, json!({ "customer_id": "cust-1", "message": "hi" })).await,
        403,
    )
    .await;
    assert!(message_of(&body).contains("project_id"), "{body}");
    json_of(
        send(
            &b1,
            json!({ "customer_id": "cust-1", "project_id": mine, "message": "hi" }),
        )
        .await,
        403,
    )
    .await;
    let body = json_of(
        send(
            &staff,
            json!({ "customer_id": "cust-1", "project_id": theirs, "message": "hi" }),
        )
        .await,
        422,
    )
    .await;
    assert!(message_of(&body).starts_with("project_id"), "{body}");
    json_of(
        send(
            &customer,
            json!({ "customer_id": "cust-1", "message": "psst", "visibility": "internal" }),
        )
        .await,
        403,
    )
    .await;
    json_of(
        send(
            &staff,
            json!({ "customer_id": "cust-1", "message": "x", "visibility": "secret" }),
        )
        .await,
        422,
    )
    .await;
    json_of(
        app.post_json(
            "/api/integrations/ringcentral/sms",
            &a1,
            &json!({ "customer_id": "cust-1", "project_id": mine, "to": "+14155550100", "message": "x" }),
        )
        .await,
        403,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dispatch_texts_offline_members_reminds_the_silent_and_ends_on_arrival() {
    let app = spawn_app_with(TestOptions {
        dispatch_ack: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let staff = app.staff_token();
    let alpha = crew(&app, "Alpha", &["crew-a1", "crew-a2", "crew-a3"]).await;
    let beta = crew(&app, "Beta", &["crew-b1"]).await;
    let project_id = project(&app, "cust-1", None).await;
    let phones: Value = json_of(app.get(&format!("/api/crews/{alpha}"), &staff).await, 200).await;
    let phone = |user: &str| -> String {
        phones["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == user)
            .unwrap()["phone"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let a1 = crew_token(&app, "crew-a1");
    let a2 = crew_token(&app, "crew-a2");
    let customer = app.customer_token("cust-1");
    // a1 and a2 are connected; a3 is not.
    let mut a1_ws = app.ws("crew-a1", &a1).await;
    let mut a2_ws = app.ws("crew-a2", &a2).await;
    let mut b1_ws = app.ws("crew-b1", &crew_token(&app, "crew-b1")).await;
    let mut staff_ws = app.ws("staff-1", &staff).await;
    let mut customer_ws = app.ws("user-of-cust-1", &customer).await;

    let path = format!("/api/projects/{project_id}/dispatch");
    // Refusals first: nothing is written.
    json_of(app.post_json(&path, &staff, &json!({})).await, 422).await;
    json_of(
        app.post_json(&path, &a1, &json!({ "crew_id": alpha }))
            .await,
        403,
    )
    .await;
    json_of(
        app.post_json(&path, &staff, &json!({ "crew_id": alpha, "eta": "soon" }))
            .await,
        422,
    )
    .await;
    assert_eq!(app.count("dispatches").await, 0);

    let body = json_of(
        app.post_json(
            &path,
            &staff,
            &json!({ "crew_id": alpha, "note": "Bring the long ladder", "eta": "2026-12-10T09:30:00Z",
                     "notify_customer": true }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(body["project"]["status"], "dispatched");
    assert_eq!(body["project"]["crew_id"], alpha.as_str());
    let dispatch_id = body["dispatch"]["id"].as_str().unwrap().to_owned();

    for ws in [&mut a1_ws, &mut a2_ws] {
        let frame = ws
            .next_of_type("dispatch.new", WAIT)
            .await
            .expect("crew hears");
        assert_eq!(frame["dispatch_id"], dispatch_id.as_str());
        assert_eq!(frame["note"], "Bring the long ladder");
    }
    staff_ws
        .next_of_type("dispatch.new", WAIT)
        .await
        .expect("staff hear");
    let on_the_way = customer_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("customer told");
    assert!(
        on_the_way["content"]
            .as_str()
            .unwrap()
            .contains("on the way"),
        "{on_the_way}"
    );

    // The offline member is texted at once; the two connected ones are not acked, so
    // after DISPATCH_ACK_SECS each of them is texted once. a1 acknowledges in time? No:
    // a2 acknowledges, so only a1 is reminded.
    let ack = format!("/api/dispatches/{dispatch_id}/ack");
    let acked = json_of(app.post_json(&ack, &a2, &json!({})).await, 200).await;
    assert_eq!(acked["user_id"], "crew-a2");
    let again = json_of(app.post_json(&ack, &a2, &json!({})).await, 200).await;
    assert_eq!(
        again["acknowledged_at"], acked["acknowledged_at"],
        "idempotent"
    );
    let frame = staff_ws
        .next_of_type("dispatch.acknowledged", WAIT)
        .await
        .expect("staff hear the ack");
    assert_eq!(frame["user_id"], "crew-a2");
    json_of(
        app.post_json(&ack, &crew_token(&app, "crew-b1"), &json!({}))
            .await,
        404,
    )
    .await;
    json_of(app.post_json(&ack, &staff, &json!({})).await, 403).await;
    // The project shows who acknowledged (what the portal's crew view reads on load).
    let project = json_of(
        app.get(&format!("/api/projects/{project_id}"), &a2).await,
        200,
    )
    .await;
    assert_eq!(project["dispatches"][0]["id"], json!(dispatch_id));
    assert_eq!(
        project["dispatches"][0]["acknowledged_by"],
        json!(["crew-a2"])
    );

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let to: Vec<String> = app
            .ringcentral
            .sent()
            .iter()
            .map(|s| s["to"][0]["phoneNumber"].as_str().unwrap().to_owned())
            .collect();
        if to.len() >= 2 {
            assert!(to.contains(&phone("crew-a3")), "the offline member: {to:?}");
            assert!(to.contains(&phone("crew-a1")), "the silent member: {to:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "texts: {to:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.assert_no_jobs_left().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = app.ringcentral.sent();
    assert_eq!(
        sent.len(),
        2,
        "each reminded once, the acknowledged never: {sent:?}"
    );
    // RingCentral's message store keeps an SMS's text as its `subject`.
    assert!(
        sent.iter().all(|s| s["subject"]
            .as_str()
            .is_some_and(|text| text.contains("Bring the long ladder"))),
        "{sent:?}"
    );

    // Positions: far away changes nothing; within ARRIVAL_RADIUS_M the crew has arrived.
    let location = format!("/api/crews/{alpha}/location");
    let far = json_of(
        app.post_json(
            &location,
            &a1,
            &json!({ "lat": SITE.0 + 0.01, "lng": SITE.1 }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(far["arrived_projects"], json!([]));
    let near = json_of(
        app.post_json(
            &location,
            &a1,
            &json!({ "lat": SITE.0 + 0.0005, "lng": SITE.1, "accuracy_m": 12.5 }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(near["arrived_projects"], json!([project_id]));
    let frame = staff_ws
        .next_of_type("project.arrived", WAIT)
        .await
        .expect("staff hear the arrival");
    assert_eq!(frame["dispatch_id"], dispatch_id.as_str());
    let arrived = customer_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("customer told");
    assert!(
        arrived["content"].as_str().unwrap().contains("has arrived"),
        "{arrived}"
    );
    let project: Value = json_of(
        app.get(&format!("/api/projects/{project_id}"), &staff)
            .await,
        200,
    )
    .await;
    assert_eq!(project["status"], "on_site");
    // Once per dispatch.
    let again = json_of(
        app.post_json(&location, &a1, &json!({ "lat": SITE.0, "lng": SITE.1 }))
            .await,
        201,
    )
    .await;
    assert_eq!(again["arrived_projects"], json!([]));
    app.assert_no_jobs_left().await;

    // The customer saw two messages of the dispatch and nothing of the crew's side.
    let frames = customer_ws.drain(Duration::from_millis(300)).await;
    assert!(
        frames.iter().all(|f| !matches!(
            f["type"].as_str(),
            Some("dispatch.new" | "dispatch.acknowledged" | "project.arrived")
        )),
        "{frames:?}"
    );
    let listing = json_of(app.get("/api/communications", &customer).await, 200).await;
    let texts: Vec<&str> = listing["communications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts.iter().all(|t| !t.contains("ladder")),
        "crew texts stay internal: {texts:?}"
    );
    // Another crew heard nothing of it.
    let frames = b1_ws.drain(Duration::from_millis(100)).await;
    assert!(frames.iter().all(|f| f["type"] == "presence"), "{frames:?}");

    // A project on site cannot be dispatched again.
    json_of(
        app.post_json(&path, &staff, &json!({ "crew_id": beta }))
            .await,
        409,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn positions_are_checked_read_by_staff_and_broadcasts_reach_crews_nearby() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    // crew-a2 never connects: the broadcast texts them.
    let alpha = crew(&app, "Alpha", &["crew-a1", "crew-a2"]).await;
    let beta = crew(&app, "Beta", &["crew-b1"]).await;
    let a1 = crew_token(&app, "crew-a1");
    let b1 = crew_token(&app, "crew-b1");
    let location = format!("/api/crews/{alpha}/location");

    for (request, field) in [
        (json!({ "lat": 91.0, "lng": 0.0 }), "lat"),
        (json!({ "lat": 0.0, "lng": 180.5 }), "lng"),
        (
            json!({ "lat": 0.0, "lng": 0.0, "accuracy_m": -1.0 }),
            "accuracy_m",
        ),
        (
            json!({ "lat": 0.0, "lng": 0.0, "at": "2099-01-01T00:00:00Z" }),
            "at",
        ),
    ] {
        let body = json_of(app.post_json(&location, &a1, &request).await, 422).await;
        assert!(message_of(&body).starts_with(field), "{field}: {body}");
    }
    json_of(
        app.post_json(&location, &a1, &json!({ "lat": "north", "lng": 0.0 }))
            .await,
        422,
    )
    .await;
    json_of(
        app.post_json(&location, &b1, &json!({ "lat": 0.0, "lng": 0.0 }))
            .await,
        403,
    )
    .await;
    json_of(
        app.post_json(&location, &staff, &json!({ "lat": 0.0, "lng": 0.0 }))
            .await,
        403,
    )
    .await;
    assert_eq!(app.count("crew_locations").await, 0);

    // Alpha in San Francisco (twice: the latest counts), Beta in Los Angeles.
    json_of(
        app.post_json(&location, &a1, &json!({ "lat": 10.0, "lng": 10.0 }))
            .await,
        201,
    )
    .await;
    json_of(
        app.post_json(&location, &a1, &json!({ "lat": SITE.0, "lng": SITE.1 }))
            .await,
        201,
    )
    .await;
    json_of(
        app.post_json(
            &format!("/api/crews/{beta}/location"),
            &b1,
            &json!({ "lat": 34.05, "lng": -118.24 }),
        )
        .await,
        201,
    )
    .await;
    let latest = json_of(app.get("/api/crews/locations", &staff).await, 200).await;
    let positions = latest["locations"].as_array().unwrap();
    assert_eq!(positions.len(), 2);
    assert_eq!(positions[0]["crew_name"], "Alpha");
    assert_eq!(positions[0]["lat"], SITE.0);
    json_of(app.get("/api/crews/locations", &a1).await, 403).await;
    json_of(
        app.get("/api/crews/locations", &app.customer_token("cust-1"))
            .await,
        403,
    )
    .await;

    let mut a1_ws = app.ws("crew-a1", &a1).await;
    let mut b1_ws = app.ws("crew-b1", &b1).await;
    let mut customer_ws = app
        .ws("user-of-cust-1", &app.customer_token("cust-1"))
        .await;
    // 50 km around Oakland reaches Alpha, not Beta (about 550 km away).
    let body = json_of(
        app.post_json(
            "/api/crews/broadcast",
            &staff,
            &json!({ "lat": 37.8044, "lng": -122.2712, "radius_km": 50.0, "message": "Storm warning: secure ladders" }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["crews"].as_array().unwrap().len(), 1);
    assert_eq!(body["crews"][0]["crew_id"], alpha.as_str());
    let frame = a1_ws
        .next_of_type("crew.broadcast", WAIT)
        .await
        .expect("Alpha hears");
    assert_eq!(frame["message"], "Storm warning: secure ladders");
    assert_eq!(body["crews"][0]["texted"], 1, "{body}");
    let members: Value = json_of(app.get(&format!("/api/crews/{alpha}"), &staff).await, 200).await;
    let a2_phone = members["members"][1]["phone"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    let texts = loop {
        let texts: Vec<Value> = app
            .ringcentral
            .sent()
            .into_iter()
            .filter(|s| s["to"][0]["phoneNumber"] == a2_phone.as_str())
            .collect();
        if !texts.is_empty() || tokio::time::Instant::now() > deadline {
            break texts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(texts.len(), 1, "the offline member is texted once");
    assert_eq!(
        texts[0]["subject"],
        "From dispatch: Storm warning: secure ladders"
    );
    assert!(
        app.ringcentral
            .sent()
            .iter()
            .all(|s| s["to"][0]["phoneNumber"] == a2_phone.as_str()),
        "the connected member is not texted"
    );
    app.assert_no_jobs_left().await;
    let frames = b1_ws.drain(Duration::from_millis(500)).await;
    assert!(
        frames.iter().all(|f| f["type"] != "crew.broadcast"),
        "{frames:?}"
    );
    let frames = customer_ws.drain(Duration::from_millis(100)).await;
    assert!(
        frames.iter().all(|f| f["type"] != "crew.broadcast"),
        "{frames:?}"
    );

    for (request, status) in [
        (
            json!({ "lat": 37.8, "lng": -122.2, "radius_km": 0.0, "message": "x" }),
            422,
        ),
        (
            json!({ "lat": 37.8, "lng": -122.2, "radius_km": 501.0, "message": "x" }),
            422,
        ),
        (
            json!({ "lat": 37.8, "lng": -122.2, "radius_km": 5.0, "message": " " }),
            422,
        ),
        (
            json!({ "lat": 95.0, "lng": -122.2, "radius_km": 5.0, "message": "x" }),
            422,
        ),
    ] {
        json_of(
            app.post_json("/api/crews/broadcast", &staff, &request)
                .await,
            status,
        )
        .await;
    }
    json_of(
        app.post_json(
            "/api/crews/broadcast",
            &a1,
            &json!({ "lat": 37.8, "lng": -122.2, "radius_km": 5.0, "message": "x" }),
        )
        .await,
        403,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_customer_is_told_on_the_channel_they_chose_or_last_wrote_on() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    // cust-9 last wrote by SMS (filed as an inbound SMS is).
    sqlx::query(
        "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role,
                                     message, status, remote_address, local_address)
         VALUES (gen_random_uuid(), 'cust-9', 'sms', 'inbound', '+14155550188', 'customer',
                 'When do you come?', 'delivered', '+14155550188', '+16505550100')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let template = json_of(
        app.create_template(
            &staff,
            &json!({ "name": "crew_on_the_way", "type": "sms",
                     "content": "{{crew}} is on the way to {{address}}, ETA {{eta}}" }),
        )
        .await,
        201,
    )
    .await;
    let alpha = crew(&app, "Alpha", &["crew-a1"]).await;
    let project_id = project(&app, "cust-9", Some(&alpha)).await;
    let body = json_of(
        app.post_json(
            &format!("/api/projects/{project_id}/dispatch"),
            &staff,
            &json!({ "eta": "2026-12-10T09:30:00Z", "notify_customer": true }),
        )
        .await,
        201,
    )
    .await;
    let message_id = body["customer_message_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&message_id, "sent").await;
    let to_customer: Vec<Value> = app
        .ringcentral
        .sent()
        .into_iter()
        .filter(|s| s["to"][0]["phoneNumber"] == "+14155550188")
        .collect();
    assert_eq!(to_customer.len(), 1, "{to_customer:?}");
    assert_eq!(
        to_customer[0]["subject"],
        "Alpha is on the way to 1 Main St, ETA 09:30 UTC"
    );
    let row: (String, String, Option<uuid::Uuid>, Option<uuid::Uuid>) = sqlx::query_as(
        "SELECT type, visibility, template_id, project_id FROM communications WHERE id = $1::uuid",
    )
    .bind(&message_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(row.0, "sms");
    assert_eq!(row.1, "public");
    assert_eq!(row.2.unwrap().to_string(), template["id"].as_str().unwrap());
    assert_eq!(row.3.unwrap().to_string(), project_id);
    app.assert_no_jobs_left().await;

    // A channel the customer chose wins over the one they last wrote on.
    let put = app
        .put_json(
            "/api/customers/cust-9/contact",
            &staff,
            &json!({ "email": "nine@example.org", "fallback": "email" }),
        )
        .await;
    assert_eq!(put.status(), 200);
    let body = json_of(
        app.post_json(
            &format!("/api/projects/{project_id}/dispatch"),
            &staff,
            &json!({ "notify_customer": true }),
        )
        .await,
        201,
    )
    .await;
    let message_id = body["customer_message_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&message_id, "sent").await;
    let mails = app.gmail.sent();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["nine@example.org"]);
    assert_eq!(mails[0].subject, "Your crew is on the way");
}
