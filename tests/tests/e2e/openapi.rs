//! The OpenAPI document is served, parses, and every path it lists exists.

use commcenter_tests::spawn_app;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_path_is_served() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 12);
    let staff = app.staff_token();
    for (path, methods) in paths {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{customer_id}", "cust-1")
            .replace("{user_id}", "staff-1")
            .replace("{file_id}", &uuid::Uuid::new_v4().to_string())
            // The shape of a stored name (timestamp, 32 hex digits, extension).
            .replace(
                "{filename}",
                "20261124t120000z-0123456789abcdef0123456789abcdef.png",
            );
        for method in methods.as_object().unwrap().keys() {
            let request = match method.as_str() {
                "get" => app.client.get(app.url(&concrete)),
                "post" => app
                    .client
                    .post(app.url(&concrete))
                    .json(&serde_json::json!({})),
                "patch" => app
                    .client
                    .patch(app.url(&concrete))
                    .json(&serde_json::json!({})),
                "put" => app
                    .client
                    .put(app.url(&concrete))
                    .json(&serde_json::json!({})),
                "delete" => app.client.delete(app.url(&concrete)),
                other => panic!("unexpected method {other}"),
            };
            let response = request.bearer_auth(&staff).send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                !body.contains("no such endpoint"),
                "{method} {path} is documented but not served ({status})"
            );
        }
    }
}
