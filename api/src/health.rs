//! What this instance knows of PostgreSQL, kept by a check in the background so that
//! no request waits to find out: `/readyz` answers from it at once, and while the
//! database is known to be down a request that needs it is refused at once (503 with
//! `Retry-After`) instead of waiting on the pool.
//!
//! The check runs every [`CHECK_EVERY`], giving `SELECT 1` [`CHECK_TIMEOUT`]: a lost
//! connection marks the database down at once, [`SLOW_CHECKS_BEFORE_DOWN`] unanswered
//! checks in a row too (a loaded server is slow, not gone). A request that meets a lost
//! connection marks it down as well; the next check that succeeds marks it up again.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

pub const CHECK_EVERY: Duration = Duration::from_millis(500);
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Checks in a row that get no answer in time before the database counts as down.
pub const SLOW_CHECKS_BEFORE_DOWN: u32 = 3;

#[derive(Debug)]
pub struct Health {
    database_up: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        // Up until a check says otherwise: the api has just connected and migrated.
        Self {
            database_up: AtomicBool::new(true),
        }
    }
}

impl Health {
    pub fn database_up(&self) -> bool {
        self.database_up.load(Ordering::Relaxed)
    }

    /// A request met a connection failure: refuse the next ones at once.
    pub fn database_failed(&self) {
        if self.database_up.swap(false, Ordering::Relaxed) {
            tracing::warn!("PostgreSQL unreachable; refusing requests that need it (503)");
        }
    }

    /// Checks the database until `shutdown`, on a connection of its own: a pool busy
    /// with requests must not read as a database that is down.
    pub async fn run(&self, pool: PgPool, shutdown: CancellationToken) {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CHECK_TIMEOUT)
            .connect_lazy_with((*pool.connect_options()).clone());
        let mut slow_checks = 0;
        loop {
            let reachable =
                match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&pool))
                    .await
                {
                    Ok(Ok(_)) => {
                        slow_checks = 0;
                        true
                    }
                    // Refused, reset, shutting down: down now.
                    Ok(Err(error)) if connection_lost(&error) => false,
                    // No answer in time: a loaded server is slow, a vanished one silent;
                    // only several in a row say it is gone.
                    _ => {
                        slow_checks += 1;
                        slow_checks < SLOW_CHECKS_BEFORE_DOWN
                    }
                };
            let was = self.database_up.swap(reachable, Ordering::Relaxed);
            if reachable && !was {
                tracing::info!("PostgreSQL reachable again");
            } else if !reachable && was {
                tracing::warn!("PostgreSQL unreachable; refusing requests that need it (503)");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }
}

/// Whether an error says the connection to PostgreSQL is gone (not merely slow): the
/// one test, for the background check and for requests' errors alike.
pub(crate) fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => true,
        // 57P01-57P03: admin shutdown, crash shutdown, cannot connect now.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("57P")),
        _ => false,
    }
}

/// Marks a response whose request failed because the database could not be reached
/// (set by [`ApiError`]'s response).
#[derive(Debug, Clone, Copy)]
pub struct DatabaseFailed;
