//! The real `commcenter-api` binary as a bench's child process: built in release, given
//! a database of its own on a free port. Shared by the `upload`, `websocket` and
//! `providers` (which builds the workers the same way) bench binaries.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};

/// Builds the api in release and answers where its binary is (cargo says so).
pub async fn build_api() -> anyhow::Result<PathBuf> {
    build_release("commcenter-api").await
}

/// Builds `package`'s binary of the same name in release and answers where it is.
pub async fn build_release(package: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace root")?;
    eprintln!("building {package} (release) ...");
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            package,
            "--bin",
            package,
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("running cargo build")?;
    ensure!(out.status.success(), "cargo build -p {package} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == package)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo named no {package} executable"))
}

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into())
}

pub fn replace_database(url: &str, database: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{database}")
}

pub async fn create_database(admin: &str, database: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin)
        .await
        .context("connecting to PostgreSQL (TEST_DATABASE_URL)")?;
    sqlx::query(&format!("CREATE DATABASE \"{database}\""))
        .execute(&mut conn)
        .await
        .with_context(|| format!("creating database {database}"))?;
    conn.close().await.ok();
    Ok(())
}

pub async fn drop_database(admin: &str, database: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin).await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    ))
    .execute(&mut conn)
    .await?;
    conn.close().await.ok();
    Ok(())
}

pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// SIGTERM (the api's graceful shutdown), then SIGKILL after 15 s.
pub async fn stop(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_ok()
        {
            return;
        }
        eprintln!("the api (pid {pid}) did not stop on SIGTERM; killing it");
    }
    child.kill().await.ok();
}

/// Waits until the api at `base` answers `/readyz` (60 s at most), failing at once if
/// its process exits.
pub async fn wait_ready(mut child: Option<&mut Child>, base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(child) = child.as_deref_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("the api exited at start-up ({status})");
        }
        let ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the api was not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes the queues and exchanges of a bench's prefix.
pub async fn delete_topology(prefix: &str, tiers: &str, delivery_limit: u32) -> anyhow::Result<()> {
    let topology = commcenter_shared::platform::broker::Topology::new(
        prefix,
        commcenter_shared::platform::settings::parse_tiers(tiers)?,
        delivery_limit,
    );
    let connection = lapin::Connection::connect(
        &commcenter_tests::broker_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    topology
        .delete(&channel, commcenter_shared::ledger::jobs::kinds::ALL)
        .await;
    connection.close(200, "bye".into()).await.ok();
    Ok(())
}
