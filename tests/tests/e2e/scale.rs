//! Scale-out, with real processes: two api processes and two workers processes on one
//! database and queue prefix take a stream of sends; one api and one workers process
//! are killed with SIGKILL midway. Nothing accepted is lost, nothing is recorded or
//! delivered twice, and presence follows: the users of the dead api go offline, the
//! others stay online. (`cc-node` is the api and workers entry points as a binary.)

use std::{
    collections::{BTreeMap, BTreeSet},
    net::TcpListener,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, TestOptions, eventually, spawn_app_with};

const SENDS: usize = 240;
const CUSTOMERS: usize = 8;
/// After this many accepted sends, one api and one workers process are killed.
const KILL_AFTER: usize = 80;

struct Node {
    child: Child,
    url: Option<String>,
    log: std::path::PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The settings a process of this app's system needs, as the environment.
fn environment(app: &TestApp, logs: &std::path::Path) -> Vec<(String, String)> {
    let s = &app.settings;
    let options = TestOptions::default();
    [
        ("DATABASE_URL", s.database.url.expose().to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "16".to_owned()),
        ("AMQP_URL", commcenter_tests::broker_url()),
        ("QUEUE_PREFIX", s.broker.prefix.clone()),
        ("JWT_SECRET", s.auth.jwt_secret.expose().to_owned()),
        ("RETRY_TIERS", options.retry_tiers.to_owned()),
        ("RETRY_BASE_MS", "100".to_owned()),
        ("DELIVERY_LIMIT", s.jobs.delivery_limit.to_string()),
        ("JOB_MAX_ATTEMPTS", s.jobs.max_attempts.to_string()),
        ("UPLOAD_DIR", logs.join("uploads").display().to_string()),
        ("PRESENCE_HEARTBEAT_SECS", "1".to_owned()),
        ("PRESENCE_TTL_SECS", "3".to_owned()),
        ("RATE_LIMIT_SENDS", "none".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("SHUTDOWN_GRACE_SECS", "2".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn start(role: &str, n: usize, env: &[(String, String)], logs: &std::path::Path) -> Node {
    let log = logs.join(format!("{role}-{n}.log"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_cc-node"));
    command
        .arg(role)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    let mut url = None;
    if role == "workers" {
        // Each workers process serves its own /metrics: on one host, its own port.
        command.env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()));
    }
    if role == "api" {
        let port = free_port();
        command.env("API_ADDR", format!("127.0.0.1:{port}"));
        url = Some(format!("http://127.0.0.1:{port}"));
    }
    Node {
        child: command.spawn().expect("cc-node starts"),
        url,
        log,
    }
}

/// SIGKILL, as a power cut: no drain, no goodbye.
async fn kill(node: &mut Node) {
    node.child.start_kill().expect("SIGKILL");
    node.child.wait().await.ok();
}

async fn ready(app: &TestApp, url: &str) {
    eventually("the api process ready", Duration::from_secs(60), || async {
        let response = app.client.get(format!("{url}/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

/// One send with a file (so a worker's job delivers it), retried with its
/// Idempotency-Key on the other api when one does not answer (it was killed): accepted
/// exactly once either way.
async fn send(
    client: &reqwest::Client,
    urls: &[String],
    token: &str,
    (n, file): (usize, uuid::Uuid),
) -> String {
    let body = json!({
        "customer_id": format!("cust-{}", n % CUSTOMERS),
        "message": format!("load {n}"),
        "attachments": [file],
    });
    for attempt in 0..40 {
        let url = &urls[(n + attempt) % urls.len()];
        let response = client
            .post(format!("{url}/api/messages/send"))
            .bearer_auth(token)
            .header("Idempotency-Key", format!("scale-{n}"))
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(response) = response
            && response.status() == 202
        {
            let accepted: Value = response.json().await.unwrap();
            return accepted["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("send {n} was never accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apis_and_two_workers_lose_one_of_each_to_sigkill_and_nothing_is_lost_or_doubled() {
    // The app provides the database, the prefix and their clean-up; its own workers stay
    // off, so every job runs in the worker processes.
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let logs = std::env::temp_dir().join(format!("cc-scale-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs).unwrap();
    let env = environment(&app, &logs);
    let mut api_a = start("api", 1, &env, &logs);
    let api_b = start("api", 2, &env, &logs);
    let mut workers_1 = start("workers", 1, &env, &logs);
    let workers_2 = start("workers", 2, &env, &logs);
    let (a, b) = (api_a.url.clone().unwrap(), api_b.url.clone().unwrap());
    ready(&app, &a).await;
    ready(&app, &b).await;

    // Presence: a customer connected to A, another to B; staff watch on B.
    let staff = app.staff_token();
    let mut staff_ws = commcenter_tests::WsClient::connect(&format!(
        "{}/api/ws/staff-1?token={staff}",
        b.replace("http", "ws")
    ))
    .await
    .unwrap();
    let on_a = app.token("user-on-a", Role::Customer, Some("cust-0"));
    let on_b = app.token("user-on-b", Role::Customer, Some("cust-1"));
    let _ws_a = commcenter_tests::WsClient::connect(&format!(
        "{}/api/ws/user-on-a?token={on_a}",
        a.replace("http", "ws")
    ))
    .await
    .unwrap();
    let _ws_b = commcenter_tests::WsClient::connect(&format!(
        "{}/api/ws/user-on-b?token={on_b}",
        b.replace("http", "ws")
    ))
    .await
    .unwrap();
    let online = |app: &TestApp, url: String| {
        let client = app.client.clone();
        let staff = staff.clone();
        async move {
            let answer: Value = client
                .get(format!("{url}/api/communications/online-users"))
                .bearer_auth(&staff)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            Some(
                answer["online_users"]
                    .as_array()?
                    .iter()
                    .filter_map(|u| u["user_id"].as_str().map(str::to_owned))
                    .collect::<BTreeSet<_>>(),
            )
        }
    };
    eventually("both customers online", Duration::from_secs(10), || async {
        let users = online(&app, b.clone()).await?;
        (users.contains("user-on-a") && users.contains("user-on-b")).then_some(())
    })
    .await;

    // The load: four senders through both apis; one api and one workers process die
    // once KILL_AFTER sends are in. Each send carries a file, ready as if uploaded.
    let files: Vec<uuid::Uuid> = (0..SENDS).map(|_| uuid::Uuid::new_v4()).collect();
    sqlx::query(
        "INSERT INTO file_attachments (id, customer_id, uploaded_by, original_name,
             stored_name, file_size, file_type, file_category, status)
         SELECT id, 'cust-' || ((n - 1) % $2), 'staff-1', 'note.txt', id::text || '.txt', 5,
                'text/plain', 'documents', 'ready'
         FROM unnest($1::uuid[]) WITH ORDINALITY AS f(id, n)",
    )
    .bind(&files)
    .bind(CUSTOMERS as i64)
    .execute(&app.pool)
    .await
    .unwrap();
    let files = Arc::new(files);
    let accepted = Arc::new(AtomicUsize::new(0));
    let urls = vec![a.clone(), b.clone()];
    let mut senders = Vec::new();
    for lane in 0..4 {
        let (client, urls, token, accepted, files) = (
            app.client.clone(),
            urls.clone(),
            staff.clone(),
            accepted.clone(),
            files.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (lane..SENDS).step_by(4) {
                ids.push((n, send(&client, &urls, &token, (n, files[n])).await));
                accepted.fetch_add(1, Ordering::SeqCst);
            }
            ids
        }));
    }
    eventually("the first sends in", Duration::from_secs(60), || async {
        (accepted.load(Ordering::SeqCst) >= KILL_AFTER).then_some(())
    })
    .await;
    kill(&mut api_a).await;
    kill(&mut workers_1).await;
    let mut ids = BTreeMap::new();
    for sender in senders {
        for (n, id) in sender.await.unwrap() {
            ids.insert(n, id);
        }
    }
    assert_eq!(ids.len(), SENDS);

    // Every job ran, in the workers process left: none lost, none dead.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let states: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM jobs WHERE kind = 'message.deliver' GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        if states == [("succeeded".to_owned(), SENDS as i64)] {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let tail = |node: &Node| {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                lines
                    .iter()
                    .filter(|l| {
                        !l.trim_start().starts_with("at ")
                            && !l
                                .trim_start()
                                .chars()
                                .next()
                                .is_some_and(|c| c.is_ascii_digit())
                    })
                    .take(12)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "not every send was delivered: {states:?}\nworkers 2 said:\n{}\napi 2 said:\n{}",
                tail(&workers_2),
                tail(&api_b)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Recorded once each (the retried requests found their Idempotency-Key), delivered.
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT message, status, count(*) OVER (PARTITION BY message) FROM communications",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), SENDS, "one communication per send");
    assert!(
        rows.iter().all(|(_, _, copies)| *copies == 1),
        "a send recorded twice"
    );
    assert!(
        rows.iter().all(|(_, status, _)| status == "sent"),
        "{rows:?}"
    );
    let distinct: BTreeSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), SENDS);
    // Each job's effect once: one delivery event per communication in the log.
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT payload ->> 'communication_id' FROM event_log
             WHERE payload ->> 'type' = 'message.new'
             GROUP BY 1 HAVING count(*) > 1) d",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(doubled, 0, "a message delivered twice");
    // Staff on B saw every message.
    let mut seen = BTreeSet::new();
    while seen.len() < SENDS {
        let frame = staff_ws
            .next_of_type("message.new", Duration::from_secs(30))
            .await
            .expect("every message reaches staff");
        seen.insert(frame["communication_id"].as_str().unwrap().to_owned());
    }

    // Presence: the customer whose api died is offline everywhere; the other is not.
    eventually(
        "the dead api's user offline",
        Duration::from_secs(30),
        || async {
            let users = online(&app, b.clone()).await?;
            (!users.contains("user-on-a") && users.contains("user-on-b")).then_some(())
        },
    )
    .await;
    drop((api_b, workers_2));
    for node in [&api_a, &workers_1] {
        assert!(node.log.exists());
    }
    std::fs::remove_dir_all(&logs).ok();
}

/// Group commit under a power cut: plain sends (no Idempotency-Key, so written in
/// shared batches) flow into an api process that is SIGKILLed midway. Every send that
/// was answered 202 is recorded once, with its job, and delivered; a send whose answer
/// never came is recorded whole (row and job) or not at all.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_killed_while_batching_plain_sends_keeps_every_accepted_one() {
    const LANES: usize = 16;
    const KILL_AT: usize = 150;
    let app = spawn_app_with(TestOptions::default()).await;
    let logs = std::env::temp_dir().join(format!("cc-batch-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs).unwrap();
    let env = environment(&app, &logs);
    let mut api = start("api", 1, &env, &logs);
    let url = api.url.clone().unwrap();
    ready(&app, &url).await;

    let accepted = Arc::new(AtomicUsize::new(0));
    let staff = app.staff_token();
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        let (client, url, token, accepted) = (
            app.client.clone(),
            url.clone(),
            staff.clone(),
            accepted.clone(),
        );
        lanes.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0.. {
                let body = json!({
                    "customer_id": format!("cust-{}", lane % CUSTOMERS),
                    "message": format!("batch {lane}-{n}"),
                });
                let response = client
                    .post(format!("{url}/api/messages/send"))
                    .bearer_auth(&token)
                    .json(&body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == 202 => {
                        let answer: Value = response.json().await.unwrap();
                        ids.push(answer["id"].as_str().unwrap().to_owned());
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => break, // the process is gone
                }
            }
            ids
        }));
    }
    eventually("sends accepted", Duration::from_secs(60), || async {
        (accepted.load(Ordering::SeqCst) >= KILL_AT).then_some(())
    })
    .await;
    kill(&mut api).await;
    let mut ids = BTreeSet::new();
    for lane in lanes {
        ids.extend(lane.await.unwrap());
    }
    assert!(ids.len() >= KILL_AT);

    // Every row has its message.new and every message.new its row: a batch commits
    // whole or not at all. (Plain sends have no job: their commit delivers them.)
    let unpaired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM communications c FULL JOIN (
             SELECT (payload->>'communication_id')::uuid AS id FROM event_outbox
             WHERE payload->>'type' = 'message.new'
             UNION ALL
             SELECT (payload->>'communication_id')::uuid FROM event_log
             WHERE payload->>'type' = 'message.new') e ON e.id = c.id
         WHERE c.id IS NULL OR e.id IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        unpaired, 0,
        "a row without its event, or an event without its row"
    );
    assert_eq!(app.count("jobs").await, 0, "no job for a plain send");
    // Each accepted send is there once; sends never answered may be there too.
    let stored: Vec<String> = sqlx::query_scalar("SELECT id::text FROM communications")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let stored: BTreeSet<String> = stored.into_iter().collect();
    assert!(
        ids.is_subset(&stored),
        "an accepted send was lost: {:?}",
        ids.difference(&stored).take(5).collect::<Vec<_>>()
    );
    // And the in-process workers deliver every one of them, once.
    eventually(
        "every stored send delivered",
        Duration::from_secs(60),
        || async {
            let waiting: i64 =
                sqlx::query_scalar("SELECT count(*) FROM communications WHERE status <> 'sent'")
                    .fetch_one(&app.pool)
                    .await
                    .ok()?;
            (waiting == 0).then_some(())
        },
    )
    .await;
    let announced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT payload->>'communication_id' FROM event_log
                               WHERE payload->>'type' = 'message.new'
                               GROUP BY 1 HAVING count(*) > 1) twice",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(announced, 0, "a send announced twice");
    let _ = std::fs::remove_dir_all(&logs);
}
