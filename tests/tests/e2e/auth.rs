//! Every endpoint wants a valid bearer token, and tenants never see each other.

use commcenter_shared::domain::Role;
use commcenter_tests::spawn_app;
use serde_json::{Value, json};

/// A staff token expiring at `exp`, signed with `secret`.
fn staff_token(exp: i64, secret: &str) -> String {
    let claims = commcenter_shared::platform::auth::Claims {
        sub: commcenter_shared::domain::UserId::parse("staff-1").unwrap(),
        role: Role::Staff,
        customer_id: None,
        exp,
    };
    commcenter_shared::platform::auth::issue(&claims, secret)
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_malformed_forged_and_expired_tokens_get_401() {
    let app = spawn_app().await;
    let body = json!({ "customer_id": "c1", "message": "hi" });

    let no_token = app
        .client
        .post(app.url("/api/messages/send"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let error: Value = no_token.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");

    for token in ["garbage", "a.b.c"] {
        assert_eq!(
            app.post_json("/api/messages/send", token, &body)
                .await
                .status(),
            401
        );
    }
    // Signed with another key.
    let forged = staff_token(chrono::Utc::now().timestamp() + 60, "not-the-secret");
    let response = app.post_json("/api/messages/send", &forged, &body).await;
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature")
    );

    let expired = staff_token(
        chrono::Utc::now().timestamp() - 1,
        app.settings.auth.jwt_secret.expose(),
    );
    let response = app.post_json("/api/messages/send", &expired, &body).await;
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    assert_eq!(app.get("/api/communications", "").await.status(), 401);
    assert_eq!(app.count("communications").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_never_reaches_another_customers_conversation() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let mallory = app.customer_token("cust-mallory");
    let sent = app.send_ok(&staff, "cust-alice", "private to alice").await;
    let id = sent["id"].as_str().unwrap();
    app.wait_for_status(id, "sent").await;

    // Sending into, listing, reading a status of, or marking someone else's: never the data.
    let response = app.send_message(&mallory, "cust-alice", "hi alice").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        app.get("/api/communications?customer_id=cust-alice", &mallory)
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get(&format!("/api/communications/{id}/status"), &mallory)
            .await
            .status(),
        404
    );
    assert_eq!(
        app.post_json(
            &format!("/api/communications/{id}/mark-read"),
            &mallory,
            &json!({})
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        app.get(
            "/api/communications/conversation/cust-alice/status",
            &mallory
        )
        .await
        .status(),
        404
    );
    // Listing without a filter gives only her own (empty) conversation.
    let own: Value = app
        .get("/api/communications", &mallory)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(own["communications"].as_array().unwrap().len(), 0);
    assert_eq!(app.count("communications").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn crew_members_see_nothing_until_something_is_shared_with_their_crew() {
    let app = spawn_app().await;
    let crew = app.token("crew-1", Role::Crew, None);
    assert_eq!(
        app.send_message(&crew, "cust-1", "hello").await.status(),
        403
    );
    assert_eq!(app.get("/api/communications", &crew).await.status(), 403);
    assert_eq!(
        app.get("/api/communications?customer_id=cust-1", &crew)
            .await
            .status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_list_everyone_online_and_customers_only_staff() {
    let app = spawn_app().await;
    let customer = app.customer_token("cust-1");
    let _ws = app.ws("user-of-cust-1", &customer).await;
    let seen_by_customer: Value = app
        .get("/api/communications/online-users", &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen_by_customer["online_users"], serde_json::json!([]));
    let online: Value = app
        .get("/api/communications/online-users", &app.staff_token())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(online["online_users"][0]["user_id"], "user-of-cust-1");
    let me: Value = app
        .get("/api/communications/user/user-of-cust-1/status", &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["status"], "online");
    let offline: Value = app
        .get(
            "/api/communications/user/someone-else/status",
            &app.staff_token(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(offline["status"], "offline");
    // A customer or a crew member asks only about themselves (docs/http-api.md): about
    // anyone else, online or not, 403 pointing to the online users.
    for (token, about) in [
        (app.customer_token("cust-2"), "user-of-cust-1"),
        (app.customer_token("cust-2"), "staff-1"),
        (app.token("crew-1", Role::Crew, None), "user-of-cust-1"),
    ] {
        let asked = app
            .get(&format!("/api/communications/user/{about}/status"), &token)
            .await;
        assert_eq!(asked.status(), 403, "{about}");
        let error: Value = asked.json().await.unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("online-users"),
            "{error}"
        );
    }
}

/// A staff token with these claims beside the usual ones, signed with `secret`.
fn staff_token_with(extra: Value, exp: i64, secret: &str) -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    use hmac::Mac as _;
    let mut claims = json!({ "sub": "staff-1", "role": "staff", "exp": exp });
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{header}.{body}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{body}.{signature}")
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_not_valid_yet_or_living_too_long_get_401_naming_why() {
    let app = spawn_app().await;
    let secret = app.settings.auth.jwt_secret.expose().to_owned();
    let now = chrono::Utc::now().timestamp();
    let day = 24 * 3600;
    let cases = [
        (
            json!({ "nbf": now + 600 }),
            now + 3600,
            Some("not valid yet"),
        ),
        (
            json!({ "iat": now + 600 }),
            now + 3600,
            Some("not valid yet"),
        ),
        (json!({ "nbf": now + 10 }), now + 3600, None),
        (json!({ "iat": now }), now + 31 * day, Some("longer than")),
        (
            json!({ "iat": now - 20 * day }),
            now + 15 * day,
            Some("longer than"),
        ),
        (json!({}), now + 31 * day, Some("longer than")),
        (json!({ "iat": now }), now + 29 * day, None),
    ];
    for (extra, exp, refused) in cases {
        let token = staff_token_with(extra.clone(), exp, &secret);
        let response = app.get("/api/communications/conversations", &token).await;
        match refused {
            Some(why) => {
                assert_eq!(response.status(), 401, "{extra}");
                let error: Value = response.json().await.unwrap();
                assert_eq!(error["error"]["code"], "unauthorized");
                let message = error["error"]["message"].as_str().unwrap();
                assert!(message.contains(why), "{extra}: {message}");
            }
            None => assert_eq!(response.status(), 200, "{extra}"),
        }
    }
}
