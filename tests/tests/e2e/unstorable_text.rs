//! Text PostgreSQL cannot store (NUL), and text that shows nothing, refused where it
//! enters: a 400 naming where the NUL was, on every route of the OpenAPI document, for
//! every string it takes (JSON fields at any depth, query and path parameters,
//! multipart parts); never a 500, and nothing written.

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, spawn_app};
use serde_json::{Value, json};

const NUL_TEXT: &str = "a\u{0}b";

/// The document's schema at `schema`, following `$ref`s.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        schema = &doc["components"]["schemas"][name];
    }
    schema
}

/// One JSON body per string the schema takes, each with NUL in that string only,
/// and the path of that string as the error should name it.
fn bodies_with_nul(doc: &Value, schema: &Value, at: &str, depth: usize) -> Vec<(Value, String)> {
    let schema = resolve(doc, schema);
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let mut found = Vec::new();
    if depth > 4 {
        return found;
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let here = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            for (inner, named) in bodies_with_nul(doc, property, &here, depth + 1) {
                found.push((json!({ name: inner }), named));
            }
        }
        return found;
    }
    if types.contains(&"array") {
        let item = &schema["items"];
        for (inner, named) in bodies_with_nul(doc, item, &format!("{at}[0]"), depth + 1) {
            found.push((json!([inner]), named));
        }
        return found;
    }
    if types.contains(&"object") {
        // A free-form object (template variables, a webhook's body): a key of ours.
        return vec![(json!({ "x": NUL_TEXT }), format!("{at}.x"))];
    }
    // Strings, and what the document leaves open (one of several shapes, an enum).
    if types.is_empty() || types.contains(&"string") {
        found.push((json!(NUL_TEXT), at.to_owned()));
    }
    found
}

/// A value for a path parameter that is valid in shape.
fn sample(name: &str) -> String {
    match name {
        "customer_id" => "cust-1".into(),
        "user_id" => "staff-1".into(),
        "filename" => "20261124t120000z-0123456789abcdef0123456789abcdef.png".into(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

fn concrete(path: &str, nul_in: Option<&str>) -> String {
    path.split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if Some(name) == nul_in => "a%00b".to_owned(),
                Some(name) => sample(name),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

struct Probe {
    method: String,
    path: String,
    /// With the query string.
    url: String,
    body: Option<Value>,
    /// What the refusal must name, and its code.
    named: String,
    code: &'static str,
}

/// Sends `probe` as each role in turn, until one gets past authorization; every answer
/// must be a 4xx, and the first past authorization the expected 400.
async fn check(app: &TestApp, tokens: &[String], probe: &Probe) {
    let what = format!(
        "{} {} ({}: {})",
        probe.method, probe.url, probe.code, probe.named
    );
    for token in tokens {
        let request = app.client.request(
            probe.method.to_uppercase().parse().unwrap(),
            app.url(&probe.url),
        );
        let request = match &probe.body {
            Some(body) => request.json(body),
            None => request,
        };
        let response = request.bearer_auth(token).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        assert!(
            (400..500).contains(&status),
            "{what}: {status} {body}, not a 4xx"
        );
        if status == 401 || status == 403 {
            continue;
        }
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"]["code"], probe.code, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{}: ", probe.named)) && message.contains("NUL"),
            "{what}: the refusal {message:?} names {:?}",
            probe.named
        );
        return;
    }
    panic!("{what}: no role got past authorization");
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_anywhere_in_any_route_is_a_400_naming_where_and_writes_nothing() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tokens = [
        app.staff_token(),
        app.token("operator-1", Role::Operator, None),
        app.customer_token("cust-1"),
        app.token("crew-1", Role::Crew, None),
    ];
    let mut probes = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for parameter in &parameters {
                let name = parameter["name"].as_str().unwrap();
                match parameter["in"].as_str().unwrap() {
                    "path" => probes.push(Probe {
                        method: method.clone(),
                        path: path.clone(),
                        url: concrete(path, Some(name)),
                        body: None,
                        named: name.to_owned(),
                        code: "invalid_path",
                    }),
                    "query" => probes.push(Probe {
                        method: method.clone(),
                        path: path.clone(),
                        url: format!("{}?{name}=a%00b", concrete(path, None)),
                        body: None,
                        named: name.to_owned(),
                        code: "invalid_query",
                    }),
                    // A header cannot carry NUL: HTTP refuses it before we see it.
                    _ => {}
                }
            }
            let content = &operation["requestBody"]["content"];
            // The RingCentral webhook is not refused: what a provider sends is kept
            // (`webhook_text_with_nul_is_kept_with_the_nul_replaced`).
            if path.ends_with("/webhook") {
                continue;
            }
            if let Some(json_body) = content.get("application/json") {
                for (body, named) in bodies_with_nul(&doc, &json_body["schema"], "", 0) {
                    probes.push(Probe {
                        method: method.clone(),
                        path: path.clone(),
                        url: concrete(path, None),
                        body: Some(body),
                        named,
                        code: "invalid_body",
                    });
                }
            }
        }
    }
    assert!(probes.len() > 150, "{} probes", probes.len());
    let paths: std::collections::BTreeSet<_> = probes.iter().map(|p| &p.path).collect();
    assert!(paths.len() > 40, "{} routes probed", paths.len());
    for probe in &probes {
        check(&app, &tokens, probe).await;
    }

    // The multipart upload's text parts.
    for part in ["customer_id", "communication_id"] {
        let form = reqwest::multipart::Form::new().text(part, NUL_TEXT).part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("a.txt"),
        );
        let response = app
            .client
            .post(app.url("/api/communications/upload"))
            .bearer_auth(&tokens[0])
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{part}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_multipart");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{part}: ")),
            "{body}"
        );
    }

    for table in [
        "communications",
        "jobs",
        "message_templates",
        "crews",
        "projects",
        "customer_preferences",
        "dispatches",
        "ops_actions",
    ] {
        assert_eq!(app.count(table).await, 0, "{table}: nothing written");
    }
}

/// What RingCentral sends is kept even with NUL in it (refusing would have it sent
/// again and again): each NUL is replaced by U+FFFD.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_text_with_nul_is_kept_with_the_nul_replaced() {
    let app = spawn_app().await;
    let envelope = json!({
        "uuid": "nul-1",
        "event": "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS",
        "subscriptionId": "sub-1",
        "body": { "subject": NUL_TEXT, "id": "m-1" },
    });
    let response = app
        .client
        .post(app.url("/api/integrations/ringcentral/webhook"))
        .header(
            "verification-token",
            app.settings.ringcentral.webhook_token.expose(),
        )
        .json(&envelope)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let payload: Value = sqlx::query_scalar("SELECT payload FROM jobs ORDER BY created_at LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let kept = payload.to_string();
    assert!(kept.contains("a\u{FFFD}b"), "{kept}");
}

/// Text people write for others to read must show something, and hold no controls but
/// tab and line breaks: bidi controls, fillers, the Braille blank, CGJ, variation
/// selectors, tag characters and C0 controls alone are refused, as zero-width spaces
/// were; everywhere such text is written.
#[tokio::test(flavor = "multi_thread")]
async fn text_with_nothing_visible_or_with_controls_is_refused_wherever_people_read_it() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let invisible = [
        "\u{202A}\u{202B}\u{202C}\u{202D}\u{202E}",
        "\u{2066}\u{2067}\u{2068}\u{2069}\u{061C}",
        "\u{3164}\u{115F}\u{1160}\u{FFA0}",
        "\u{2800}",
        "\u{034F}",
        "\u{FE0F}\u{FE00}",
        "\u{E0041}\u{E007F}",
        "\u{1B}\u{7}\u{8}",
    ];
    let controls = ["hi\u{1B}[2J", "hi\u{7}", "hi\u{8}\u{8}", "hi\u{7F}"];
    // Each route and body, with the text put where people read it.
    let crew_id = {
        let crew: Value = app
            .post_json(
                "/api/crews",
                &staff,
                &json!({ "name": "North", "members": [] }),
            )
            .await
            .json()
            .await
            .unwrap();
        crew["id"].as_str().unwrap().to_owned()
    };
    type Body = fn(&str) -> Value;
    let places: [(&str, &str, &str, Body); 8] = [
        (
            "POST",
            "/api/messages/send",
            "message",
            |t| json!({ "customer_id": "cust-1", "message": t }),
        ),
        (
            "POST",
            "/api/integrations/ringcentral/sms",
            "message",
            |t| json!({ "customer_id": "cust-1", "to": "+14155550100", "message": t }),
        ),
        (
            "POST",
            "/api/integrations/gmail/send",
            "subject",
            |t| json!({ "customer_id": "cust-1", "to": "a@example.com", "subject": t, "message": "x" }),
        ),
        (
            "POST",
            "/api/communications/templates",
            "content",
            |t| json!({ "name": "n", "content": t, "type": "inapp" }),
        ),
        (
            "POST",
            "/api/communications/templates",
            "name",
            |t| json!({ "name": t, "content": "c", "type": "inapp" }),
        ),
        (
            "POST",
            "/api/crews",
            "name",
            |t| json!({ "name": t, "members": [] }),
        ),
        (
            "POST",
            "/api/crews",
            "members[0].name",
            |t| json!({ "name": "South", "members": [{ "user_id": "crew-9", "name": t, "phone": "+14155550199" }] }),
        ),
        (
            "POST",
            "/api/projects",
            "title",
            |t| json!({ "customer_id": "cust-1", "title": t, "address": "1 Main St", "lat": 40.0, "lng": -74.0 }),
        ),
    ];
    for (method, path, field, body) in places {
        for text in invisible.iter().chain(&controls) {
            let response = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .bearer_auth(&staff)
                .json(&body(text))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap();
            assert!(
                status == 400 || status == 422,
                "{method} {path} {field}={text:?}: {status} {answer}"
            );
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(field)
                    && (message.contains("control character")
                        || message.contains("nothing visible")
                        || message.contains("empty")
                        || message.contains("blank")),
                "{method} {path} {field}={text:?}: {message}"
            );
        }
    }
    // A dispatch note, when there is one, and a call's notes, show something too.
    let project: Value = app
        .post_json(
            "/api/projects",
            &staff,
            &json!({ "customer_id": "cust-1", "title": "Roof", "address": "1 Main St", "lat": 40.0, "lng": -74.0, "crew_id": crew_id }),
        )
        .await
        .json()
        .await
        .unwrap();
    let dispatch = app
        .post_json(
            &format!("/api/projects/{}/dispatch", project["id"].as_str().unwrap()),
            &staff,
            &json!({ "note": "\u{2800}\u{3164}" }),
        )
        .await;
    assert_eq!(dispatch.status(), 422);
    let call = app
        .post_json(
            "/api/integrations/ringcentral/call-log",
            &staff,
            &json!({ "customer_id": "cust-1", "phone": "+14155550100", "direction": "inbound", "duration": 30, "notes": "ok\u{1B}[31m" }),
        )
        .await;
    assert_eq!(call.status(), 422);
    // Visible text around such characters is fine: an emoji with its variation
    // selector, a right-to-left word with its marks, tabs and line breaks.
    for text in [
        "\u{2764}\u{FE0F}",
        "\u{202B}שלום\u{202C}",
        "one\ttwo\r\nthree",
    ] {
        app.send_ok(&staff, "cust-1", text).await;
    }
    assert_eq!(
        app.count("communications").await,
        3,
        "only the visible ones"
    );
}
