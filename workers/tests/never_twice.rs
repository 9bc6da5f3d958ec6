//! Never send twice: the real workers binary is killed (aborted, as by a power cut) at
//! every step of a send, and a fresh one finishes the job. Whatever the step, the fake
//! provider has received the message exactly once and the communication shows `sent`.

use std::{process::Stdio, time::Duration};

use commcenter_fakes::{FakeGmail, FakeRingCentral, GmailConfig, RingCentralConfig};
use commcenter_shared::{
    domain::CustomerId,
    ledger::jobs::{self, NewJob, kinds, payloads},
    platform::broker::Topology,
    platform::settings::parse_tiers,
};
use commcenter_workers::crash;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio::process::{Child, Command};
use uuid::Uuid;

const RETRY_TIERS: &str = "100ms,200ms,400ms,1s";

struct World {
    database: String,
    prefix: String,
    pool: PgPool,
    uploads: tempfile::TempDir,
    ringcentral: FakeRingCentral,
    gmail: FakeGmail,
}

impl World {
    async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("cc_test_{id}");
        let mut admin = PgConnection::connect("postgres://root@127.0.0.1:5432/postgres")
            .await
            .expect("PostgreSQL is up");
        sqlx::query(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut admin)
            .await
            .expect("create database");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&format!("postgres://root@127.0.0.1:5432/{database}"))
            .await
            .expect("connect");
        commcenter_shared::platform::db::MIGRATOR
            .run(&pool)
            .await
            .expect("migrate");
        Self {
            database,
            prefix: format!("cc-test-{id}"),
            pool,
            uploads: tempfile::tempdir().expect("temp dir"),
            ringcentral: FakeRingCentral::start(RingCentralConfig::default())
                .await
                .expect("fake RingCentral"),
            gmail: FakeGmail::start(GmailConfig::default())
                .await
                .expect("fake Gmail"),
        }
    }

    /// The workers binary, pointed at this world's database, broker prefix and fakes.
    fn workers(&self, crash_at: Option<&str>) -> Child {
        let rc = self.ringcentral.config();
        let gm = self.gmail.config();
        Command::new(env!("CARGO_BIN_EXE_commcenter-workers"))
            .env(
                "DATABASE_URL",
                format!("postgres://root@127.0.0.1:5432/{}", self.database),
            )
            .env("DATABASE_MAX_CONNECTIONS", "6")
            .env("QUEUE_PREFIX", &self.prefix)
            .env("RETRY_TIERS", RETRY_TIERS)
            .env("RETRY_BASE_MS", "50")
            .env("OUTBOX_POLL_MS", "100")
            .env("UPLOAD_DIR", self.uploads.path())
            .env("CALL_LOG_IMPORT_SECS", "0")
            .env("METRICS_ADDR", "")
            .env("RINGCENTRAL_SERVER_URL", self.ringcentral.url())
            .env("RINGCENTRAL_CLIENT_ID", &rc.client_id)
            .env("RINGCENTRAL_CLIENT_SECRET", &rc.client_secret)
            .env("RINGCENTRAL_JWT", &rc.jwt)
            .env("RINGCENTRAL_FROM_NUMBER", &rc.from_number)
            .env("RINGCENTRAL_TIMEOUT_MS", "1000")
            .env("GOOGLE_CLIENT_ID", &gm.client_id)
            .env("GOOGLE_CLIENT_SECRET", &gm.client_secret)
            .env("GOOGLE_TOKEN_URL", format!("{}/token", self.gmail.url()))
            .env("GMAIL_API_URL", self.gmail.url())
            .env("GMAIL_REFRESH_TOKEN", &gm.refresh_token)
            .env("GMAIL_SENDER", &gm.sender)
            .env("GMAIL_TIMEOUT_MS", "1000")
            // A worker killed mid-call leaves its send `sending`: the next delivery waits
            // (busy, spending no attempt) until that call must have ended (timeout + 2 s).
            .env(crash::CRASH_AT, crash_at.unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the workers binary starts")
    }

    async fn sms(&self, text: &str) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role,
                 message, remote_address, local_address)
             VALUES ($1, 'cust-1', 'sms', 'outbound', 'staff-1', 'staff', $2, '+14155550100', $3)",
        )
        .bind(id)
        .bind(text)
        .bind(&self.ringcentral.config().from_number)
        .execute(&self.pool)
        .await
        .expect("communication");
        self.enqueue(kinds::SMS_SEND, id).await;
        id
    }

    async fn email(&self, subject: &str) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role,
                 subject, message, remote_address, local_address, rfc822_message_id)
             VALUES ($1, 'cust-1', 'email', 'outbound', 'staff-1', 'staff', $2, 'See you at 9.',
                     'customer@example.com', $3, $4)",
        )
        .bind(id)
        .bind(subject)
        .bind(&self.gmail.config().sender)
        .bind(format!("<{id}@example.com>"))
        .execute(&self.pool)
        .await
        .expect("communication");
        self.enqueue(kinds::EMAIL_SEND, id).await;
        id
    }

    async fn enqueue(&self, kind: &'static str, communication_id: Uuid) {
        let mut conn = self.pool.acquire().await.expect("connection");
        let job = match kind {
            kinds::SMS_SEND => NewJob::of(&payloads::SendSms { communication_id }),
            _ => NewJob::of(&payloads::SendEmail { communication_id }),
        }
        .for_communication(communication_id)
        .for_customer(&CustomerId::parse("cust-1").expect("id"));
        jobs::enqueue(&mut conn, job, 5).await.expect("enqueue");
    }

    async fn status(&self, id: Uuid) -> String {
        sqlx::query_scalar("SELECT status FROM communications WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .expect("status")
    }

    async fn wait_for_sent(&self, id: Uuid) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.status(id).await != "sent" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "communication {id} is {} after 30 s",
                self.status(id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs one send through a worker that dies at `point`, then through a healthy one.
    async fn crash_then_recover(&self, point: &str, communication: Uuid) {
        let mut doomed = self.workers(Some(point));
        let died = tokio::time::timeout(Duration::from_secs(30), doomed.wait())
            .await
            .unwrap_or_else(|_| panic!("the worker did not reach {point}"))
            .expect("wait");
        assert!(!died.success(), "the worker aborted at {point}: {died}");

        let mut healthy = self.workers(None);
        self.wait_for_sent(communication).await;
        stop(&mut healthy).await;
    }

    async fn job_state(&self, communication: Uuid) -> (String, i32) {
        sqlx::query_as("SELECT state, attempts FROM jobs WHERE communication_id = $1")
            .bind(communication)
            .fetch_one(&self.pool)
            .await
            .expect("job")
    }

    async fn cleanup(self) {
        self.pool.close().await;
        if let Ok(mut admin) =
            PgConnection::connect("postgres://root@127.0.0.1:5432/postgres").await
        {
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            ))
            .execute(&mut admin)
            .await
            .ok();
        }
        let connection =
            lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", Default::default())
                .await
                .expect("RabbitMQ is up");
        let channel = connection.create_channel().await.expect("channel");
        Topology::new(&self.prefix, parse_tiers(RETRY_TIERS).expect("tiers"), 5)
            .delete(&channel, kinds::ALL)
            .await;
        connection.close(200, "bye".into()).await.ok();
    }
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .ok();
    }
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_is_sent_once_whichever_step_the_worker_dies_at() {
    let world = World::new().await;
    for point in crash::ALL {
        let text = format!("Your crew arrives at 9 ({point})");
        let communication = world.sms(&text).await;
        world.crash_then_recover(point, communication).await;

        let copies = world
            .ringcentral
            .sent()
            .iter()
            .filter(|m| m["subject"] == text.as_str())
            .count();
        assert_eq!(
            copies, 1,
            "RingCentral got the SMS {copies} times after a crash at {point}"
        );
        let (state, attempts) = world.job_state(communication).await;
        assert_eq!(state, "succeeded", "after a crash at {point}");
        // The crashed attempt was never recorded, and waiting for its call to be over
        // (busy) spends none: one attempt, the one that finished the job.
        assert_eq!(attempts, 1, "attempts after a crash at {point}");
    }
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_is_sent_once_whichever_step_the_worker_dies_at() {
    let world = World::new().await;
    for point in crash::ALL {
        let subject = format!("Your visit tomorrow ({point})");
        let communication = world.email(&subject).await;
        world.crash_then_recover(point, communication).await;

        let copies = world
            .gmail
            .sent()
            .iter()
            .filter(|m| m.subject == subject)
            .count();
        assert_eq!(
            copies, 1,
            "Gmail got the email {copies} times after a crash at {point}"
        );
        let (state, attempts) = world.job_state(communication).await;
        assert_eq!(state, "succeeded", "after a crash at {point}");
        // The crashed attempt was never recorded, and waiting for its call to be over
        // (busy) spends none: one attempt, the one that finished the job.
        assert_eq!(attempts, 1, "attempts after a crash at {point}");
    }
    world.cleanup().await;
}
