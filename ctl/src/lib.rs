//! `commcenterctl`, the operators' command line, as a library: the binary
//! (`src/main.rs`) calls [`run`] with the process's arguments and streams,
//! tests call it with their own.
//!
//! Everything but `migrate` and `token` goes through the operators' HTTP API
//! (`/api/ops/`), so the CLI sees exactly what the console and the API see and needs
//! no database access. Human tables by default; `--json` prints the API's answers as
//! they are. Failures map to the exit codes of [`Exit`].
//!
//! - [`client`]: the HTTP calls, and which exit code each failure means.
//! - `render`: tables and blocks for people.
//! - `progress`: the bar drawn while a bulk action runs.

pub mod client;
mod progress;
mod render;

use std::{
    ffi::OsString,
    io::{self, Write},
    time::{Duration, Instant},
};

use clap::{Args, Parser, Subcommand, error::ErrorKind};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use commcenter_providers::{error::Failure as ProviderFailure, ringcentral::RingCentral};
use commcenter_shared::{
    domain::{CustomerId, Role, UserId},
    platform::auth::{self, Claims},
    platform::db,
    platform::settings::Settings,
};

use self::{
    client::{Client, Failure, Result},
    progress::Progress,
};

/// What the process exits with; scripts may rely on these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok,
    /// 1: bad usage or input (the API's 400 and 422 included), or a local failure.
    Usage,
    /// 2: no such job or action.
    NotFound,
    /// 3: the API refused the action in the job's state (409).
    Refused,
    /// 4: no token, or not an operator's (401, 403).
    Unauthorized,
    /// 5: the API is unreachable or failing (5xx).
    Unavailable,
    /// 6: the action did not end cleanly: a bulk action with errors, a replayed job
    /// that died again (`--wait`), or the wait timed out.
    Unfinished,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Usage => 1,
            Self::NotFound => 2,
            Self::Refused => 3,
            Self::Unauthorized => 4,
            Self::Unavailable => 5,
            Self::Unfinished => 6,
        }
    }
}

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  bad usage or input (the API's 400/422 message is printed), or a local failure
  2  not found (404)
  3  refused: the action does not apply to the job in its state (409)
  4  unauthorized or forbidden: no token, or not an operator's (401/403)
  5  the API is unreachable or failing (5xx)
  6  the action did not end cleanly: a bulk action with errors, a replayed job that
     died again (--wait), or waiting timed out

With --json, each answer of the API the command relies on is printed as one line of
JSON, as the API sent it (several pages with --all; the final job with --wait; the
finished action for bulk replays and discards).";

#[derive(Parser)]
#[command(
    name = "commcenterctl",
    about = "Operate Commcenter: find, inspect, replay and discard jobs",
    version,
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ApiArgs {
    /// The API's base URL.
    #[arg(
        long,
        env = "COMMCENTER_API_URL",
        default_value = "http://127.0.0.1:8001",
        global = true
    )]
    api_url: String,
    /// An operator's bearer token (prefer the variable: arguments show in `ps`).
    #[arg(long, env = "COMMCENTER_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Mint a one-hour operator token for NAME from JWT_SECRET (local use; takes
    /// precedence over --token).
    #[arg(long, value_name = "NAME", global = true)]
    as_operator: Option<String>,
    /// Print the API's JSON as it is, one document per line.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Find and inspect jobs in the ledger.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Dead jobs: list, inspect, replay, discard.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Queue health: jobs per state, the outbox, RabbitMQ's queues.
    Stats,
    /// RingCentral: subscribe our webhook (reads the RINGCENTRAL_* settings).
    #[command(subcommand)]
    Ringcentral(RingCentralCommand),
    /// Apply the database migrations (DATABASE_URL); creates the database if missing.
    Migrate,
    /// Print USER's live events (the WebSocket /api/ws/USER), one frame per line, until
    /// the connection ends or the command is stopped. Takes any role's token (--token).
    Watch {
        /// The user whose connection this is (the token's subject).
        user: String,
        /// What each line starts with [default: "[ws USER]"].
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Print a signed bearer token (JWT_SECRET) on stdout.
    Token {
        /// The user id (the token's subject).
        #[arg(long)]
        user: String,
        /// customer, staff, crew or operator.
        #[arg(long)]
        role: String,
        /// The customer a customer token is bound to.
        #[arg(long)]
        customer: Option<String>,
        /// How long the token is valid.
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
    },
}

#[derive(Subcommand)]
enum RingCentralCommand {
    /// Create the webhook subscription RingCentral posts delivery statuses and inbound
    /// SMS to, with RINGCENTRAL_WEBHOOK_TOKEN as its verification token. RingCentral
    /// calls ADDRESS at once to validate it, so the api must be reachable there.
    Subscribe {
        /// The public URL of `/api/integrations/ringcentral/webhook`.
        #[arg(long)]
        address: String,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Jobs matching the filters, newest first, with counts.
    List {
        /// States, comma-separated: pending, queued, running, retrying, succeeded,
        /// dead, cancelled.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One job in full: payload, attempts, communication, broker death, audit.
    Show { id: Uuid },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead jobs matching the filters (jobs list --state dead).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One job in full.
    Show { id: Uuid },
    /// Run dead jobs again: one by id, or every dead job matching the filters.
    Replay(ActArgs),
    /// Cancel dead jobs for good: one by id, or every dead job matching the filters.
    Discard(ActArgs),
}

/// The ledger's filters, as the API names them.
#[derive(Args, Default)]
struct FilterArgs {
    /// Job kinds, comma-separated (e.g. sms.send,email.send).
    #[arg(long)]
    kind: Option<String>,
    /// Error classes, comma-separated: transient, permanent, exhausted, unparseable,
    /// delivery_limit, broker.
    #[arg(long)]
    error_class: Option<String>,
    /// The customer the job's communication belongs to.
    #[arg(long)]
    customer: Option<String>,
    /// The communication the job carries out.
    #[arg(long)]
    communication: Option<String>,
    /// Created before: an age (90s, 15m, 2h, 7d) or an RFC 3339 time.
    #[arg(long)]
    older_than: Option<String>,
    /// Created after: an age or an RFC 3339 time.
    #[arg(long)]
    newer_than: Option<String>,
}

impl FilterArgs {
    /// `(API name, value)` pairs of the filters given.
    fn params(&self) -> Vec<(String, String)> {
        [
            ("kind", &self.kind),
            ("error_class", &self.error_class),
            ("customer_id", &self.customer),
            ("communication_id", &self.communication),
            ("older_than", &self.older_than),
            ("newer_than", &self.newer_than),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|v| (name.to_owned(), v)))
        .collect()
    }
}

#[derive(Args)]
struct PageArgs {
    /// Jobs per page (1 to 200).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Start after this cursor (the previous page's next_cursor).
    #[arg(long, conflicts_with = "all")]
    cursor: Option<String>,
    /// Follow the cursor to the last page.
    #[arg(long)]
    all: bool,
}

#[derive(Args)]
struct ActArgs {
    /// The job; without it, every dead job matching the filters (a bulk action).
    id: Option<Uuid>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Act on every dead job when no filter is given.
    #[arg(long)]
    all: bool,
    /// Why: kept in the audit with your name.
    #[arg(long)]
    reason: String,
    /// (one job) Wait until the replayed job has run; exit 6 if it dies again.
    #[arg(long)]
    wait: bool,
    /// How long to wait for a job or a bulk action, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

impl ActArgs {
    /// One job, or a filter (or `--all`): never both, never neither.
    fn check(&self, action: &str) -> Result<()> {
        let filtered = !self.filter.params().is_empty() || self.all;
        match (self.id, filtered) {
            (Some(_), true) => Err(Failure::usage(
                "give either a job id or filters (or --all), not both",
            )),
            (None, false) => Err(Failure::usage(format!(
                "say which dead jobs to {action}: a job id, filters, or --all for every dead job"
            ))),
            _ => Ok(()),
        }
    }
}

/// Where the command writes: stdout for results, stderr for errors and progress.
pub struct Io<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    /// Draw the progress bar in place (stderr is a terminal) rather than line by line.
    pub err_is_terminal: bool,
}

/// Runs one command line (`args[0]` is the program name) and says how it ended.
pub async fn run<I, T>(args: I, io: Io<'_>) -> Exit
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let asked = matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            );
            let (stream, exit, rendered) = if asked {
                (&mut *io.out, Exit::Ok, error.render().to_string())
            } else if io.err_is_terminal {
                (&mut *io.err, Exit::Usage, error.render().ansi().to_string())
            } else {
                (&mut *io.err, Exit::Usage, error.render().to_string())
            };
            // Nothing more to say if the stream is gone.
            let _ = write!(stream, "{rendered}");
            return exit;
        }
    };
    let mut ctl = Ctl {
        json: cli.api.json,
        io,
    };
    match ctl.dispatch(cli.api, cli.command).await {
        Ok(exit) => exit,
        Err(failure) => {
            let _ = writeln!(ctl.io.err, "error: {}", failure.message);
            failure.exit
        }
    }
}

struct Ctl<'a> {
    json: bool,
    io: Io<'a>,
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure::usage(format!("cannot write the output: {error}"))
    }
}

/// Job states after which a replayed job will not run again by itself.
const SETTLED: &[&str] = &["succeeded", "dead", "cancelled"];
const POLL: Duration = Duration::from_millis(250);

impl Ctl<'_> {
    async fn dispatch(&mut self, api: ApiArgs, command: Command) -> Result<Exit> {
        match command {
            Command::Migrate => return self.migrate().await,
            Command::Token {
                user,
                role,
                customer,
                ttl_hours,
            } => return self.token(&user, &role, customer.as_deref(), ttl_hours),
            Command::Ringcentral(RingCentralCommand::Subscribe { address }) => {
                return self.subscribe(&address).await;
            }
            Command::Watch { user, prefix } => {
                let prefix = prefix.unwrap_or_else(|| format!("[ws {user}]"));
                return self.watch(&api, &user, &prefix).await;
            }
            _ => {}
        }
        if let Command::Dlq(DlqCommand::Replay(args)) = &command {
            args.check("replay")?;
        }
        if let Command::Dlq(DlqCommand::Discard(args)) = &command {
            args.check("discard")?;
        }
        let client = connect(&api)?;
        match command {
            Command::Jobs(JobsCommand::List {
                state,
                filter,
                page,
            }) => {
                let mut params = filter.params();
                params.extend(state.map(|s| ("state".to_owned(), s)));
                self.list(&client, params, &page).await
            }
            Command::Dlq(DlqCommand::List { filter, page }) => {
                let mut params = filter.params();
                params.push(("state".to_owned(), "dead".to_owned()));
                self.list(&client, params, &page).await
            }
            Command::Jobs(JobsCommand::Show { id }) | Command::Dlq(DlqCommand::Show { id }) => {
                self.show(&client, id).await
            }
            Command::Dlq(DlqCommand::Replay(args)) => self.act(&client, "replay", args).await,
            Command::Dlq(DlqCommand::Discard(args)) => self.act(&client, "discard", args).await,
            Command::Stats => self.stats(&client).await,
            Command::Migrate
            | Command::Token { .. }
            | Command::Ringcentral(_)
            | Command::Watch { .. } => {
                unreachable!("handled above")
            }
        }
    }

    fn print_json(&mut self, value: &Value) -> Result<()> {
        writeln!(self.io.out, "{value}")?;
        Ok(())
    }

    async fn list(
        &mut self,
        client: &Client,
        mut params: Vec<(String, String)>,
        page: &PageArgs,
    ) -> Result<Exit> {
        params.push(("limit".to_owned(), page.limit.to_string()));
        let mut cursor = page.cursor.clone();
        let mut jobs = Vec::new();
        loop {
            let mut query = params.clone();
            query.extend(cursor.take().map(|c| ("cursor".to_owned(), c)));
            let answer = client.get("/api/ops/jobs", &query).await?;
            if self.json {
                self.print_json(&answer)?;
            }
            jobs.extend(answer["jobs"].as_array().cloned().unwrap_or_default());
            let next = answer["next_cursor"].as_str().map(str::to_owned);
            if page.all && next.is_some() {
                cursor = next;
                continue;
            }
            if !self.json {
                self.print_jobs(&jobs, &answer, next.as_deref())?;
            }
            return Ok(Exit::Ok);
        }
    }

    fn print_jobs(&mut self, jobs: &[Value], last: &Value, next: Option<&str>) -> Result<()> {
        let out = &mut *self.io.out;
        let counts = &last["counts"];
        if jobs.is_empty() {
            writeln!(out, "No jobs match.")?;
            return Ok(());
        }
        render::jobs(out, jobs)?;
        writeln!(
            out,
            "\n{} of {} matching jobs (by state: {}; by error class: {})",
            jobs.len(),
            render::cell(&counts["total"]),
            render::counts(&counts["by_state"]),
            render::counts(&counts["by_error_class"]),
        )?;
        if let Some(next) = next {
            writeln!(out, "More: --cursor {next} (or --all)")?;
        }
        Ok(())
    }

    async fn show(&mut self, client: &Client, id: Uuid) -> Result<Exit> {
        let detail = client.get(&format!("/api/ops/jobs/{id}"), &[]).await?;
        if self.json {
            self.print_json(&detail)?;
        } else {
            render::job_detail(self.io.out, &detail)?;
        }
        Ok(Exit::Ok)
    }

    async fn stats(&mut self, client: &Client) -> Result<Exit> {
        let health = client.get("/api/ops/queues", &[]).await?;
        if self.json {
            self.print_json(&health)?;
        } else {
            render::stats(self.io.out, &health)?;
        }
        Ok(Exit::Ok)
    }

    async fn act(&mut self, client: &Client, action: &str, args: ActArgs) -> Result<Exit> {
        match args.id {
            Some(id) => self.act_on_job(client, action, id, &args).await,
            None => {
                self.act_in_bulk(client, action, args.filter.params(), &args)
                    .await
            }
        }
    }

    async fn act_on_job(
        &mut self,
        client: &Client,
        action: &str,
        id: Uuid,
        args: &ActArgs,
    ) -> Result<Exit> {
        let answer = client
            .post(
                &format!("/api/ops/jobs/{id}/{action}"),
                &json!({ "reason": args.reason }),
            )
            .await?;
        if !args.wait {
            if self.json {
                self.print_json(&answer)?;
            } else {
                writeln!(
                    self.io.out,
                    "{}ed job {id} (was {}); it is {} now",
                    action,
                    render::cell(&answer["previous_state"]),
                    render::cell(&answer["job"]["state"]),
                )?;
            }
            return Ok(Exit::Ok);
        }
        let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
        let detail = loop {
            let detail = client.get(&format!("/api/ops/jobs/{id}"), &[]).await?;
            let state = detail["job"]["state"].as_str().unwrap_or_default();
            if SETTLED.contains(&state) {
                break detail;
            }
            if Instant::now() >= deadline {
                writeln!(
                    self.io.err,
                    "error: job {id} is still {state} after {}s; it goes on without us",
                    args.timeout_secs
                )?;
                return Ok(Exit::Unfinished);
            }
            tokio::time::sleep(POLL).await;
        };
        let job = &detail["job"];
        let state = job["state"].as_str().unwrap_or_default();
        if self.json {
            self.print_json(&detail)?;
        } else if state == "dead" {
            writeln!(
                self.io.out,
                "job {id} is dead again: {}",
                render::cell(&job["last_error"])
            )?;
        } else {
            writeln!(self.io.out, "job {id} {state}")?;
        }
        let expected = if action == "replay" {
            "succeeded"
        } else {
            "cancelled"
        };
        Ok(if state == expected {
            Exit::Ok
        } else {
            Exit::Unfinished
        })
    }

    async fn act_in_bulk(
        &mut self,
        client: &Client,
        action: &str,
        params: Vec<(String, String)>,
        args: &ActArgs,
    ) -> Result<Exit> {
        let mut filter: Map<String, Value> = params
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        filter.insert("state".to_owned(), json!("dead"));
        let started = client
            .post(
                &format!("/api/ops/jobs/{action}"),
                &json!({ "filter": filter, "reason": args.reason }),
            )
            .await?;
        let id = started["action"]["id"]
            .as_str()
            .ok_or_else(|| Failure {
                exit: Exit::Unavailable,
                message: format!("the API started a bulk {action} without an id: {started}"),
            })?
            .to_owned();
        writeln!(
            self.io.err,
            "bulk {action} {id}: {} dead jobs matched",
            render::cell(&started["action"]["matched"])
        )?;
        let mut bar = Progress::new(self.io.err_is_terminal);
        let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
        let finished = loop {
            let answer = client.get(&format!("/api/ops/actions/{id}"), &[]).await?;
            bar.update(self.io.err, &answer["action"])?;
            if matches!(answer["action"]["state"].as_str(), Some("done" | "failed")) {
                break answer;
            }
            if Instant::now() >= deadline {
                bar.finish(self.io.err)?;
                writeln!(
                    self.io.err,
                    "error: bulk {action} {id} is still running after {}s; it goes on without us",
                    args.timeout_secs
                )?;
                return Ok(Exit::Unfinished);
            }
            tokio::time::sleep(POLL).await;
        };
        bar.finish(self.io.err)?;
        let action_row = &finished["action"];
        if self.json {
            self.print_json(&finished)?;
        } else {
            writeln!(
                self.io.out,
                "bulk {action} {id} {}: {} {action}ed, {} skipped (no longer dead), {} errors",
                render::cell(&action_row["state"]),
                render::cell(&action_row["done"]),
                render::cell(&action_row["skipped"]),
                render::cell(&action_row["errors"]),
            )?;
            if let Some(error) = action_row["last_error"].as_str() {
                writeln!(self.io.out, "last error: {error}")?;
            }
        }
        let clean = action_row["state"] == "done" && action_row["errors"].as_i64() == Some(0);
        Ok(if clean { Exit::Ok } else { Exit::Unfinished })
    }

    async fn migrate(&mut self) -> Result<Exit> {
        let local = |e: anyhow::Error| Failure::usage(format!("{e:#}"));
        let settings = Settings::from_env().map_err(local)?;
        db::ensure_database(&settings.database)
            .await
            .map_err(local)?;
        let pool = db::connect(&settings.database).await.map_err(local)?;
        db::migrate(&pool).await.map_err(local)?;
        writeln!(self.io.err, "migrations applied")?;
        Ok(Exit::Ok)
    }

    async fn watch(&mut self, api: &ApiArgs, user: &str, prefix: &str) -> Result<Exit> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::{Error as WsError, Message};

        let token = bearer(api)?;
        let base = api.api_url.trim_end_matches('/');
        let Some(address) = base.strip_prefix("http://") else {
            return Err(Failure::usage(format!(
                "watch speaks plain ws:// only; --api-url must start with http://, not {base}"
            )));
        };
        let url = format!("ws://{address}/api/ws/{user}?token={token}");
        let (mut socket, _) = match tokio_tungstenite::connect_async(&url).await {
            Ok(connected) => connected,
            Err(WsError::Http(response)) => {
                let status = response.status();
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                return Err(Failure {
                    exit: match status.as_u16() {
                        401 | 403 => Exit::Unauthorized,
                        404 => Exit::NotFound,
                        500.. => Exit::Unavailable,
                        _ => Exit::Usage,
                    },
                    message: format!("the api refused the WebSocket ({status}): {body}"),
                });
            }
            Err(error) => {
                return Err(Failure {
                    exit: Exit::Unavailable,
                    message: format!("cannot open ws://{address}/api/ws/{user}: {error}"),
                });
            }
        };
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Text(text)) => {
                    writeln!(self.io.out, "{prefix} {}", text.as_str())?;
                    self.io.out.flush()?;
                }
                Ok(Message::Close(close)) => {
                    let (code, reason) = close
                        .map(|c| (u16::from(c.code), c.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    writeln!(self.io.err, "{prefix} closed by the api: {code} {reason}")?;
                    return Ok(if code == 1000 || code == 1001 {
                        Exit::Ok
                    } else {
                        Exit::Unavailable
                    });
                }
                // Pings are answered by the library; nothing else is sent to clients.
                Ok(_) => {}
                Err(error) => {
                    return Err(Failure {
                        exit: Exit::Unavailable,
                        message: format!("the WebSocket failed: {error}"),
                    });
                }
            }
        }
        Ok(Exit::Ok)
    }

    async fn subscribe(&mut self, address: &str) -> Result<Exit> {
        let settings = Settings::from_env().map_err(|e| Failure::usage(format!("{e:#}")))?;
        let ringcentral = &settings.ringcentral;
        if !ringcentral.configured() {
            return Err(Failure::usage(
                "RingCentral is not configured: set RINGCENTRAL_CLIENT_ID, \
                 RINGCENTRAL_CLIENT_SECRET and RINGCENTRAL_JWT",
            ));
        }
        if ringcentral.webhook_token.expose().is_empty() {
            return Err(Failure::usage(
                "RINGCENTRAL_WEBHOOK_TOKEN is empty: the webhook would refuse every notification",
            ));
        }
        let client = RingCentral::new(ringcentral).map_err(|e| Failure::usage(format!("{e:#}")))?;
        let subscription = client
            .subscribe(address, ringcentral.webhook_token.expose())
            .await
            .map_err(|error| Failure {
                exit: match error.failure {
                    ProviderFailure::Permanent => Exit::Refused,
                    _ => Exit::Unavailable,
                },
                message: error.to_string(),
            })?;
        if self.json {
            self.print_json(&subscription)?;
        } else {
            writeln!(
                self.io.out,
                "subscribed {address}: id {}, {}, expires {}",
                subscription["id"].as_str().unwrap_or("?"),
                subscription["status"].as_str().unwrap_or("?"),
                subscription["expirationTime"].as_str().unwrap_or("?"),
            )?;
        }
        Ok(Exit::Ok)
    }

    fn token(
        &mut self,
        user: &str,
        role: &str,
        customer: Option<&str>,
        ttl_hours: i64,
    ) -> Result<Exit> {
        let invalid = |e: &dyn std::fmt::Display| Failure::usage(e.to_string());
        let role = Role::parse(role).map_err(|e| invalid(&e))?;
        let customer_id = customer
            .map(CustomerId::parse)
            .transpose()
            .map_err(|e| invalid(&e))?;
        if role == Role::Customer && customer_id.is_none() {
            return Err(Failure::usage("a customer token needs --customer"));
        }
        if ttl_hours <= 0 {
            return Err(Failure::usage("--ttl-hours must be positive"));
        }
        let sub = UserId::parse(user).map_err(|e| invalid(&e))?;
        let secret = jwt_secret()?;
        let claims = Claims {
            sub,
            role,
            customer_id,
            exp: chrono::Utc::now().timestamp() + ttl_hours * 3600,
        };
        writeln!(self.io.out, "{}", auth::issue(&claims, &secret))?;
        Ok(Exit::Ok)
    }
}

fn jwt_secret() -> Result<String> {
    let settings = Settings::from_env().map_err(|e| Failure::usage(format!("settings: {e:#}")))?;
    Ok(settings.auth.jwt_secret.expose().to_owned())
}

/// The client with the operator's token: given, or minted for `--as-operator`.
fn connect(api: &ApiArgs) -> Result<Client> {
    Client::new(&api.api_url, bearer(api)?)
}

/// The token the command line gives: minted with --as-operator, or --token.
fn bearer(api: &ApiArgs) -> Result<String> {
    Ok(match (&api.as_operator, &api.token) {
        (Some(name), _) => operator_token(name, &jwt_secret()?)?,
        (None, Some(token)) if !token.trim().is_empty() => token.trim().to_owned(),
        (None, _) => {
            return Err(Failure {
                exit: Exit::Unauthorized,
                message: "no token: set COMMCENTER_TOKEN (or --token), or mint one with \
                          --as-operator NAME where JWT_SECRET is known"
                    .to_owned(),
            });
        }
    })
}

/// A one-hour operator token for `name`.
fn operator_token(name: &str, secret: &str) -> Result<String> {
    let sub = UserId::parse(name).map_err(|e| Failure::usage(format!("--as-operator: {e}")))?;
    let claims = Claims {
        sub,
        role: Role::Operator,
        customer_id: None,
        exp: chrono::Utc::now().timestamp() + 3600,
    };
    Ok(auth::issue(&claims, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_operator_token_verifies_with_the_same_secret() {
        let token = operator_token("ops-1", "s3cret").unwrap();
        let now = chrono::Utc::now().timestamp();
        let claims = auth::verify(&token, "s3cret", now).unwrap();
        assert_eq!(claims.role, Role::Operator);
        assert_eq!(claims.sub.as_str(), "ops-1");
        assert!(auth::verify(&token, "other", now).is_err());
        assert_eq!(operator_token("", "s3cret").unwrap_err().exit, Exit::Usage);
    }

    #[test]
    fn filters_use_the_apis_names() {
        let filter = FilterArgs {
            customer: Some("cust-1".into()),
            error_class: Some("permanent".into()),
            ..Default::default()
        };
        assert_eq!(
            filter.params(),
            vec![
                ("error_class".to_owned(), "permanent".to_owned()),
                ("customer_id".to_owned(), "cust-1".to_owned()),
            ]
        );
    }

    #[test]
    fn the_exit_codes_in_the_help_are_the_ones_returned() {
        for (exit, code) in [
            (Exit::Ok, 0),
            (Exit::Usage, 1),
            (Exit::NotFound, 2),
            (Exit::Refused, 3),
            (Exit::Unauthorized, 4),
            (Exit::Unavailable, 5),
            (Exit::Unfinished, 6),
        ] {
            assert_eq!(exit.code(), code);
            assert!(EXIT_CODES.contains(&format!("\n  {code}  ")), "{code}");
        }
    }
}
