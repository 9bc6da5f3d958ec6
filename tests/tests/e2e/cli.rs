//! `commcenterctl` against a running Commcenter: the same `run` the binary calls, with
//! the test's own stdout and stderr, so what an operator reads and the exit code a
//! script gets are both checked.

use commcenter_ctl::{self as ctl, Exit, Io};
use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, TestOptions, spawn_app_with};
use serde_json::Value;
use uuid::Uuid;

use crate::console::{REFUSAL, dead_sms};

struct Run {
    exit: Exit,
    out: String,
    err: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}\n--- stdout\n{}--- stderr\n{}",
            self.exit, self.out, self.err
        )
    }
}

/// `commcenterctl --api-url <app> --token <token> ARGS…`
async fn ctl_as(api_url: &str, token: &str, args: &[&str]) -> Run {
    let mut argv = vec!["commcenterctl", "--api-url", api_url, "--token", token];
    argv.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = ctl::run(
        argv,
        Io {
            out: &mut out,
            err: &mut err,
            err_is_terminal: false,
        },
    )
    .await;
    Run {
        exit,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

async fn ctl(app: &TestApp, args: &[&str]) -> Run {
    ctl_as(
        &app.base_url,
        &app.token("ops-cli", Role::Operator, None),
        args,
    )
    .await
}

fn json_lines(run: &Run) -> Vec<Value> {
    run.out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// `count` dead `receipt.apply` jobs of `customer`, straight in the ledger, a second apart.
async fn dead_receipts(app: &TestApp, customer: &str, count: i32) -> Vec<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, last_error,
                           last_error_class, customer_id, first_failed_at, last_failed_at,
                           finished_at, created_at, updated_at)
         SELECT gen_random_uuid(), 'receipt.apply', '{}', 'dead', 1, 5,
                'the communication is gone', 'permanent', $2, now(), now(), now(),
                now() - make_interval(secs => g), now()
         FROM generate_series(1, $1) g
         RETURNING id",
    )
    .bind(count)
    .bind(customer)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_finds_why_a_customers_sms_failed_replays_it_and_sees_it_succeed() {
    let app = spawn_app_with(TestOptions::default()).await;
    // RingCentral refuses twice: the first replay comes before the cause is fixed.
    let (communication, job) = dead_sms(&app, "cust-7", 2).await;

    // Find it.
    let list = ctl(&app, &["dlq", "list", "--customer", "cust-7"]).await;
    assert_eq!(list.exit, Exit::Ok, "{list:?}");
    let lines: Vec<&str> = list.out.lines().collect();
    assert!(lines[0].starts_with("ID"), "{list:?}");
    for column in ["KIND", "STATE", "TRIES", "CUSTOMER", "CLASS", "LAST ERROR"] {
        assert!(lines[0].contains(column), "{list:?}");
    }
    assert!(lines[1].starts_with(&job), "{list:?}");
    for cell in [
        "sms.send",
        "dead",
        "1/",
        "cust-7",
        "permanent",
        "RingCentral refused it",
        "FeatureNotAvailable",
    ] {
        assert!(lines[1].contains(cell), "{cell}: {list:?}");
    }
    assert!(list.out.contains("1 of 1 matching jobs"), "{list:?}");

    let listed = ctl(&app, &["--json", "dlq", "list", "--customer", "cust-7"]).await;
    let page = &json_lines(&listed)[0];
    assert_eq!(page["jobs"][0]["id"], job.as_str());
    assert_eq!(page["counts"]["total"], 1);
    let none = ctl(&app, &["dlq", "list", "--customer", "cust-8"]).await;
    assert_eq!(
        (none.exit, none.out.as_str()),
        (Exit::Ok, "No jobs match.\n")
    );

    // Read why.
    let show = ctl(&app, &["dlq", "show", &job]).await;
    assert_eq!(show.exit, Exit::Ok, "{show:?}");
    for text in [
        format!("Job {job}"),
        "Last error".to_owned(),
        REFUSAL.to_owned(),
        "Attempts (1)".to_owned(),
        "FeatureNotAvailable".to_owned(),
        format!("Communication {communication}"),
        "Audit (0)".to_owned(),
    ] {
        assert!(show.out.contains(&text), "{text}: {show:?}");
    }
    let attempt_row = show.out.lines().find(|l| l.starts_with("1 ")).unwrap();
    assert!(
        attempt_row.contains("permanent") && attempt_row.contains("400"),
        "{show:?}"
    );
    let detail = &json_lines(&ctl(&app, &["--json", "jobs", "show", &job]).await)[0];
    assert_eq!(detail["job"]["state"], "dead");
    assert_eq!(detail["communication"]["status"], "failed");

    // Replayed before the cause is fixed: it dies again, and the exit code says so.
    let early = ctl(
        &app,
        &["dlq", "replay", &job, "--reason", "try again", "--wait"],
    )
    .await;
    assert_eq!(early.exit, Exit::Unfinished, "{early:?}");
    assert!(
        early.out.contains("is dead again") && early.out.contains(REFUSAL),
        "{early:?}"
    );

    // Fixed (the fake stops refusing): replayed, it goes out.
    let replay = ctl(
        &app,
        &[
            "dlq",
            "replay",
            &job,
            "--reason",
            "SMS enabled on the number",
            "--wait",
        ],
    )
    .await;
    assert_eq!(replay.exit, Exit::Ok, "{replay:?}");
    assert_eq!(replay.out, format!("job {job} succeeded\n"));
    app.wait_for_status(&communication, "sent").await;
    assert_eq!(app.ringcentral.sent().len(), 1);
    let audit: Vec<(String, String)> = sqlx::query_as(
        "SELECT operator, reason FROM ops_audit WHERE job_id = $1::uuid ORDER BY id",
    )
    .bind(&job)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [
            ("ops-cli".to_owned(), "try again".to_owned()),
            ("ops-cli".to_owned(), "SMS enabled on the number".to_owned())
        ]
    );

    // A succeeded job is not replayed again: 409, exit 3, the API's reason.
    let again = ctl(&app, &["dlq", "replay", &job, "--reason", "once more"]).await;
    assert_eq!(again.exit, Exit::Refused, "{again:?}");
    assert!(
        again.err.contains("already succeeded") && again.err.contains("HTTP 409"),
        "{again:?}"
    );
    assert!(again.out.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_page_and_bulk_discards_show_progress_until_done() {
    let app = spawn_app_with(TestOptions::default()).await;
    let jobs = dead_receipts(&app, "cust-bulk", 3).await;

    let first = ctl(&app, &["jobs", "list", "--state", "dead", "--limit", "2"]).await;
    assert_eq!(first.exit, Exit::Ok, "{first:?}");
    assert!(first.out.contains("2 of 3 matching jobs"), "{first:?}");
    let cursor = first
        .out
        .lines()
        .find_map(|l| l.strip_prefix("More: --cursor "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    let second = ctl(
        &app,
        &[
            "jobs", "list", "--state", "dead", "--limit", "2", "--cursor", cursor,
        ],
    )
    .await;
    assert!(second.out.contains(&jobs[2].to_string()), "{second:?}");
    assert!(!second.out.contains("More:"), "{second:?}");
    let all = ctl(&app, &["--json", "dlq", "list", "--limit", "2", "--all"]).await;
    let pages = json_lines(&all);
    assert_eq!(pages.len(), 2, "{all:?}");
    let ids: Vec<&str> = pages
        .iter()
        .flat_map(|p| p["jobs"].as_array().unwrap())
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, jobs.iter().map(Uuid::to_string).collect::<Vec<_>>());

    // A bulk action needs an id, filters or --all.
    let unscoped = ctl(&app, &["dlq", "discard", "--reason", "clean-up"]).await;
    assert_eq!(unscoped.exit, Exit::Usage, "{unscoped:?}");
    assert!(unscoped.err.contains("--all"), "{unscoped:?}");

    let discard = ctl(
        &app,
        &[
            "dlq",
            "discard",
            "--customer",
            "cust-bulk",
            "--kind",
            "receipt.apply",
            "--reason",
            "clean-up",
        ],
    )
    .await;
    assert_eq!(discard.exit, Exit::Ok, "{discard:?}");
    assert!(discard.err.contains("3 dead jobs matched"), "{discard:?}");
    assert!(
        discard
            .err
            .contains(&format!("[{}] 3/3 done", "#".repeat(30))),
        "{discard:?}"
    );
    assert!(
        discard.out.contains("done: 3 discarded, 0 skipped"),
        "{discard:?}"
    );
    let cancelled: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'cancelled'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(cancelled, 3);

    // Nothing left to match: still a clean finish; --json prints the finished action.
    let empty = ctl(
        &app,
        &["--json", "dlq", "replay", "--all", "--reason", "sweep"],
    )
    .await;
    assert_eq!(empty.exit, Exit::Ok, "{empty:?}");
    let action = &json_lines(&empty)[0]["action"];
    assert_eq!(
        (action["state"].as_str(), action["matched"].as_i64()),
        (Some("done"), Some(0))
    );
    assert_eq!(action["action"], "replay");
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_show_jobs_per_state_the_outbox_and_the_queues() {
    let app = spawn_app_with(TestOptions::default()).await;
    dead_receipts(&app, "cust-1", 2).await;
    let stats = ctl(&app, &["stats"]).await;
    assert_eq!(stats.exit, Exit::Ok, "{stats:?}");
    assert!(
        stats.out.starts_with("Jobs per state\nSTATE      JOBS\n"),
        "{stats:?}"
    );
    assert!(
        stats
            .out
            .lines()
            .any(|l| l.split_whitespace().eq(["dead", "2"])),
        "{stats:?}"
    );
    assert!(stats.out.contains("Outbox: 0 pending"), "{stats:?}");
    assert!(stats.out.contains("RabbitMQ queues"), "{stats:?}");
    let work_queue = app.topology.work_queue("sms.send");
    assert!(stats.out.contains(&work_queue), "{stats:?}");

    let json = json_lines(&ctl(&app, &["stats", "--json"]).await).remove(0);
    assert_eq!(json["ledger"]["by_state"]["dead"], 2);
    assert_eq!(json["broker"]["reachable"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_tell_scripts_what_went_wrong() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let job = dead_receipts(&app, "cust-1", 1).await[0].to_string();

    // 2: not found.
    let missing = Uuid::now_v7().to_string();
    let run = ctl(&app, &["jobs", "show", &missing]).await;
    assert_eq!(run.exit, Exit::NotFound, "{run:?}");
    assert!(run.err.contains(&format!("no job {missing}")), "{run:?}");
    let run = ctl(&app, &["dlq", "replay", &missing, "--reason", "x"]).await;
    assert_eq!(run.exit, Exit::NotFound, "{run:?}");

    // 3: refused in the job's state.
    let run = ctl(&app, &["dlq", "discard", &job, "--reason", "not needed"]).await;
    assert_eq!(run.exit, Exit::Ok, "{run:?}");
    assert!(
        run.out.contains("discarded job") && run.out.contains("(was dead)"),
        "{run:?}"
    );
    let run = ctl(&app, &["dlq", "discard", &job, "--reason", "twice"]).await;
    assert_eq!(run.exit, Exit::Refused, "{run:?}");
    assert!(run.err.contains("already discarded"), "{run:?}");

    // 1: malformed filters, with the API's words; bad usage, with clap's.
    for (args, says) in [
        (
            vec!["jobs", "list", "--state", "zombie"],
            "state: unknown state \"zombie\"",
        ),
        (
            vec!["dlq", "list", "--older-than", "3 weeks"],
            "older_than: must be an age",
        ),
        (
            vec!["dlq", "list", "--limit", "500"],
            "limit: must be a whole number",
        ),
        (
            vec!["dlq", "replay", "--kind", "nope", "--reason", "x"],
            "filter.kind: unknown job kind",
        ),
        (
            vec!["jobs", "show", "not-a-uuid"],
            "invalid value 'not-a-uuid'",
        ),
        (vec!["dlq", "replay", &job], "--reason"),
        (
            vec!["dlq", "replay", &job, "--kind", "sms.send", "--reason", "x"],
            "not both",
        ),
        (vec!["jobs", "frobnicate"], "unrecognized subcommand"),
        (
            vec!["dlq", "replay", &job, "--reason", " "],
            "reason must be 1 to 500 characters",
        ),
    ] {
        let run = ctl(&app, &args).await;
        assert_eq!(run.exit, Exit::Usage, "{args:?}: {run:?}");
        assert!(run.err.contains(says), "{args:?}: {run:?}");
        assert!(run.out.is_empty(), "{args:?}: {run:?}");
    }

    // 4: not an operator, or no valid token.
    let run = ctl_as(&app.base_url, &app.staff_token(), &["dlq", "list"]).await;
    assert_eq!(run.exit, Exit::Unauthorized, "{run:?}");
    assert!(run.err.contains("HTTP 403"), "{run:?}");
    let run = ctl_as(&app.base_url, "not-a-token", &["stats"]).await;
    assert_eq!(run.exit, Exit::Unauthorized, "{run:?}");
    assert!(run.err.contains("HTTP 401"), "{run:?}");

    let run = ctl_as(&app.base_url, "", &["stats"]).await;
    assert_eq!(run.exit, Exit::Unauthorized, "{run:?}");
    assert!(
        run.err.contains("no token: set COMMCENTER_TOKEN"),
        "{run:?}"
    );
    // Bad usage is told first, before any token matters.
    let run = ctl_as(&app.base_url, "", &["dlq", "replay", "--reason", "x"]).await;
    assert_eq!(run.exit, Exit::Usage, "{run:?}");

    // 5: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let run = ctl_as(&format!("http://{closed}"), "t", &["stats"]).await;
    assert_eq!(run.exit, Exit::Unavailable, "{run:?}");
    assert!(run.err.contains("cannot reach the API"), "{run:?}");
    let run = ctl_as("ftp://example", "t", &["stats"]).await;
    assert_eq!(run.exit, Exit::Usage, "{run:?}");

    // --help answers on stdout with the codes, and is not an error.
    let run = ctl(&app, &["--help"]).await;
    assert_eq!(run.exit, Exit::Ok, "{run:?}");
    assert!(
        run.out.contains("Exit codes:") && run.out.contains("6  the action did not end cleanly")
    );

    // Nothing was acted on by the refused and malformed commands.
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM ops_audit")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(audited, 1, "only the one discard");
}
