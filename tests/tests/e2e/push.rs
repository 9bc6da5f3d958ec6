//! Web Push subscriptions: the VAPID public key (one for every instance), each person's
//! own browsers (subscribe, renew, list, forget; nobody sees or forgets another's), and
//! subscriptions refused at the door with the field named: an endpoint off the allowed
//! push services, keys that are not what browsers make, a body that is not one.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::{SecretKey, elliptic_curve::sec1::ToEncodedPoint as _};
use serde_json::{Value, json};

use commcenter_shared::domain::Role;
use commcenter_tests::{TestOptions, json_of, spawn_app_with};

/// A browser's `PushSubscription.toJSON()` for `endpoint`, with keys of its own.
fn browser(endpoint: &str, seed: u8) -> Value {
    let point = SecretKey::from_slice(&[seed; 32])
        .unwrap()
        .public_key()
        .to_encoded_point(false);
    json!({
        "endpoint": endpoint,
        "expirationTime": null,
        "keys": {
            "p256dh": URL_SAFE_NO_PAD.encode(point.as_bytes()),
            "auth": URL_SAFE_NO_PAD.encode([seed; 16]),
        },
    })
}

const CHROME: &str = "https://fcm.googleapis.com/fcm/send/dGVzdA:APA91bH-alice-laptop";

#[tokio::test]
async fn every_instance_gives_the_same_vapid_public_key_to_any_signed_in_role() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let other = app.spawn_instance().await;
    let key = json_of(
        app.get("/api/push/vapid-public-key", &app.customer_token("cust-42"))
            .await,
        200,
    )
    .await;
    let public = URL_SAFE_NO_PAD
        .decode(key["public_key"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (public.len(), public[0]),
        (65, 4),
        "an uncompressed P-256 point"
    );
    assert!(p256::PublicKey::from_sec1_bytes(&public).is_ok());
    let from_other = json_of(
        app.client
            .get(other.url("/api/push/vapid-public-key"))
            .bearer_auth(app.token("crew-1", Role::Crew, None))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        from_other, key,
        "one key, kept in the database, for every instance"
    );
    let anonymous = app
        .client
        .get(app.url("/api/push/vapid-public-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn each_person_keeps_and_forgets_only_their_own_browsers() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let alice = app.customer_token("cust-42");
    let staff = app.staff_token();
    let first = json_of(
        app.post_json("/api/push/subscriptions", &alice, &browser(CHROME, 1))
            .await,
        201,
    )
    .await;
    assert_eq!(first["endpoint"], CHROME);
    // The browser renews its keys: the same endpoint, the same subscription.
    let renewed = json_of(
        app.post_json("/api/push/subscriptions", &alice, &browser(CHROME, 2))
            .await,
        200,
    )
    .await;
    assert_eq!(renewed["id"], first["id"]);
    let keys: (String, String) =
        sqlx::query_as("SELECT p256dh, auth FROM push_subscriptions WHERE endpoint = $1")
            .bind(CHROME)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        keys.1,
        URL_SAFE_NO_PAD.encode([2u8; 16]),
        "the renewed keys are kept"
    );

    let crew = app.token("crew-1", Role::Crew, None);
    let windows = "https://wns2-par02p.notify.windows.com/w/?token=crew";
    json_of(
        app.post_json("/api/push/subscriptions", &crew, &browser(windows, 3))
            .await,
        201,
    )
    .await;

    let own = json_of(app.get("/api/push/subscriptions", &alice).await, 200).await;
    assert_eq!(own["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(own["subscriptions"][0]["id"], first["id"]);
    let staffs = json_of(app.get("/api/push/subscriptions", &staff).await, 200).await;
    assert_eq!(
        staffs["subscriptions"],
        json!([]),
        "staff see only their own"
    );

    let path = format!("/api/push/subscriptions/{}", first["id"].as_str().unwrap());
    let refused = json_of(app.delete(&path, &staff).await, 404).await;
    assert_eq!(refused["error"]["code"], "not_found");
    json_of(app.delete(&path, &crew).await, 404).await;
    assert_eq!(app.delete(&path, &alice).await.status(), 204);
    json_of(app.delete(&path, &alice).await, 404).await;
    let own = json_of(app.get("/api/push/subscriptions", &alice).await, 200).await;
    assert_eq!(own["subscriptions"], json!([]));
    json_of(
        app.delete("/api/push/subscriptions/not-an-id", &alice)
            .await,
        400,
    )
    .await;
}

#[tokio::test]
async fn a_subscription_off_the_push_services_or_with_broken_keys_is_refused_naming_the_field() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let alice = app.customer_token("cust-42");
    let refused = |body: Value, field: &'static str| {
        let app = &app;
        let alice = alice.clone();
        async move {
            let answer = json_of(
                app.post_json("/api/push/subscriptions", &alice, &body)
                    .await,
                400,
            )
            .await;
            assert_eq!(answer["error"]["code"], "invalid_subscription", "{answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
        }
    };
    // A URL the server would POST to: cloud metadata, the database, plain http.
    for endpoint in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:5432/",
        "http://fcm.googleapis.com/fcm/send/x",
        "https://fcm.googleapis.com.attacker.example/x",
        "https://push.example.com/x",
    ] {
        refused(browser(endpoint, 1), "endpoint").await;
    }
    let mut body = browser(CHROME, 1);
    body["keys"]["auth"] = json!(URL_SAFE_NO_PAD.encode([1u8; 8]));
    refused(body, "keys.auth").await;
    let mut body = browser(CHROME, 1);
    body["keys"].as_object_mut().unwrap().remove("p256dh");
    refused(body, "keys.p256dh").await;
    let mut body = browser(CHROME, 1);
    body["keys"]["p256dh"] = json!(URL_SAFE_NO_PAD.encode([4u8; 65]));
    refused(body, "keys.p256dh").await;
    let mut body = browser(CHROME, 1);
    body["expirationTime"] = json!("next week");
    refused(body, "expirationTime").await;
    refused(json!(["not", "a", "subscription"]), "body").await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM push_subscriptions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing refused was kept");
    let anonymous = app
        .client
        .post(app.url("/api/push/subscriptions"))
        .json(&browser(CHROME, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

const SUBJECT: &str = "mailto:ops@example.com";

/// One push at a time, as the workers will send them: our client against the fake push
/// service, which checks the VAPID token and decrypts with the browser's own keys.
#[tokio::test]
async fn a_push_reaches_the_browser_encrypted_and_each_service_answer_says_what_next() {
    use std::time::Duration;

    use commcenter_fakes::FakePush;
    use commcenter_shared::domain::push::{
        VapidKey,
        message::{BrowserKeys, MAX_PAYLOAD},
        send::{self, Outcome, Push, Urgency},
    };

    let service = FakePush::start().await.unwrap();
    let phone = service.browser("alice-phone");
    let key = VapidKey::parse("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE").unwrap();
    let http = reqwest::Client::new();
    let topic = send::topic_for("cust-42");
    let payload = br#"{"communication_id":"01a2","customer_id":"cust-42","sender":"staff-1"}"#;
    let push = |payload: &'static [u8]| Push {
        endpoint: &phone.endpoint,
        keys: BrowserKeys {
            p256dh: &phone.p256dh,
            auth: &phone.auth,
        },
        payload,
        ttl: Duration::from_secs(3600),
        urgency: Urgency::High,
        topic: Some(&topic),
    };

    assert_eq!(
        send::send(&http, &key, SUBJECT, &push(payload)).await,
        Outcome::Delivered
    );
    let received = service.received();
    assert_eq!(received.len(), 1);
    let delivery = &received[0];
    assert_eq!(
        delivery.payload, payload,
        "the browser's keys decrypt what was sent"
    );
    assert_eq!(
        (
            delivery.ttl,
            delivery.urgency.as_deref(),
            delivery.topic.as_deref()
        ),
        (3600, Some("high"), Some(topic.as_str()))
    );
    assert_eq!(delivery.subject, "mailto:ops@example.com");
    assert_eq!(delivery.vapid_key, key.public_key());

    // What the push service answers, sorted into what to do next.
    service.answer_next(429, Some(7), 1);
    assert!(matches!(
        send::send(&http, &key, SUBJECT, &push(payload)).await,
        Outcome::Retry { after: Some(after), .. } if after == Duration::from_secs(7)
    ));
    service.answer_next(503, None, 1);
    assert!(matches!(
        send::send(&http, &key, SUBJECT, &push(payload)).await,
        Outcome::Retry { after: None, .. }
    ));
    service.answer_next(413, None, 1);
    assert_eq!(
        send::send(&http, &key, SUBJECT, &push(payload)).await,
        Outcome::TooLarge
    );
    service.answer_next(403, None, 1);
    assert!(matches!(
        send::send(&http, &key, SUBJECT, &push(payload)).await,
        Outcome::Refused { .. }
    ));
    let too_large: &'static [u8] = Box::leak(vec![b'x'; MAX_PAYLOAD + 1].into_boxed_slice());
    assert_eq!(
        send::send(&http, &key, SUBJECT, &push(too_large)).await,
        Outcome::TooLarge,
        "refused before sending"
    );
    service.forget("alice-phone");
    assert_eq!(
        send::send(&http, &key, SUBJECT, &push(payload)).await,
        Outcome::Gone,
        "410: forget the subscription"
    );
    let stranger = Push {
        endpoint: &format!("{}/push/nobody", service.url()),
        ..push(payload)
    };
    assert_eq!(
        send::send(&http, &key, SUBJECT, &stranger).await,
        Outcome::Gone,
        "404 too"
    );
    assert_eq!(service.received().len(), 1, "only the first was delivered");

    // A token for another origin, or from another key than it names, is refused.
    let other = service.browser("bob-laptop");
    let forged = Push {
        endpoint: &other.endpoint,
        keys: BrowserKeys {
            p256dh: &other.p256dh,
            auth: &phone.auth,
        },
        ..push(payload)
    };
    assert!(
        matches!(send::send(&http, &key, SUBJECT, &forged).await, Outcome::Refused { reason } if reason.contains("400")),
        "a payload encrypted with the wrong auth secret does not decrypt"
    );
}
