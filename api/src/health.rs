//! What this instance knows of PostgreSQL, so that no request waits to find out:
//! `/readyz` answers from it at once, and while the database is known to be down a
//! request that needs it is refused at once (503 with `Retry-After`) instead of
//! waiting on the pool.
//!
//! Down is declared by the first failure seen: a request's lost connection, or the
//! background check's (every [`CHECK_EVERY`], on a connection of its own, so that a
//! pool busy with requests never reads as an outage). A check that gets no answer in
//! [`CHECK_TIMEOUT`] counts as slow; [`SLOW_CHECKS_BEFORE_DOWN`] in a row say the
//! server is gone, not loaded. Up again is declared only when a query succeeds on a
//! connection opened after the outage began.
//!
//! While down, the pool's new connections fail at once ([`closed_door`]). sqlx retries
//! a refused connection until the pool's acquire timeout, so without this every
//! request already waiting for a connection when the server stopped would wait that
//! long (1.5 s by default) for its 503.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the check asks while the database is up: also how long, at most, an
/// outage that no request has met yet goes unnoticed.
pub const CHECK_EVERY: Duration = Duration::from_millis(50);
/// How often it tries a new connection while the database is down.
pub const RECHECK_EVERY: Duration = Duration::from_millis(250);
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Checks in a row that get no answer in time before the database counts as down.
pub const SLOW_CHECKS_BEFORE_DOWN: u32 = 3;

/// The query that says the database serves us: it reads one of our tables, so a server
/// that accepts connections but is still starting, or lost our schema, is not "up".
const CHECK_QUERY: &str = "SELECT count(*) FROM (SELECT 1 FROM _sqlx_migrations LIMIT 1) AS one";

#[derive(Debug)]
pub struct Health {
    database_up: AtomicBool,
    /// The requests' pool, whose connect options point at [`closed_door`] while down.
    pool: PgPool,
    /// Where the pool really connects.
    database: PgConnectOptions,
    /// Wakes the check when a request finds the database gone.
    failed: Notify,
    /// Held while the flag and the pool's connect options change together: a request
    /// marking the database down must not close the door after a check has opened it.
    turning: Mutex<()>,
}

impl Health {
    /// Up until a check says otherwise: the api has just connected and migrated.
    pub fn new(pool: PgPool) -> Self {
        let database = (*pool.connect_options()).clone();
        Self {
            database_up: AtomicBool::new(true),
            pool,
            database,
            failed: Notify::new(),
            turning: Mutex::new(()),
        }
    }

    pub fn database_up(&self) -> bool {
        self.database_up.load(Ordering::Relaxed)
    }

    /// A request met a lost connection: refuse the next ones at once, and fail at once
    /// those waiting for a connection.
    pub fn database_failed(&self) {
        self.mark_down("a request lost its connection");
        self.failed.notify_one();
    }

    fn mark_down(&self, why: &str) {
        let _turning = self.turning.lock().unwrap_or_else(|p| p.into_inner());
        if self.database_up.swap(false, Ordering::Relaxed) {
            self.pool.set_connect_options(closed_door());
            tracing::warn!(
                why,
                "PostgreSQL unreachable: requests that need it get 503 until a query succeeds on a new connection"
            );
        }
    }

    fn mark_up(&self) {
        let _turning = self.turning.lock().unwrap_or_else(|p| p.into_inner());
        if !self.database_up.load(Ordering::Relaxed) {
            self.pool.set_connect_options(self.database.clone());
            self.database_up.store(true, Ordering::Relaxed);
            tracing::info!("PostgreSQL reachable again: a query succeeded on a new connection");
        }
    }

    /// Checks the database until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut check = Check::default();
        loop {
            let pause = if self.database_up() {
                match check.ask(&self.database).await {
                    Answer::Served => {}
                    Answer::Slow(slow) if slow < SLOW_CHECKS_BEFORE_DOWN => {}
                    Answer::Slow(_) => self.mark_down("the check went unanswered"),
                    Answer::Failed => self.mark_down("the check's connection failed"),
                }
                CHECK_EVERY
            } else {
                // Whatever connection the check had predates the outage.
                check = Check::default();
                if check.ask(&self.database).await == Answer::Served {
                    self.mark_up();
                }
                RECHECK_EVERY
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                // A request found it down: start looking for its return now.
                () = self.failed.notified() => {}
            }
        }
    }
}

/// The check's own connection, opened directly (never through a pool, which would
/// retry a refused connection until its timeout).
#[derive(Default)]
struct Check {
    connection: Option<PgConnection>,
    slow: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Served,
    /// No answer in time, this many checks in a row.
    Slow(u32),
    /// Refused, reset, shutting down, or any other error.
    Failed,
}

impl Check {
    async fn ask(&mut self, database: &PgConnectOptions) -> Answer {
        let asked = tokio::time::timeout(CHECK_TIMEOUT, async {
            let connection = match &mut self.connection {
                Some(connection) => connection,
                None => self.connection.insert(database.connect().await?),
            };
            sqlx::query(CHECK_QUERY).execute(&mut *connection).await
        })
        .await;
        match asked {
            Ok(Ok(_)) => {
                self.slow = 0;
                Answer::Served
            }
            Ok(Err(_)) => {
                self.connection = None;
                Answer::Failed
            }
            Err(_) => {
                // A connection left mid-query cannot be reused.
                if let Some(connection) = self.connection.take() {
                    tokio::spawn(connection.close_hard());
                }
                self.slow += 1;
                Answer::Slow(self.slow)
            }
        }
    }
}

/// Connect options that fail at once, and not with an error sqlx retries: a Unix
/// socket in a directory that does not exist (`ENOENT`). The pool's new connections
/// use them while the database is known to be down.
fn closed_door() -> PgConnectOptions {
    PgConnectOptions::new()
        .socket("/nonexistent/commcenter-database-marked-down")
        .disable_statement_logging()
}

/// Whether an error says the connection to PostgreSQL is gone (not merely slow): the
/// one test, for requests' errors.
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
