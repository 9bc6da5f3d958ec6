//! Rate limits: per user and route group, and per address without a valid token; a
//! refusal is 429 in our JSON shape with `Retry-After`, and writes nothing.

use std::time::Duration;

use commcenter_shared::platform::settings::{Rate, RateLimits};
use commcenter_tests::{TestOptions, spawn_app_with};
use serde_json::{Value, json};

fn per_minute(count: u32) -> Option<Rate> {
    Some(Rate {
        count,
        per: Duration::from_secs(60),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_over_the_send_limit_gets_429_and_nothing_is_written() {
    let app = spawn_app_with(TestOptions {
        rate_limits: RateLimits {
            sends: per_minute(3),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let alice = app.customer_token("cust-1");
    let mut remaining = Vec::new();
    for n in 0..3 {
        let response = app
            .send_message(&alice, "cust-1", &format!("message {n}"))
            .await;
        assert_eq!(response.status(), 202);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        remaining.push(
            response.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);

    let refused = app.send_message(&alice, "cust-1", "one too many").await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "too_many_requests");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sends")
    );

    // Reading is not limited, and shows three messages: the refused one was not written.
    let listed: Value = app
        .get("/api/communications?customer_id=cust-1", &app.staff_token())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["communications"].as_array().unwrap().len(), 3);
    // Another user has a bucket of their own.
    let staff = app
        .send_message(&app.staff_token(), "cust-1", "staff may still write")
        .await;
    assert_eq!(staff.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_valid_token_are_limited_per_address() {
    let app = spawn_app_with(TestOptions {
        rate_limits: RateLimits {
            anonymous: per_minute(2),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|_| async {
        app.post_json("/api/messages/send", "forged.token.here", &json!({}))
            .await
            .status()
            .as_u16()
    }))
    .await;
    let mut sorted = statuses.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [401, 401, 429, 429], "{statuses:?}");
    // A valid token is not counted against the address, nor are probes.
    assert_eq!(
        app.get("/api/communications/conversations", &app.staff_token())
            .await
            .status(),
        200
    );
    for _ in 0..3 {
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    }
}

/// Reads what the server sends until it closes the connection, or gives up at `wait`.
async fn until_closed(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut answer = Vec::new();
    tokio::time::timeout(wait, stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_the_connection_cap_refuses_fast() {
    use tokio::io::AsyncWriteExt as _;
    let app = spawn_app_with(TestOptions {
        // Long enough that the held connections still fill the cap on a busy machine.
        header_timeout: Duration::from_secs(3),
        body_timeout: Duration::from_secs(3),
        max_connections: 5,
        ..Default::default()
    })
    .await;
    let token = app.staff_token();

    // Idle after a request: closed after the header timeout.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Half the headers, then nothing: closed after the header timeout.
    let mut half_headers = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    half_headers
        .write_all(b"GET /api/communications HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A body at a trickle: the request ends when the body's time is up.
    let mut trickle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/messages/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"customer_id\""
    );
    trickle.write_all(head.as_bytes()).await.unwrap();
    let trickling = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
        }
        trickle
    });

    // Silent connections until the cap (5, the harness's own included) is reached: the
    // next one is refused at once, in our JSON.
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        match until_closed(&mut stream, Duration::from_millis(200)).await {
            Some(answer) => {
                refused = Some(answer);
                break;
            }
            None => held.push(stream),
        }
    }
    let refused = refused.expect("a connection over the cap is refused at once");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");

    let started = std::time::Instant::now();
    assert!(
        until_closed(&mut half_headers, Duration::from_secs(8))
            .await
            .is_some(),
        "half-sent headers are cut off"
    );
    let after_request = until_closed(&mut idle, Duration::from_secs(8))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(after_request.starts_with("HTTP/1.1 200"), "{after_request}");
    let mut trickle = trickling.await.unwrap();
    let answer = until_closed(&mut trickle, Duration::from_secs(8))
        .await
        .expect("a trickling body is cut off");
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(9));

    // Nothing was written, and the api serves normally again.
    assert_eq!(
        app.get("/api/communications/conversations", &token)
            .await
            .status(),
        200
    );
}

/// The api listens with a backlog of the kernel's `somaxconn` (or 1,024), not the
/// standard library's 128: a burst of connects is queued, not left to SYN retries.
#[tokio::test(flavor = "multi_thread")]
async fn the_listen_backlog_holds_a_burst_of_connects() {
    let app = commcenter_tests::spawn_app().await;
    let output = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", app.addr.port())])
        .output()
        .expect("ss (iproute2) runs");
    let listing = String::from_utf8_lossy(&output.stdout);
    // State, Recv-Q, Send-Q (a listener's backlog), local, peer.
    let backlog: u32 = listing
        .split_whitespace()
        .nth(2)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("no listener in {listing:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backlog, app.settings.http.listen_backlog.min(somaxconn));
    assert!(backlog >= 1024.min(somaxconn), "backlog {backlog}");
}
