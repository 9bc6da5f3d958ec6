//! A newcomer's first hour, as real processes (`cc-node`, the api and workers entry
//! points): a first start on an empty database and broker, an idle stretch and a
//! graceful stop log no warning or error, and an idle system's polls leave no rows; the
//! api refuses a guessable JWT secret; `scripts/run.sh --check` refuses real provider
//! settings beside the fakes; `/` leads everywhere.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tokio::process::{Child, Command};

use commcenter_shared::{
    ledger::jobs::kinds, platform::broker::Topology, platform::settings::parse_tiers,
};
use commcenter_tests::{TestApp, TestOptions, eventually, spawn_app_with};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A database and a queue prefix nobody has used (`cc_test_<id>`, `cc-test-<id>`, so a
/// killed run's leftovers are found by `scripts/test.sh`), removed at the end.
struct Fresh {
    id: String,
    topology: Topology,
}

impl Fresh {
    fn new() -> Self {
        let id = commcenter_tests::unique_id();
        let options = TestOptions::default();
        let topology = Topology::new(
            &format!("cc-test-{id}"),
            parse_tiers(options.retry_tiers).unwrap(),
            5,
        );
        Self { id, topology }
    }

    fn database_url(&self) -> String {
        let admin = commcenter_tests::admin_database_url();
        format!("{}/cc_test_{}", admin.rsplit_once('/').unwrap().0, self.id)
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let kinds = kinds::ALL.iter().map(|k| (*k).to_owned()).collect();
        commcenter_tests::remove_database_and_topology(
            &commcenter_tests::admin_database_url(),
            &format!("cc_test_{}", self.id),
            Some((self.topology.clone(), kinds)),
        );
    }
}

/// The settings of a system on `fresh`, its providers `app`'s fakes, as the environment.
fn environment(app: &TestApp, fresh: &Fresh, dir: &Path) -> Vec<(&'static str, String)> {
    let ringcentral = app.ringcentral.config();
    let gmail = app.gmail.config();
    vec![
        ("DATABASE_URL", fresh.database_url()),
        ("DATABASE_MAX_CONNECTIONS", "8".into()),
        ("AMQP_URL", commcenter_tests::broker_url()),
        ("QUEUE_PREFIX", fresh.topology.prefix.clone()),
        ("RETRY_TIERS", TestOptions::default().retry_tiers.into()),
        ("JWT_SECRET", format!("first-start-{}", fresh.id)),
        ("UPLOAD_DIR", dir.join("uploads").display().to_string()),
        ("LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
        ("SHUTDOWN_GRACE_SECS", "5".into()),
        ("RINGCENTRAL_SERVER_URL", app.ringcentral.url()),
        ("RINGCENTRAL_CLIENT_ID", ringcentral.client_id.clone()),
        (
            "RINGCENTRAL_CLIENT_SECRET",
            ringcentral.client_secret.clone(),
        ),
        ("RINGCENTRAL_JWT", ringcentral.jwt.clone()),
        ("RINGCENTRAL_FROM_NUMBER", ringcentral.from_number.clone()),
        ("RINGCENTRAL_WEBHOOK_TOKEN", "first-start-webhook".into()),
        ("GOOGLE_CLIENT_ID", gmail.client_id.clone()),
        ("GOOGLE_CLIENT_SECRET", gmail.client_secret.clone()),
        ("GOOGLE_TOKEN_URL", app.gmail.token_url()),
        ("GMAIL_API_URL", app.gmail.url()),
        ("GMAIL_REFRESH_TOKEN", gmail.refresh_token.clone()),
        ("GMAIL_SENDER", gmail.sender.clone()),
        // Polls as often as they can go: an idle stretch of seconds then holds the
        // polls of many idle minutes at the defaults (30 s mail, 5 min call log).
        ("GMAIL_POLL_SECS", "1".into()),
        ("CALL_LOG_IMPORT_SECS", "1".into()),
    ]
}

fn start(
    role: &str,
    env: &[(&'static str, String)],
    log: &Path,
    extra: &[(&str, String)],
) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_cc-node"))
        .arg(role)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("cc-node starts")
}

/// SIGTERM, as Ctrl-C in `scripts/run.sh`; the process must drain and exit 0.
async fn stop(child: &mut Child, name: &str) {
    let pid = child.id().expect("still running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{name} did not stop within 20 s of SIGTERM"))
        .unwrap();
    assert!(status.success(), "{name} stopped with {status}");
}

/// The JSON log lines of a process: (level, message, timestamp).
fn log_lines(path: &Path) -> Vec<(String, String, chrono::DateTime<chrono::Utc>, Value)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}: not a JSON log line ({e}): {line}", path.display())
            });
            (
                line["level"].as_str().unwrap().to_owned(),
                line["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                line["timestamp"].as_str().unwrap().parse().unwrap(),
                line,
            )
        })
        .collect()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// What a system under test needs: a test app for its fake providers (its own api is
/// not the one under test), a fresh database and prefix, a scratch directory, and the
/// settings that put them together.
async fn new_system() -> (
    TestApp,
    Fresh,
    tempfile::TempDir,
    Vec<(&'static str, String)>,
) {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let fresh = Fresh::new();
    let dir = tempfile::tempdir().unwrap();
    let env = environment(&app, &fresh, dir.path());
    (app, fresh, dir, env)
}

/// The api and a workers process on `fresh`, started together as `scripts/run.sh` starts
/// them, each logging JSON lines to a file of its own.
struct System {
    api: Child,
    workers: Child,
    api_log: PathBuf,
    workers_log: PathBuf,
    api_url: String,
    metrics_url: String,
}

impl System {
    async fn start(app: &TestApp, env: &[(&'static str, String)], dir: &Path, run: &str) -> Self {
        let (api_port, metrics_port) = (free_port(), free_port());
        let api_log = dir.join(format!("api-{run}.log"));
        let workers_log = dir.join(format!("workers-{run}.log"));
        let workers = start(
            "workers",
            env,
            &workers_log,
            &[("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))],
        );
        let api = start(
            "api",
            env,
            &api_log,
            &[("API_ADDR", format!("127.0.0.1:{api_port}"))],
        );
        let system = Self {
            api,
            workers,
            api_log,
            workers_log,
            api_url: format!("http://127.0.0.1:{api_port}"),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
        };
        eventually("the api ready", Duration::from_secs(60), || async {
            let url = format!("{}/readyz", system.api_url);
            let response = app.client.get(url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        system
    }

    /// The workers' count of `kind` jobs that ended as `outcome` (0 before any).
    async fn jobs(&self, app: &TestApp, kind: &str, outcome: &str) -> f64 {
        let Ok(response) = app.client.get(&self.metrics_url).send().await else {
            return 0.0;
        };
        let text = response.text().await.unwrap_or_default();
        metric(
            &text,
            &format!(r#"commcenter_jobs_total{{kind="{kind}",outcome="{outcome}"}}"#),
        )
    }

    /// Waits (30 s at most) until the workers counted `at_least` jobs of `kind` ending as
    /// `outcome`.
    async fn wait_for_jobs(&self, app: &TestApp, kind: &str, outcome: &str, at_least: f64) {
        let what = format!("{at_least} {kind} jobs {outcome}");
        eventually(&what, Duration::from_secs(30), || async {
            (self.jobs(app, kind, outcome).await >= at_least).then_some(())
        })
        .await;
    }

    /// SIGTERM to both; answers their logs' warnings and errors.
    async fn stop(mut self) -> Vec<(&'static str, Value)> {
        stop(&mut self.api, "the api").await;
        stop(&mut self.workers, "the workers").await;
        [("api", &self.api_log), ("workers", &self.workers_log)]
            .into_iter()
            .flat_map(|(name, path)| {
                log_lines(path)
                    .into_iter()
                    .filter(|(level, ..)| level == "WARN" || level == "ERROR")
                    .map(move |(.., line)| (name, line))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_start_an_idle_stretch_and_a_stop_log_no_warning_and_idle_polls_leave_no_rows() {
    let (app, fresh, dir, env) = new_system().await;

    // Both at once, on a database and broker never used.
    let system = System::start(&app, &env, dir.path(), "first").await;
    // The first sync (which only notes where the mailbox stands) is done: idle from here.
    system
        .wait_for_jobs(&app, "email.sync", "succeeded", 1.0)
        .await;
    let idle_from = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle_until = chrono::Utc::now();

    // Counted, not kept: several empty polls of each kind, and only the first sync's row
    // in the ledger.
    for kind in ["email.sync", "call_log.import"] {
        let idle = system.jobs(&app, kind, "idle").await;
        assert!(
            idle >= 4.0,
            "{kind}: {idle} idle polls counted in 6 s of 1 s polls"
        );
    }
    let pool = sqlx::PgPool::connect(&fresh.database_url()).await.unwrap();
    let shown: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, state FROM jobs WHERE NOT idle ORDER BY kind")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        shown,
        [("email.sync".to_owned(), "succeeded".to_owned())],
        "only the first sync, which found where the mailbox stands, is shown to operators"
    );
    // The idle ones stay rows (a second copy of their message finds them finished),
    // marked idle, succeeded, with no attempt row.
    let idle: (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded'),
                (SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE j.idle)
         FROM jobs WHERE idle",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert!(
        idle.0 >= 8 && idle.1 == idle.0 && idle.2 == 0,
        "idle rows: {idle:?}"
    );
    let logs = [system.api_log.clone(), system.workers_log.clone()];
    let loud = system.stop().await;
    assert!(
        loud.is_empty(),
        "a first start and stop logged warnings or errors: {loud:#?}"
    );
    for path in &logs {
        let idle_info: Vec<String> = log_lines(path)
            .into_iter()
            .filter(|(level, _, at, _)| level == "INFO" && *at >= idle_from && *at <= idle_until)
            .map(|(_, message, ..)| message)
            .collect();
        assert!(
            idle_info.len() <= 2,
            "{} logged {} INFO lines while idle: {idle_info:?}",
            path.display(),
            idle_info.len()
        );
    }

    // A normal start on what the first one made, and a stop: quiet too.
    let system = System::start(&app, &env, dir.path(), "again").await;
    system.wait_for_jobs(&app, "email.sync", "idle", 1.0).await;
    let loud = system.stop().await;
    assert!(
        loud.is_empty(),
        "a second start and stop logged warnings or errors: {loud:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_refuses_the_example_or_a_short_jwt_secret_unless_told_it_is_a_development_machine()
{
    let (app, _fresh, dir, env) = new_system().await;
    let env: Vec<_> = env
        .into_iter()
        .filter(|(name, _)| *name != "JWT_SECRET")
        .collect();
    let log = dir.path().join("api.log");
    let api_addr = ("API_ADDR", format!("127.0.0.1:{}", free_port()));
    for (secret, says) in [
        (None, "JWT_SECRET is the example key"),
        (
            Some("dev-only-secret-change-me"),
            "JWT_SECRET is the example key",
        ),
        (
            Some("too-short-a-secret"),
            "JWT_SECRET is 18 bytes; a key must have at least 32",
        ),
    ] {
        let mut extra = vec![api_addr.clone()];
        extra.extend(secret.map(|s| ("JWT_SECRET", s.to_owned())));
        let status = tokio::time::timeout(
            Duration::from_secs(30),
            start("api", &env, &log, &extra).wait(),
        )
        .await
        .expect("the api stops at once")
        .unwrap();
        let output = std::fs::read_to_string(&log).unwrap();
        assert!(!status.success(), "{secret:?}: the api started");
        assert!(output.contains(says), "{secret:?}: {output}");
        assert!(output.contains("ALLOW_WEAK_JWT_SECRET"), "{output}");
    }

    // A development machine may say so, and then it serves.
    let mut api = start(
        "api",
        &env,
        &log,
        &[api_addr.clone(), ("ALLOW_WEAK_JWT_SECRET", "true".into())],
    );
    let url = format!("http://{}/healthz", api_addr.1);
    eventually("the api serving", Duration::from_secs(60), || async {
        let response = app.client.get(&url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    stop(&mut api, "the api").await;
}

/// `scripts/run.sh --check` with `.env` holding `lines` (and nothing inherited but PATH
/// and HOME): its exit status and what it said.
fn run_check(dir: &Path, lines: &[&str]) -> (bool, String) {
    let dotenv = dir.join("check.env");
    std::fs::write(&dotenv, lines.join("\n")).unwrap();
    let output = std::process::Command::new("bash")
        .arg(workspace().join("scripts/run.sh"))
        .arg("--check")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("DOTENV", &dotenv)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn run_sh_refuses_real_provider_settings_beside_the_fakes_and_names_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    // .env.example as shipped: the fakes.
    let example = std::fs::read_to_string(workspace().join(".env.example")).unwrap();
    let shipped: Vec<&str> = example.lines().collect();
    let (ok, said) = run_check(dir.path(), &shipped);
    assert!(ok, "{said}");
    assert!(
        said.contains("fake RingCentral and Gmail (FAKE_PROVIDERS=1)"),
        "{said}"
    );
    assert!(
        said.contains("made a random one for local runs"),
        "no JWT_SECRET in .env.example: run.sh makes one: {said}"
    );

    // The trap: real credentials pasted, the fake URLs removed, FAKE_PROVIDERS=1 kept.
    let (ok, said) = run_check(
        dir.path(),
        &[
            "FAKE_PROVIDERS=1",
            "RINGCENTRAL_CLIENT_ID=Xy7real0client",
            "RINGCENTRAL_CLIENT_SECRET=real-secret",
            "RINGCENTRAL_JWT=eyJreal.jwt.value",
            "RINGCENTRAL_FROM_NUMBER=+16505550100",
        ],
    );
    assert!(!ok, "{said}");
    for named in [
        "FAKE_PROVIDERS=1",
        "RINGCENTRAL_CLIENT_ID RINGCENTRAL_CLIENT_SECRET RINGCENTRAL_JWT are set to real values",
        "set FAKE_PROVIDERS=0",
        "docs/providers.md",
    ] {
        assert!(said.contains(named), "{named:?} not in: {said}");
    }
    // A real URL beside the fakes, alone, is refused too.
    let (ok, said) = run_check(
        dir.path(),
        &[
            "FAKE_PROVIDERS=1",
            "GMAIL_API_URL=https://gmail.googleapis.com",
        ],
    );
    assert!(
        !ok && said.contains("GMAIL_API_URL is set to real values"),
        "{said}"
    );

    // Real settings with the fakes off pass.
    let (ok, said) = run_check(
        dir.path(),
        &[
            "FAKE_PROVIDERS=0",
            "RINGCENTRAL_CLIENT_ID=Xy7real0client",
            "RINGCENTRAL_CLIENT_SECRET=real-secret",
            "RINGCENTRAL_JWT=eyJreal.jwt.value",
        ],
    );
    assert!(ok, "{said}");
    assert!(
        said.contains("RingCentral https://platform.ringcentral.com"),
        "{said}"
    );
}

#[tokio::test]
async fn the_front_door_leads_to_every_page_the_api_document_and_the_guides() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    let links: Vec<&str> = html
        .split("href=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    for door in [
        "/portal",
        "/ops",
        "/ops/analytics",
        "/api/openapi.json",
        "/docs/walkthrough.md",
    ] {
        assert!(
            links.contains(&door),
            "/ does not link to {door}: {links:?}"
        );
    }
    // Every link answers.
    for link in &links {
        let response = app.client.get(app.url(link)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{link}");
    }
    let guide = app
        .client
        .get(app.url("/docs/providers.md"))
        .send()
        .await
        .unwrap();
    assert_eq!(guide.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(
        guide
            .text()
            .await
            .unwrap()
            .starts_with("# Real RingCentral and Gmail")
    );

    let favicon = app
        .client
        .get(app.url("/favicon.ico"))
        .send()
        .await
        .unwrap();
    assert_eq!(favicon.status(), 200);
    assert_eq!(favicon.headers()["content-type"], "image/x-icon");
    assert_eq!(
        &favicon.bytes().await.unwrap()[..4],
        &[0, 0, 1, 0],
        "an ICO file"
    );

    let missing = app
        .client
        .get(app.url("/docs/secrets.md"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{error}");
    let traversal = app
        .client
        .get(app.url("/docs/..%2FCargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(traversal.status(), 404);
}
