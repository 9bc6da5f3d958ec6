//! The PostgreSQL pool and the migrations, the one source of the schema.

use std::str::FromStr;

use anyhow::Context;
use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::platform::settings::DatabaseSettings;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(settings.url.expose())
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .log_statements(tracing::log::LevelFilter::Trace);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")
}

/// Creates the database named in the URL if it does not exist yet, so a fresh machine
/// needs no manual step.
pub async fn ensure_database(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(settings.url.expose())
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        // Two processes starting at once may race here; the loser's error is harmless.
        if let Err(error) = sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
            .execute(&mut admin)
            .await
        {
            tracing::debug!(%error, "database was created concurrently");
        }
    }
    admin.close().await.ok();
    Ok(())
}

/// Applies what is new. On a connection that keeps PostgreSQL's notices to itself: the
/// migrator's `CREATE TABLE IF NOT EXISTS _sqlx_migrations` says "already exists,
/// skipping" at every start otherwise, which sqlx logs as a warning.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .context("cannot connect to PostgreSQL")?;
    sqlx::query("SET client_min_messages = warning")
        .execute(&mut *conn)
        .await?;
    let applied = MIGRATOR
        .run(&mut *conn)
        .await
        .context("cannot apply migrations");
    sqlx::query("RESET client_min_messages")
        .execute(&mut *conn)
        .await
        .ok();
    applied
}
