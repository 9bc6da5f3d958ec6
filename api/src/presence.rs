//! Presence across api instances, kept in PostgreSQL.
//!
//! Each instance has a row in `presence_instances` that it touches every
//! `PRESENCE_HEARTBEAT_SECS`, and a row in `presence` per user with WebSockets open on
//! it (with their count). A user is online while they have a row on a live instance (one
//! heard from within `PRESENCE_TTL_SECS`). The transitions are announced as `presence`
//! events through the event outbox: `online` when a user's first connection anywhere
//! opens, `offline` when their last one closes, or when the instance holding it stops
//! being heard from: every instance sweeps dead instances on its heartbeat, so a killed
//! instance's users are offline everywhere within the TTL and one heartbeat.
//!
//! Each user's transitions are serialised by a transaction-scoped advisory lock on the
//! user, so two instances never both announce the same arrival.

use std::{sync::Arc, time::Duration};

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use commcenter_shared::{
    domain::{CustomerId, Role, UserId},
    ledger::events::{self, Event, PresenceStatus},
    platform::auth::Claims,
};

pub struct Presence {
    pool: PgPool,
    /// This api instance, for as long as the process runs.
    pub instance_id: Uuid,
    heartbeat: Duration,
    ttl: Duration,
    max_per_user: i64,
    outbox: Arc<Notify>,
}

/// Why a connection was not admitted.
#[derive(Debug)]
pub enum Refused {
    /// The user has `WS_MAX_PER_USER` connections open already.
    TooMany(i64),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Refused {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

/// Users with a connection on a live instance, as `(user, role)`.
const LIVE: &str =
    "SELECT p.user_id, min(p.role) AS role, min(p.customer_id) AS customer_id FROM presence p
     JOIN presence_instances i ON i.instance_id = p.instance_id
     WHERE i.heartbeat_at > now() - make_interval(secs => $1)";

impl Presence {
    pub fn new(
        pool: PgPool,
        heartbeat: Duration,
        ttl: Duration,
        max_per_user: i64,
        outbox: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            instance_id: Uuid::now_v7(),
            heartbeat,
            ttl,
            max_per_user,
            outbox,
        }
    }

    fn ttl_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// Says this instance is alive (and exists) now.
    async fn beat(&self) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO presence_instances (instance_id) VALUES ($1)
             ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(self.instance_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Locks the user's presence for the rest of the transaction; returns how many
    /// connections they have on live instances other than this one.
    async fn lock_user(&self, conn: &mut PgConnection, user: &str) -> sqlx::Result<i64> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('presence:' || $1, 0))")
            .bind(user)
            .execute(&mut *conn)
            .await?;
        sqlx::query_scalar(
            "SELECT coalesce(sum(p.connections), 0)::bigint FROM presence p
             JOIN presence_instances i ON i.instance_id = p.instance_id
             WHERE p.user_id = $1 AND p.instance_id <> $2
               AND i.heartbeat_at > now() - make_interval(secs => $3)",
        )
        .bind(user)
        .bind(self.instance_id)
        .bind(self.ttl_secs())
        .fetch_one(&mut *conn)
        .await
    }

    /// A connection of `user` opens here: admitted unless they have `WS_MAX_PER_USER`
    /// open already (on any instance); `online` is announced if it is their first.
    pub async fn connect(&self, who: &Claims) -> Result<(), Refused> {
        let (user, role, customer) = (&who.sub, who.role, who.customer_id.clone());
        let mut tx = self.pool.begin().await?;
        let elsewhere = self.lock_user(&mut tx, user.as_str()).await?;
        let here: i64 = sqlx::query_scalar(
            "SELECT coalesce((SELECT connections FROM presence WHERE instance_id = $1 AND user_id = $2), 0)::bigint",
        )
        .bind(self.instance_id)
        .bind(user.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if elsewhere + here >= self.max_per_user {
            return Err(Refused::TooMany(elsewhere + here));
        }
        // The instance row may have been swept (a long pause); it comes back.
        sqlx::query(
            "INSERT INTO presence_instances (instance_id) VALUES ($1)
             ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(self.instance_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO presence (instance_id, user_id, role, customer_id, connections)
             VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (instance_id, user_id) DO UPDATE SET connections = presence.connections + 1",
        )
        .bind(self.instance_id)
        .bind(user.as_str())
        .bind(role.as_str())
        .bind(customer.as_ref().map(CustomerId::as_str))
        .execute(&mut *tx)
        .await?;
        if elsewhere + here == 0 {
            events::record(
                &mut tx,
                &Event::presence(user.as_str(), role, customer, PresenceStatus::Online),
            )
            .await?;
        }
        tx.commit().await?;
        self.outbox.notify_one();
        Ok(())
    }

    /// A connection of `user` closed here; `offline` is announced if it was their last.
    pub async fn disconnect(&self, who: &Claims) -> sqlx::Result<()> {
        let (user, role, customer) = (&who.sub, who.role, who.customer_id.clone());
        let mut tx = self.pool.begin().await?;
        let elsewhere = self.lock_user(&mut tx, user.as_str()).await?;
        let left: Option<i32> = sqlx::query_scalar(
            "UPDATE presence SET connections = connections - 1
             WHERE instance_id = $1 AND user_id = $2 AND connections > 1
             RETURNING connections",
        )
        .bind(self.instance_id)
        .bind(user.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if left.is_none() {
            let removed =
                sqlx::query("DELETE FROM presence WHERE instance_id = $1 AND user_id = $2")
                    .bind(self.instance_id)
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if removed > 0 && elsewhere == 0 {
                events::record(
                    &mut tx,
                    &Event::presence(user.as_str(), role, customer, PresenceStatus::Offline),
                )
                .await?;
            }
        }
        tx.commit().await?;
        self.outbox.notify_one();
        Ok(())
    }

    /// Takes every user of a dead instance (or of this one, stopping) offline where
    /// they have no connection elsewhere, and removes the instance. Returns how many
    /// users went offline.
    async fn retire(&self, tx: &mut PgConnection, instance: Uuid) -> sqlx::Result<usize> {
        let users: Vec<(String, Role, Option<CustomerId>)> = sqlx::query_as(
            "SELECT user_id, role, customer_id FROM presence WHERE instance_id = $1 ORDER BY user_id",
        )
        .bind(instance)
        .fetch_all(&mut *tx)
        .await?;
        let mut offline = 0;
        for (user, role, customer) in users {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('presence:' || $1, 0))")
                .bind(&user)
                .execute(&mut *tx)
                .await?;
            let elsewhere: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM presence p
                     JOIN presence_instances i ON i.instance_id = p.instance_id
                     WHERE p.user_id = $1 AND p.instance_id <> $2
                       AND i.heartbeat_at > now() - make_interval(secs => $3))",
            )
            .bind(&user)
            .bind(instance)
            .bind(self.ttl_secs())
            .fetch_one(&mut *tx)
            .await?;
            if !elsewhere {
                events::record(
                    &mut *tx,
                    &Event::presence(&user, role, customer, PresenceStatus::Offline),
                )
                .await?;
                offline += 1;
            }
        }
        sqlx::query("DELETE FROM presence_instances WHERE instance_id = $1")
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        Ok(offline)
    }

    /// Instances not heard from within the TTL, each claimed by one sweeper.
    async fn sweep(&self) -> sqlx::Result<()> {
        loop {
            let mut tx = self.pool.begin().await?;
            let dead: Option<Uuid> = sqlx::query_scalar(
                "SELECT instance_id FROM presence_instances
                 WHERE heartbeat_at < now() - make_interval(secs => $1) AND instance_id <> $2
                 LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .bind(self.ttl_secs())
            .bind(self.instance_id)
            .fetch_optional(&mut *tx)
            .await?;
            // Claimed (locked): another sweeper skips it.
            let Some(dead) = dead else { return Ok(()) };
            let offline = self.retire(&mut tx, dead).await?;
            tx.commit().await?;
            self.outbox.notify_one();
            tracing::info!(instance = %dead, offline, "an api instance stopped answering; its users are offline");
        }
    }

    /// Heartbeats and sweeps until `shutdown`; then takes this instance's users offline.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.heartbeat);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            if let Err(error) = self.beat().await {
                tracing::warn!(%error, "presence heartbeat failed");
                continue;
            }
            if let Err(error) = self.sweep().await {
                tracing::warn!(%error, "presence sweep failed");
            }
        }
        let retired = async {
            let mut tx = self.pool.begin().await?;
            self.retire(&mut tx, self.instance_id).await?;
            tx.commit().await
        };
        if let Err(error) = retired.await {
            tracing::warn!(%error, "could not take this instance's users offline");
        }
        self.outbox.notify_one();
    }

    /// Users online on any live instance, by user id: their role, and a customer's
    /// conversation.
    pub async fn online_users(&self) -> sqlx::Result<Vec<(String, String, Option<String>)>> {
        sqlx::query_as(&format!("{LIVE} GROUP BY p.user_id ORDER BY p.user_id"))
            .bind(self.ttl_secs())
            .fetch_all(&self.pool)
            .await
    }

    /// The user's role if they are online on any live instance.
    pub async fn status(&self, user: &UserId) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar(&format!(
            "SELECT role FROM ({LIVE} AND p.user_id = $2 GROUP BY p.user_id) u"
        ))
        .bind(self.ttl_secs())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await
    }
}
