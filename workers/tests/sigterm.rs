//! The real binary, stopped the way an orchestrator stops it: SIGTERM ends it cleanly
//! (consumers cancelled, in-flight jobs drained, connection closed, exit code 0).

use std::{process::Stdio, time::Duration};

use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_workers_cleanly() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("cc_test_{id}");
    let prefix = format!("cc-test-{id}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_commcenter-workers"))
        .env(
            "DATABASE_URL",
            format!("postgres://root@127.0.0.1:5432/{database}"),
        )
        .env("DATABASE_MAX_CONNECTIONS", "4")
        .env("METRICS_ADDR", "")
        .env("QUEUE_PREFIX", &prefix)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the workers binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();

    let consuming = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("consuming") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(consuming, Ok(true), "the workers came up and consumed");

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("it stops in time")
        .expect("wait");
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push(line);
    }
    assert!(status.success(), "exit status {status}: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("stop signal received")),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("workers stopped")),
        "{rest:?}"
    );

    // Leave nothing behind.
    if let Ok(mut conn) = PgConnection::connect("postgres://root@127.0.0.1:5432/postgres").await {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        ))
        .execute(&mut conn)
        .await
        .ok();
    }
    let connection =
        lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", Default::default())
            .await
            .expect("RabbitMQ is up");
    let channel = connection.create_channel().await.expect("channel");
    let topology = commcenter_shared::platform::broker::Topology::new(
        &prefix,
        commcenter_shared::platform::settings::parse_tiers("1s,5s,30s,2m,10m,1h").expect("tiers"),
        5,
    );
    topology
        .delete(&channel, commcenter_shared::ledger::jobs::kinds::ALL)
        .await;
    connection.close(200, "bye".into()).await.ok();
}
