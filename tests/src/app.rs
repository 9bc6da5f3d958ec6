//! `spawn_app()`: one whole Commcenter per test, with a database and a queue prefix of
//! its own, torn down (database dropped, queues and exchanges deleted) on drop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use commcenter_api::App;
use commcenter_shared::ledger::jobs::Job;
use commcenter_shared::{
    domain::{CustomerId, Role, UserId},
    ledger::jobs::kinds,
    ledger::retry::RetryPolicy,
    platform::auth::{self, Claims},
    platform::blob::BlobStore,
    platform::broker::{self, Topology},
    platform::settings::{S3Settings, Secret, Settings, parse_tiers},
    platform::telemetry,
};
use commcenter_workers::{
    AnyHandler, Handler, Registry, Runtime, handlers, job, metrics::JobMetrics,
};

use commcenter_fakes::{FakeGmail, FakeRingCentral, GmailConfig, RingCentralConfig};

use crate::WsClient;

/// Where the shared servers are; CI and developers both have them on loopback.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into())
}
pub fn broker_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
pub fn broker_addr() -> SocketAddr {
    std::env::var("TEST_AMQP_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:5672".into())
        .parse()
        .expect("TEST_AMQP_ADDR")
}

/// What a test can change about its app.
pub struct TestOptions {
    /// Start the workers with the production handlers (and `handlers`).
    pub start_workers: bool,
    /// Handlers added to the production ones (or replacing theirs, by kind).
    pub handlers: Vec<Arc<dyn AnyHandler>>,
    /// Store files in S3 at this endpoint instead of on disk (e.g. a closed port, to
    /// play a store that is down).
    pub s3_endpoint: Option<String>,
    /// The api's broker URL (a [`crate::TcpProxy`]'s, to play an outage).
    pub api_amqp_url: Option<String>,
    /// The workers' broker URL.
    pub workers_amqp_url: Option<String>,
    /// How long a delivery may be deferred for failed bookkeeping before it is dead.
    pub max_deferral: Duration,
    /// Route the workers' database connections through this proxy (to cut them).
    pub workers_database_proxy: Option<std::net::SocketAddr>,
    /// The api (and the workers, unless they have a proxy of their own) reach
    /// PostgreSQL through this proxy, so a test can cut it.
    pub api_database_proxy: Option<std::net::SocketAddr>,
    /// The test's database on this server (its admin URL: a [`crate::ScratchPostgres`]'s,
    /// to stop a real server) instead of the shared one.
    pub database_server: Option<String>,
    /// Slow clients: the api's header and body timeouts and its connection cap.
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// The api's rate limits (none by default: tests and benches send in bursts).
    pub rate_limits: commcenter_shared::platform::settings::RateLimits,
    /// The api's longest wait for a pooled connection (the harness's default is long:
    /// the machine is shared).
    pub acquire_timeout: Duration,
    pub retry_tiers: &'static str,
    pub retry_base: Duration,
    pub max_attempts: i32,
    pub delivery_limit: u32,
    pub prefetch: u16,
    pub job_timeout: Duration,
    pub ws_buffer: usize,
    pub ws_ping: Duration,
    pub max_body_bytes: usize,
    /// RingCentral and Gmail configured (pointing at this test's fake servers); `false`
    /// clears them, to see the provider endpoints answer 503.
    pub providers_configured: bool,
    /// How this test's fake RingCentral behaves (latency, rate limits, numbers that
    /// cannot take SMS).
    pub ringcentral: RingCentralConfig,
    /// How this test's fake Gmail behaves.
    pub gmail: GmailConfig,
    /// `METRICS_TOKEN`: the bearer token `/metrics` asks for.
    pub metrics_token: Option<String>,
    /// `PRESENCE_HEARTBEAT_SECS` and `PRESENCE_TTL_SECS`, short so a killed instance's
    /// users go offline in a test's time.
    pub presence_heartbeat: Duration,
    pub presence_ttl: Duration,
    pub ws_max_per_user: i64,
    /// `DISPATCH_ACK_SECS`: how long before unacknowledged crew members are texted.
    pub dispatch_ack: Duration,
}

impl TestOptions {
    /// The production handlers, with `handler` added (or replacing its kind's).
    pub fn with_handler(handler: impl AnyHandler) -> Self {
        Self {
            handlers: vec![Arc::new(handler)],
            ..Default::default()
        }
    }

    /// The production handlers, with `handler` of `J`'s kind in place of its own.
    pub fn with_typed<J: Job, H: Handler<J>>(handler: H) -> Self {
        Self {
            handlers: vec![job::erase(handler)],
            ..Default::default()
        }
    }
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            start_workers: true,
            handlers: Vec::new(),
            s3_endpoint: None,
            api_amqp_url: None,
            workers_amqp_url: None,
            workers_database_proxy: None,
            api_database_proxy: None,
            database_server: None,
            acquire_timeout: Duration::from_secs(10),
            rate_limits: Default::default(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_deferral: commcenter_workers::runtime::DEFAULT_MAX_DEFERRAL,
            // Short tiers so retry tests take milliseconds, not minutes.
            retry_tiers: "100ms,200ms,400ms,1s",
            retry_base: Duration::from_millis(100),
            max_attempts: 5,
            delivery_limit: 3,
            prefetch: 16,
            job_timeout: Duration::from_secs(10),
            ws_buffer: 64,
            ws_ping: Duration::from_secs(30),
            dispatch_ack: Duration::from_secs(120),
            max_body_bytes: 64 * 1024,
            providers_configured: true,
            ringcentral: RingCentralConfig::default(),
            gmail: GmailConfig::default(),
            metrics_token: None,
            // Short enough for the kill test, long enough that a heartbeat starved for a
            // moment on a busy machine does not take a live instance's users offline.
            presence_heartbeat: Duration::from_millis(500),
            presence_ttl: Duration::from_secs(5),
            ws_max_per_user: 10,
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    pub pool: PgPool,
    pub settings: Settings,
    pub topology: Topology,
    pub client: reqwest::Client,
    database: String,
    /// The server it is on, as its admin URL.
    admin: String,
    /// Every job kind with a queue, to delete them all at the end.
    kinds: std::sync::Mutex<Vec<String>>,
    api_shutdown: CancellationToken,
    api: Option<JoinHandle<anyhow::Result<()>>>,
    /// This test's fake RingCentral: what it received, and failures on command.
    pub ringcentral: FakeRingCentral,
    /// This test's fake Gmail.
    pub gmail: FakeGmail,
    workers: Option<(CancellationToken, JoinHandle<()>)>,
    workers_options: WorkersOptions,
}

#[derive(Clone)]
struct WorkersOptions {
    amqp_url: String,
    max_deferral: Duration,
    /// The workers' own pool (through a proxy when the test cuts their database).
    pool: PgPool,
    registry: Registry,
    max_attempts: i32,
    prefetch: u16,
    job_timeout: Duration,
    /// Shared by every runtime of this app, as one worker process's would be.
    metrics: Arc<JobMetrics>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    // Quiet unless asked: RUST_LOG=info cargo test ... shows the apps' logs.
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(false);
    }
    let id = crate::unique_id();
    let database = format!("cc_test_{id}");
    let prefix = format!("cc-test-{id}");

    let mut settings = Settings::from_env().expect("settings");
    let admin = options
        .database_server
        .clone()
        .unwrap_or_else(admin_database_url);
    settings.database.url = Secret::new(match options.api_database_proxy {
        Some(proxy) => format!("postgres://root@{proxy}/{database}"),
        None => replace_database(&admin, &database),
    });
    settings.database.acquire_timeout = options.acquire_timeout;
    settings.http.rate_limits = options.rate_limits;
    settings.http.header_timeout = options.header_timeout;
    settings.http.body_timeout = options.body_timeout;
    settings.http.max_connections = options.max_connections;
    // Each test has two pools (api, workers) on one server of 100 connections, 6 tests at once.
    settings.database.max_connections = 6;
    settings.broker.url = Secret::new(options.api_amqp_url.clone().unwrap_or_else(broker_url));
    settings.broker.prefix = prefix;
    settings.broker.reconnect_max = Duration::from_millis(500);
    settings.http.addr = "127.0.0.1:0".parse().expect("addr");
    settings.http.ws_buffer = options.ws_buffer;
    settings.http.ws_ping = options.ws_ping;
    settings.crews.dispatch_ack = options.dispatch_ack;
    settings.http.presence_heartbeat = options.presence_heartbeat;
    settings.http.presence_ttl = options.presence_ttl;
    settings.http.ws_max_per_user = options.ws_max_per_user;
    settings.http.max_body_bytes = options.max_body_bytes;
    settings.http.shutdown_grace = Duration::from_secs(10);
    settings.jobs.retry_tiers = parse_tiers(options.retry_tiers).expect("tiers");
    settings.jobs.retry_base = options.retry_base;
    settings.jobs.max_attempts = options.max_attempts;
    settings.jobs.delivery_limit = options.delivery_limit;
    settings.jobs.prefetch = options.prefetch;
    settings.jobs.timeout = options.job_timeout;
    settings.relay.poll = Duration::from_millis(200);
    settings.metrics.token = options.metrics_token.clone().map(Secret::new);
    settings.auth.jwt_secret = Secret::new(format!("test-secret-{id}"));
    // Each test stores its files in a directory of its own, removed at the end.
    settings.storage.upload_dir = std::env::temp_dir().join(format!("cc-test-{id}"));
    settings.storage.s3 = options.s3_endpoint.clone().map(|endpoint| S3Settings {
        bucket: format!("cc-test-{id}"),
        region: "us-east-1".into(),
        access_key_id: Secret::new("test"),
        secret_access_key: Secret::new("test"),
        endpoint: Some(endpoint),
        force_path_style: true,
        part_size: 8 << 20,
        connect_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 1,
    });

    let ringcentral = FakeRingCentral::start(options.ringcentral.clone())
        .await
        .expect("the fake RingCentral starts");
    let gmail = FakeGmail::start(options.gmail.clone())
        .await
        .expect("the fake Gmail starts");
    configure_providers(
        &mut settings,
        options.providers_configured,
        &ringcentral,
        &gmail,
    );

    let app = App::build(settings.clone())
        .await
        .expect("the api builds (is PostgreSQL up?)");
    let addr = app.local_addr();
    let pool = app.state.pool.clone();
    let api_shutdown = CancellationToken::new();
    let api = tokio::spawn(app.run(api_shutdown.clone()));

    let topology = Topology::new(
        &settings.broker.prefix,
        settings.jobs.retry_tiers.clone(),
        settings.jobs.delivery_limit,
    );
    let blobs = Arc::new(BlobStore::from_settings(&settings.storage).expect("the blob store"));
    let registry = options.handlers.into_iter().fold(
        handlers::registry(&settings, blobs).expect("the handlers build"),
        Registry::with_any,
    );
    let mut kinds: Vec<String> = kinds::ALL.iter().map(|k| (*k).to_owned()).collect();
    kinds.extend(registry.kinds().iter().map(|k| (*k).to_owned()));
    kinds.sort();
    kinds.dedup();

    let database_name = database.clone();
    let mut test_app = TestApp {
        addr,
        base_url: format!("http://{addr}"),
        pool,
        topology,
        client: reqwest::Client::new(),
        database,
        admin,
        kinds: std::sync::Mutex::new(kinds),
        api_shutdown,
        api: Some(api),
        ringcentral,
        gmail,
        workers: None,
        workers_options: WorkersOptions {
            amqp_url: options.workers_amqp_url.unwrap_or_else(broker_url),
            max_deferral: options.max_deferral,
            // The workers' own pool, as their own process has: sharing the api's would
            // let jobs waiting on a slow provider hold every connection the api needs.
            pool: match options.workers_database_proxy {
                Some(proxy) => sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_lazy(&format!("postgres://root@{proxy}/{database_name}"))
                    .expect("a valid URL"),
                None => sqlx::postgres::PgPoolOptions::new()
                    .max_connections(settings.database.max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy(settings.database.url.expose())
                    .expect("a valid URL"),
            },
            registry,
            max_attempts: options.max_attempts,
            prefetch: options.prefetch,
            job_timeout: options.job_timeout,
            metrics: Default::default(),
        },
        settings,
    };
    test_app.wait_until_ready().await;
    // Every work queue exists before the test publishes anything itself (the relay and
    // the workers declare them too, but maybe not yet).
    let all_kinds: Vec<String> = test_app.kinds.lock().map(|k| k.clone()).unwrap_or_default();
    let all_kinds: Vec<&str> = all_kinds.iter().map(String::as_str).collect();
    test_app.declare_kinds(&all_kinds).await;
    if options.start_workers {
        test_app.start_workers();
    }
    test_app
}

/// Providers (issue 4): RingCentral and Gmail at this test's fake servers, with their
/// credentials. Or, when `configured` is false, no credentials at all, whatever the
/// environment says.
fn configure_providers(
    settings: &mut Settings,
    configured: bool,
    fake: &FakeRingCentral,
    fake_gmail: &FakeGmail,
) {
    let secret = |value: &str| Secret::new(if configured { value } else { "" });
    let config = fake.config();
    let ringcentral = &mut settings.ringcentral;
    ringcentral.server_url = fake.url();
    ringcentral.client_id = if configured {
        config.client_id.as_str()
    } else {
        ""
    }
    .into();
    ringcentral.client_secret = secret(&config.client_secret);
    ringcentral.jwt = secret(&config.jwt);
    ringcentral.from_number = config.from_number.clone();
    ringcentral.webhook_token = secret("test-webhook-token");
    ringcentral.timeout = Duration::from_secs(2);
    ringcentral.call_log_import_every = None;
    let config = fake_gmail.config();
    let gmail = &mut settings.gmail;
    gmail.token_url = fake_gmail.token_url();
    gmail.api_url = fake_gmail.url();
    gmail.client_id = if configured {
        config.client_id.as_str()
    } else {
        ""
    }
    .into();
    gmail.client_secret = secret(&config.client_secret);
    gmail.refresh_token = secret(&config.refresh_token);
    gmail.sender = config.sender.clone();
    gmail.timeout = Duration::from_secs(2);
}

fn replace_database(url: &str, database: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{database}")
}

impl TestApp {
    async fn wait_until_ready(&self) {
        // The notifier must be consuming before a test sends, or its events are missed.
        crate::eventually("the api to be ready", Duration::from_secs(15), || async {
            let response = self
                .client
                .get(format!("{}/readyz", self.base_url))
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        let o = &self.workers_options;
        let mut broker = self.settings.broker.clone();
        broker.url = Secret::new(o.amqp_url.clone());
        Arc::new(Runtime {
            pool: o.pool.clone(),
            broker,
            topology: self.topology.clone(),
            policy: RetryPolicy {
                tiers: self.settings.jobs.retry_tiers.clone(),
                base: self.settings.jobs.retry_base,
                max_attempts: o.max_attempts,
            },
            registry: o.registry.clone(),
            prefetch: o.prefetch,
            batch_size: self.settings.jobs.batch_size,
            job_timeout: o.job_timeout,
            shutdown_grace: Duration::from_secs(10),
            worker_name: format!("test-worker-{}", Uuid::new_v4().simple()),
            record_dead_letters: true,
            relay: self.settings.relay.clone(),
            outbox: Default::default(),
            max_deferral: o.max_deferral,
            metrics: o.metrics.clone(),
        })
    }

    /// What this app's workers have counted (their `/metrics`).
    pub fn workers_metrics(&self) -> Arc<JobMetrics> {
        self.workers_options.metrics.clone()
    }

    /// Starts the workers in this process (a second call is a no-op).
    pub fn start_workers(&mut self) {
        if self.workers.is_some() {
            return;
        }
        let shutdown = CancellationToken::new();
        let runtime = self.runtime();
        tokio::spawn(
            commcenter_workers::schedule::DispatchReminders {
                pool: runtime.pool.clone(),
                ack_after: self.settings.crews.dispatch_ack,
                max_attempts: self.settings.jobs.max_attempts,
                outbox: runtime.outbox.clone(),
            }
            .run(shutdown.clone()),
        );
        tokio::spawn(
            commcenter_workers::schedule::Fallbacks {
                pool: runtime.pool.clone(),
                settings: commcenter_workers::schedule::fallback_settings(&self.settings),
                outbox: runtime.outbox.clone(),
            }
            .run(shutdown.clone()),
        );
        tokio::spawn(
            commcenter_workers::activity::Recorder {
                pool: runtime.pool.clone(),
                broker: runtime.broker.clone(),
                topology: runtime.topology.clone(),
                metrics: runtime.metrics.clone(),
                every: Duration::from_millis(200),
            }
            .run(shutdown.clone()),
        );
        let handle = tokio::spawn(runtime.run(shutdown.clone()));
        self.workers = Some((shutdown, handle));
    }

    /// Stops the workers as SIGTERM would, and waits until they have drained.
    pub async fn stop_workers(&mut self) {
        if let Some((shutdown, handle)) = self.workers.take() {
            shutdown.cancel();
            handle.await.expect("workers stop cleanly");
        }
    }

    pub fn token(&self, user: &str, role: Role, customer: Option<&str>) -> String {
        let claims = Claims {
            sub: UserId::parse(user).expect("user id"),
            role,
            customer_id: customer.map(|c| CustomerId::parse(c).expect("customer id")),
            exp: chrono::Utc::now().timestamp() + 3600,
        };
        auth::issue(&claims, self.settings.auth.jwt_secret.expose())
    }

    pub fn staff_token(&self) -> String {
        self.token("staff-1", Role::Staff, None)
    }

    pub fn customer_token(&self, customer: &str) -> String {
        self.token(
            &format!("user-of-{customer}"),
            Role::Customer,
            Some(customer),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    /// `get`, owning its arguments (for closures that build requests).
    pub async fn get_owned(&self, path: String, token: String) -> reqwest::Response {
        self.get(&path, &token).await
    }

    /// `post_json`, owning its arguments (for closures that build requests).
    pub async fn post_owned(&self, path: String, token: String, body: Value) -> reqwest::Response {
        self.post_json(&path, &token, &body).await
    }

    pub async fn put_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("PUT")
    }

    pub async fn patch_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("DELETE")
    }

    /// `POST /api/communications/search`.
    pub async fn search(&self, token: &str, body: &Value) -> reqwest::Response {
        self.post_json("/api/communications/search", token, body)
            .await
    }

    /// `POST /api/communications/templates`.
    pub async fn create_template(&self, token: &str, body: &Value) -> reqwest::Response {
        self.post_json("/api/communications/templates", token, body)
            .await
    }

    /// `GET /api/communications/conversations` with a query string (`""` for none).
    pub async fn conversations(&self, token: &str, query: &str) -> reqwest::Response {
        self.get(&format!("/api/communications/conversations{query}"), token)
            .await
    }

    /// `PATCH /api/communications/{id}`: a new text.
    pub async fn edit_message(&self, token: &str, id: &str, message: &str) -> reqwest::Response {
        self.patch_json(
            &format!("/api/communications/{id}"),
            token,
            &serde_json::json!({ "message": message }),
        )
        .await
    }

    /// `DELETE /api/communications/{id}`.
    pub async fn delete_message(&self, token: &str, id: &str) -> reqwest::Response {
        self.delete(&format!("/api/communications/{id}"), token)
            .await
    }

    /// `POST /api/communications/upload` of one file, the parts in the given order.
    pub async fn upload_file(
        &self,
        token: &str,
        customer: &str,
        bytes: Vec<u8>,
        name: &str,
        file_first: bool,
    ) -> reqwest::Response {
        use reqwest::multipart::{Form, Part};
        let file = Part::bytes(bytes).file_name(name.to_owned());
        let form = if file_first {
            Form::new()
                .part("file", file)
                .text("customer_id", customer.to_owned())
        } else {
            Form::new()
                .text("customer_id", customer.to_owned())
                .part("file", file)
        };
        self.client
            .post(self.url("/api/communications/upload"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("POST upload")
    }

    /// Marks the communication read as `token`'s holder; must be accepted.
    pub async fn mark_read(&self, token: &str, id: &str) {
        let response = self
            .post_json(
                &format!("/api/communications/{id}/mark-read"),
                token,
                &serde_json::json!({}),
            )
            .await;
        assert_eq!(response.status(), 202, "mark-read is accepted");
    }

    pub async fn send_message(
        &self,
        token: &str,
        customer: &str,
        message: &str,
    ) -> reqwest::Response {
        self.post_json(
            "/api/messages/send",
            token,
            &serde_json::json!({ "customer_id": customer, "message": message }),
        )
        .await
    }

    /// Sends an in-app message that must be accepted; returns the 202 body.
    pub async fn send_ok(&self, token: &str, customer: &str, message: &str) -> Value {
        let response = self.send_message(token, customer, message).await;
        assert_eq!(response.status(), 202, "the send is accepted");
        response.json().await.expect("a JSON body")
    }

    /// Sends an in-app message with a file, which a `message.deliver` job delivers (one
    /// without files needs no job: its commit delivers it); for tests of the job
    /// machinery. The file is a row already `ready`, as if uploaded and processed.
    /// Returns the 202 body, whose `job_id` names the job.
    pub async fn send_job_ok(&self, token: &str, customer: &str, message: &str) -> Value {
        let file = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO file_attachments (id, customer_id, uploaded_by, original_name,
                 stored_name, file_size, file_type, file_category, status)
             VALUES ($1, $2, 'staff-1', 'note.txt', $1::text || '.txt', 5, 'text/plain',
                 'documents', 'ready')",
        )
        .bind(file)
        .bind(customer)
        .execute(&self.pool)
        .await
        .expect("a ready file");
        let response = self
            .post_json(
                "/api/messages/send",
                token,
                &serde_json::json!({
                    "customer_id": customer, "message": message, "attachments": [file]
                }),
            )
            .await;
        assert_eq!(response.status(), 202, "the send is accepted");
        let body: Value = response.json().await.expect("a JSON body");
        assert!(
            body["job_id"].is_string(),
            "a send with a file has a job: {body}"
        );
        body
    }

    /// Another api instance on this app's database and queue prefix, in a runtime of
    /// its own so that a test can kill it at once, as `kill -9` would.
    pub async fn spawn_instance(&self) -> ApiInstance {
        let mut settings = self.settings.clone();
        settings.http.addr = "127.0.0.1:0".parse().expect("addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let app = runtime
                .block_on(App::build(settings))
                .expect("the second api builds");
            let addr = app.local_addr();
            runtime.spawn(app.run(stop));
            ApiInstance {
                addr,
                shutdown,
                runtime: Some(runtime),
            }
        })
        .await
        .expect("the instance starts")
    }

    pub async fn ws(&self, user: &str, token: &str) -> WsClient {
        let url = format!("ws://{}/api/ws/{user}?token={token}", self.addr);
        WsClient::connect(&url).await.expect("WebSocket connects")
    }

    /// The communication's status as the ledger has it now.
    pub async fn communication_status(&self, id: &str) -> String {
        sqlx::query_scalar("SELECT status FROM communications WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .expect("communication exists")
    }

    /// Waits until the communication has `status`.
    pub async fn wait_for_status(&self, id: &str, status: &str) {
        crate::eventually(
            &format!("communication {id} to be {status}"),
            Duration::from_secs(15),
            || async { (self.communication_status(id).await == status).then_some(()) },
        )
        .await;
    }

    /// Waits until the job is in `state`; returns the row as JSON.
    pub async fn wait_for_job_state(&self, job_id: &str, state: &str) -> Value {
        crate::eventually(
            &format!("job {job_id} to be {state}"),
            Duration::from_secs(20),
            || async {
                let row: Option<(String, sqlx::types::Json<Value>)> =
                    sqlx::query_as("SELECT state, to_jsonb(jobs) FROM jobs WHERE id = $1::uuid")
                        .bind(job_id)
                        .fetch_optional(&self.pool)
                        .await
                        .ok()?;
                row.filter(|(s, _)| s == state).map(|(_, json)| json.0)
            },
        )
        .await
    }

    /// The attempts recorded for a job, in order.
    pub async fn attempts(&self, job_id: &str) -> Vec<Value> {
        let rows: Vec<sqlx::types::Json<Value>> = sqlx::query_scalar(
            "SELECT to_jsonb(a) FROM job_attempts a WHERE job_id = $1::uuid ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await
        .expect("attempts");
        rows.into_iter().map(|r| r.0).collect()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Events of this type recorded, published or not (one snapshot of the event log
    /// and its outbox, so an event the relay is moving counts once).
    pub async fn count_events(&self, event_type: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM event_log WHERE payload->>'type' = $1)
                  + (SELECT count(*) FROM event_outbox WHERE payload->>'type' = $1)",
        )
        .bind(event_type)
        .fetch_one(&self.pool)
        .await
        .expect("count events")
    }

    /// Every job finished and nothing left in the outbox: a test that ends with work
    /// still pending has lost track of something.
    pub async fn assert_no_jobs_left(&self) {
        crate::eventually("every job to finish", Duration::from_secs(15), || async {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE state NOT IN ('succeeded', 'dead', 'cancelled')",
            )
            .fetch_one(&self.pool)
            .await
            .ok()?;
            let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
                .fetch_one(&self.pool)
                .await
                .ok()?;
            (open == 0 && events == 0).then_some(())
        })
        .await;
    }

    /// A channel on the real broker, for tests that publish or inspect directly.
    pub async fn broker_channel(&self) -> (lapin::Connection, lapin::Channel) {
        let mut settings = self.settings.broker.clone();
        settings.url = Secret::new(broker_url());
        let connection = broker::connect(&settings, "test")
            .await
            .expect("RabbitMQ is up");
        let channel = connection.create_channel().await.expect("channel");
        (connection, channel)
    }

    /// Declares work queues for kinds no worker here runs (so a test can play the
    /// worker); they are deleted with the rest at the end.
    pub async fn declare_kinds(&self, kinds: &[&str]) {
        let (connection, channel) = self.broker_channel().await;
        self.topology
            .declare(&channel, kinds)
            .await
            .expect("declare");
        connection.close(200, "bye".into()).await.ok();
        if let Ok(mut known) = self.kinds.lock() {
            for kind in kinds {
                if !known.iter().any(|k| k == kind) {
                    known.push((*kind).to_owned());
                }
            }
        }
    }

    /// Messages ready in a queue of this app's topology.
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let (connection, channel) = self.broker_channel().await;
        let declared = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("queue exists");
        connection.close(200, "bye".into()).await.ok();
        declared.message_count()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop everything first and wait for it (the test's other runtime threads drive
        // the shutdown): a relay or notifier still running could re-declare the
        // topology after it was deleted.
        self.api_shutdown.cancel();
        let mut handles = Vec::new();
        if let Some((shutdown, handle)) = self.workers.take() {
            shutdown.cancel();
            handles.push(handle.abort_handle());
        }
        if let Some(api) = self.api.take() {
            handles.push(api.abort_handle());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while handles.iter().any(|h| !h.is_finished()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        handles.iter().for_each(tokio::task::AbortHandle::abort);
        std::fs::remove_dir_all(&self.settings.storage.upload_dir).ok();
        let kinds = self.kinds.lock().map(|k| k.clone()).unwrap_or_default();
        remove_database_and_topology(
            &self.admin,
            &self.database,
            Some((self.topology.clone(), kinds)),
        );
    }
}

/// Drops `database` on the server `admin` names and deletes `topology`'s queues (of
/// those kinds) and exchanges, waiting on a thread with a runtime of its own: the
/// callers are `Drop`s, which cannot await, and may run inside a runtime. What is
/// already gone is no error.
pub fn remove_database_and_topology(
    admin: &str,
    database: &str,
    topology: Option<(Topology, Vec<String>)>,
) {
    let (admin, database) = (admin.to_owned(), database.to_owned());
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            if let Ok(mut conn) = PgConnection::connect(&admin).await {
                sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                ))
                .execute(&mut conn)
                .await
                .ok();
            }
            let Some((topology, kinds)) = topology else {
                return;
            };
            if let Ok(connection) =
                lapin::Connection::connect(&broker_url(), lapin::ConnectionProperties::default())
                    .await
                && let Ok(channel) = connection.create_channel().await
            {
                let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
                topology.delete(&channel, &kinds).await;
                connection.close(200, "bye".into()).await.ok();
            }
        });
    });
    cleanup.join().ok();
}

/// A second api instance of a [`TestApp`] (see [`TestApp::spawn_instance`]).
pub struct ApiInstance {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ApiInstance {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn ws(&self, user: &str, token: &str) -> WsClient {
        let url = format!("ws://{}/api/ws/{user}?token={token}", self.addr);
        WsClient::connect(&url).await.expect("WebSocket connects")
    }

    /// Stops every task of the instance at once: no graceful step runs, its rows stay
    /// behind, its sockets close.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for ApiInstance {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            // Its graceful stop runs on its own threads; give it a moment, then go.
            std::thread::sleep(Duration::from_millis(200));
            runtime.shutdown_background();
        }
    }
}
