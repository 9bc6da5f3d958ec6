//! The reference client at `/portal`: how it is served, and a customer and a staff
//! member using it at once in real headless Chromium (`tests/browser/portal.spec.mjs`),
//! each on a different api instance.

use std::{io::Cursor, path::Path, time::Duration};

use serde_json::Value;

use commcenter_shared::domain::Role;
use commcenter_tests::spawn_app;

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_is_served_with_a_strict_policy_and_no_inline_code() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/portal", "text/html; charset=utf-8"),
        ("/portal/app.js", "text/javascript; charset=utf-8"),
        ("/portal/app.css", "text/css; charset=utf-8"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), content_type);
        let csp = header(&response, "content-security-policy").to_owned();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("img-src 'self' blob:"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    }
    let page = app
        .client
        .get(app.url("/portal"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script type=\"module\" src=").count()
    );
    for inline in ["<style", " style=", " onclick=", "javascript:"] {
        assert!(!page.contains(inline), "the page has {inline}");
    }
    for testid in [
        "token", "sign-in", "composer", "send", "attach", "typing", "presence",
    ] {
        assert!(
            page.contains(&format!("data-testid=\"{testid}\"")),
            "{testid}"
        );
    }
    let script = app
        .client
        .get(app.url("/portal/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!script.contains("innerHTML"), "API values go in as text");
    assert!(script.contains("Authorization: `Bearer ${token()}`"));
    let missing = app
        .client
        .get(app.url("/portal/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// A directory of the test's own, removed whatever the outcome.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A 1200×900 photo-like PNG: big enough that the upload reports progress.
fn photo(dir: &Path) -> std::path::PathBuf {
    let image = image::RgbImage::from_fn(1200, 900, |x, y| {
        let noise = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) % 64;
        image::Rgb([(x % 256) as u8, (y % 256) as u8, (noise * 4) as u8])
    });
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    let path = dir.join("gutter.png");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_and_staff_talk_in_two_browsers_on_two_instances() {
    let app = spawn_app().await;
    let other = app.spawn_instance().await;
    let customer = app.customer_token("cust-42");
    // More than a page (30) of history: the page loads the rest on scrolling up.
    let older = 35;
    for n in 1..=older {
        let text = format!("Earlier note {n} ");
        app.send_ok(&app.staff_token(), "cust-42", &text).await;
    }
    let first = "Hello from the portal";
    app.send_ok(&customer, "cust-42", first).await;
    let template = app
        .create_template(
            &app.staff_token(),
            &serde_json::json!({
                "name": "arrival", "type": "inapp",
                "content": "Hi {{name}}, your crew arrives at {{time}}",
            }),
        )
        .await;
    assert_eq!(template.status(), 201);
    // A crew dispatched to the customer's project: the crew member's view.
    let crew = app
        .post_json(
            "/api/crews",
            &app.staff_token(),
            &serde_json::json!({ "name": "North", "members": [
                { "user_id": "crew-n1", "name": "Nia", "phone": "+14155550171" }] }),
        )
        .await;
    assert_eq!(crew.status(), 201);
    let crew: Value = crew.json().await.unwrap();
    let project = app
        .post_json(
            "/api/projects",
            &app.staff_token(),
            &serde_json::json!({ "customer_id": "cust-42", "title": "Gutter repair",
                "address": "12 Elm St", "lat": 37.77, "lng": -122.42, "crew_id": crew["id"] }),
        )
        .await;
    assert_eq!(project.status(), 201);
    let project: Value = project.json().await.unwrap();
    let dispatched = app
        .post_json(
            &format!("/api/projects/{}/dispatch", project["id"].as_str().unwrap()),
            &app.staff_token(),
            &serde_json::json!({ "note": "Bring the long ladder" }),
        )
        .await;
    assert_eq!(dispatched.status(), 201);
    let files = Scratch(std::env::temp_dir().join(format!("cc-portal-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&files.0).unwrap();
    let photo = photo(&files.0);

    crate::browser::run_spec(
        "portal.spec.mjs",
        &[
            ("CUSTOMER_URL", app.base_url.clone()),
            ("STAFF_URL", other.url("")),
            ("CUSTOMER_TOKEN", customer.clone()),
            ("STAFF_TOKEN", app.staff_token()),
            ("CREW_TOKEN", app.token("crew-n1", Role::Crew, None)),
            ("CUSTOMER_ID", "cust-42".to_owned()),
            ("FIRST_MESSAGE", first.to_owned()),
            ("OLDER_MESSAGES", older.to_string()),
            ("PHOTO", photo.display().to_string()),
        ],
        Duration::from_secs(150),
    )
    .await;

    // What the pages showed is what was recorded: each message once (the deleted one a
    // tombstone), the photo attached, the edited answer read by the customer; the
    // crew's note internal, on its project; the dispatch acknowledged.
    let project_now: Value = app
        .get(
            &format!("/api/projects/{}", project["id"].as_str().unwrap()),
            &app.staff_token(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        project_now["dispatches"][0]["acknowledged_by"],
        serde_json::json!(["crew-n1"])
    );
    let listing: Value = app
        .get(
            "/api/communications?customer_id=cust-42&type=inapp",
            &app.staff_token(),
        )
        .await
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = listing["communications"]
        .as_array()
        .unwrap()
        .iter()
        .take(9)
        .map(|c| match c["deleted"].as_bool().unwrap() {
            true => "(deleted)",
            false => c["message"].as_str().unwrap(),
        })
        .collect();
    assert_eq!(
        texts,
        [
            "The crew is close",
            "Gate code is 4411",
            "Hi Ann, your crew arrives at 3pm",
            "(deleted)",
            "The gutter, photographed",
            "Yes, at 3pm",
            "Is the crew\nstill coming today?",
            first,
            "Earlier note 35 ",
        ]
    );
    let note = &listing["communications"][1];
    assert_eq!(
        (
            &note["visibility"],
            &note["sender_role"],
            &note["project_id"]
        ),
        (
            &serde_json::json!("internal"),
            &serde_json::json!("crew"),
            &project["id"]
        )
    );
    let with_photo = &listing["communications"][4];
    assert_eq!(with_photo["attachments"].as_array().unwrap().len(), 1);
    assert_eq!(with_photo["attachments"][0]["filename"], "gutter.png");
    assert_eq!(listing["communications"][5]["status"], "read");
}
