//! `/metrics`: the api counts requests under their route template (an unknown path
//! under one `unmatched` series), reports WebSocket connections, the ledger and the
//! queues (or `broker_up 0` without RabbitMQ); the workers count jobs by outcome and
//! attempts by error class, and serve them on their own listener. Each app has its
//! own registries, so exact counts hold while other tests run.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use commcenter_shared::{ops::metrics::CONTENT_TYPE, platform::settings::Secret};
use commcenter_tests::{TcpProxy, TestApp, TestOptions, broker_addr, spawn_app, spawn_app_with};
use commcenter_workers::{
    AnyHandler, JobContext, JobError,
    metrics::{JobMetrics, Outcome, serve},
};
use serde_json::json;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::{WAIT, retries::enqueue};

/// Fails for good when the payload says so; else fails once, transiently, and then
/// succeeds.
struct FailsFirst;

#[async_trait]
impl AnyHandler for FailsFirst {
    fn kind(&self) -> &'static str {
        "test.metrics"
    }

    async fn run(&self, _conn: &mut PgConnection, job: &JobContext) -> Result<(), JobError> {
        if job.payload["permanent"] == true {
            return Err(JobError::permanent("never works"));
        }
        if job.attempt == 1 {
            return Err(JobError::transient("not this time"));
        }
        Ok(())
    }
}

async fn scrape(app: &TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
    response.text().await.unwrap()
}

/// The value of one series (its name with labels, exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_counted_by_route_template_and_jobs_by_outcome() {
    let app = spawn_app_with(TestOptions::with_handler(FailsFirst)).await;
    let staff = app.staff_token();
    app.send_job_ok(&staff, "cust-1", "hello").await;
    let unknown_id = uuid::Uuid::new_v4();
    let status = app
        .get(&format!("/api/communications/{unknown_id}/status"), &staff)
        .await;
    assert_eq!(status.status(), 404);
    for probe in ["/wp-admin", "/no/such/path", &format!("/x/{unknown_id}")] {
        assert_eq!(app.get(probe, &staff).await.status(), 404);
    }
    let retried = enqueue(&app, "test.metrics", json!({})).await;
    let dead = enqueue(&app, "test.metrics", json!({ "permanent": true })).await;
    app.wait_for_job_state(&retried, "succeeded").await;
    app.wait_for_job_state(&dead, "dead").await;

    let text = scrape(&app).await;
    let requests = |route: &str, method: &str, status: u16| {
        value(
            &text,
            &format!(
                "commcenter_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(
        requests("/api/messages/send", "POST", 202),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        requests("/api/communications/{id}/status", "GET", 404),
        Some(1.0),
        "{text}"
    );
    assert_eq!(requests("unmatched", "GET", 404), Some(3.0), "{text}");
    assert!(
        !text.contains(&unknown_id.to_string()) && !text.contains("wp-admin"),
        "no series per raw path: {text}"
    );
    assert_eq!(
        value(
            &text,
            "commcenter_http_request_duration_seconds_count{route=\"/api/messages/send\",method=\"POST\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // The backlog, read from the ledger and the broker.
    assert_eq!(value(&text, "commcenter_broker_up"), Some(1.0), "{text}");
    let work_queue = app.topology.work_queue("message.deliver");
    assert!(
        value(
            &text,
            &format!("commcenter_queue_depth{{queue=\"{work_queue}\"}}")
        )
        .is_some(),
        "{text}"
    );
    let dead_queue = app.topology.dead_queue();
    assert_eq!(
        value(
            &text,
            &format!("commcenter_queue_consumers{{queue=\"{dead_queue}\"}}")
        ),
        Some(1.0),
        "the workers drain the dead letters: {text}"
    );
    for tier in &app.topology.tiers {
        let queue = app.topology.delay_queue(*tier);
        assert!(
            value(
                &text,
                &format!("commcenter_queue_depth{{queue=\"{queue}\"}}")
            )
            .is_some(),
            "{queue}: {text}"
        );
    }
    assert!(
        value(&text, "commcenter_jobs{state=\"dead\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        value(&text, "commcenter_outbox_oldest_pending_seconds").is_some(),
        "{text}"
    );

    // The workers' registry: one retry then a success, one dead at once.
    let jobs = app.workers_metrics().render();
    let outcome = |kind: &str, outcome: &str| {
        value(
            &jobs,
            &format!("commcenter_jobs_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(outcome("test.metrics", "retrying"), Some(1.0), "{jobs}");
    assert_eq!(outcome("test.metrics", "succeeded"), Some(1.0), "{jobs}");
    assert_eq!(outcome("test.metrics", "dead"), Some(1.0), "{jobs}");
    let attempts = |class: &str| {
        value(
            &jobs,
            &format!(
                "commcenter_job_attempts_total{{kind=\"test.metrics\",error_class=\"{class}\"}}"
            ),
        )
    };
    assert_eq!(attempts("transient"), Some(1.0), "{jobs}");
    assert_eq!(attempts("permanent"), Some(1.0), "{jobs}");
    assert_eq!(attempts("none"), Some(1.0), "{jobs}");
    assert_eq!(
        value(
            &jobs,
            "commcenter_job_duration_seconds_count{kind=\"test.metrics\"}"
        ),
        Some(3.0),
        "{jobs}"
    );
    assert_eq!(
        value(&jobs, "commcenter_jobs_in_flight{kind=\"test.metrics\"}"),
        Some(0.0),
        "{jobs}"
    );
    app.assert_no_jobs_left().await;
    let delivered = app.workers_metrics().render();
    assert_eq!(
        value(
            &delivered,
            "commcenter_jobs_total{kind=\"message.deliver\",outcome=\"succeeded\"}"
        ),
        Some(1.0),
        "{delivered}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_connection_raises_the_gauge_and_closing_it_lowers_it() {
    let app = spawn_app().await;
    assert_eq!(
        value(&scrape(&app).await, "commcenter_websocket_connections"),
        Some(0.0)
    );
    // Connected: the server's `connected` frame has arrived.
    let client = app.ws("staff-1", &app.staff_token()).await;
    assert_eq!(
        value(&scrape(&app).await, "commcenter_websocket_connections"),
        Some(1.0)
    );
    drop(client);
    commcenter_tests::eventually("the gauge to drop", WAIT, || async {
        (value(&scrape(&app).await, "commcenter_websocket_connections") == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_broker_the_queue_gauges_go_and_broker_up_says_so() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = spawn_app_with(TestOptions {
        api_amqp_url: Some(proxy.amqp_url()),
        start_workers: false,
        ..Default::default()
    })
    .await;
    let text = scrape(&app).await;
    assert_eq!(value(&text, "commcenter_broker_up"), Some(1.0), "{text}");
    proxy.cut();
    // The last read serves for a few seconds; then the gauges say the broker is gone.
    let text = commcenter_tests::eventually("broker_up to fall", WAIT, || async {
        let text = scrape(&app).await;
        (value(&text, "commcenter_broker_up") == Some(0.0)).then_some(text)
    })
    .await;
    assert!(!text.contains("commcenter_queue_depth{"), "{text}");
    assert!(!text.contains("commcenter_queue_consumers{"), "{text}");
    // The ledger is still read.
    assert!(
        value(&text, "commcenter_outbox_oldest_pending_seconds").is_some(),
        "{text}"
    );
    proxy.restore();
    commcenter_tests::eventually("broker_up to return", WAIT, || async {
        let text = scrape(&app).await;
        (value(&text, "commcenter_broker_up") == Some(1.0)
            && text.contains("commcenter_queue_depth{"))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_metrics_token_only_its_bearer_may_scrape() {
    let app = spawn_app_with(TestOptions {
        metrics_token: Some("scrape-me".into()),
        start_workers: false,
        ..Default::default()
    })
    .await;
    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    // A user's token is not the metrics token.
    let user = app.get("/metrics", &app.staff_token()).await;
    assert_eq!(user.status(), 401);
    let scraper = app.get("/metrics", "scrape-me").await;
    assert_eq!(scraper.status(), 200);
    assert!(
        scraper
            .text()
            .await
            .unwrap()
            .contains("commcenter_http_requests_total")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workers_serve_their_metrics_on_their_own_listener() {
    let metrics = Arc::new(JobMetrics::default());
    metrics.job_finished("sms.send", Outcome::Succeeded);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let limits = commcenter_shared::platform::http_server::ConnectionLimits {
        max_connections: 2,
        // Long enough that the slow connections still hold the cap on a busy machine
        // when the third one comes.
        header_timeout: Duration::from_secs(3),
    };
    let server = tokio::spawn(serve(
        metrics.clone(),
        Some(Secret::new("scrape-me")),
        listener,
        limits,
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/metrics");

    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = client.get(&url).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let answered = client
        .get(&url)
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["content-type"], CONTENT_TYPE);
    let text = answered.text().await.unwrap();
    assert_eq!(
        value(
            &text,
            "commcenter_jobs_total{kind=\"sms.send\",outcome=\"succeeded\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let elsewhere = client
        .get(format!("http://{addr}/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
    drop(client);

    // Slow clients: two connections that never finish their headers fill the cap; a
    // third is refused at once; the header timeout closes the two.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Connections that never finish their headers, until one is refused at once (the
    // cap is 2; the scrapes' own connections may still be closing).
    let mut slow = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        match tokio::time::timeout(
            Duration::from_millis(300),
            stream.read_to_string(&mut answer),
        )
        .await
        {
            Ok(_) => {
                refused = Some(answer);
                break;
            }
            Err(_) => slow.push(stream),
        }
    }
    let answer = refused.expect("a connection over the cap is refused at once");
    assert!(slow.len() <= 2, "the cap holds: {} accepted", slow.len());
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"unavailable\""), "{answer}");
    for mut stream in slow {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a client that never finishes its headers is cut off"
        );
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops on shutdown")
        .unwrap();
}
