//! One typed settings tree, read from environment variables with documented defaults
//! that work on a development machine (PostgreSQL and RabbitMQ on loopback).
//! `.env.example` lists every variable. An invalid value is an error naming the variable.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use anyhow::{Context, bail};

/// A value that must never be printed: `Debug` and `Display` show a placeholder.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub jobs: JobSettings,
    pub relay: RelaySettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: the PostgreSQL database; created at start-up if missing.
    pub url: Secret,
    /// `DATABASE_MAX_CONNECTIONS`: the pool's bound. A worker holds one connection per
    /// job in flight, so a worker process runs at most this many, less one, at once.
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `AMQP_URL`: the RabbitMQ connection.
    pub url: Secret,
    /// `QUEUE_PREFIX`: prefix of every exchange and queue name, so several deployments
    /// (or tests) share one broker without meeting.
    pub prefix: String,
    /// `RECONNECT_MAX_SECS`: the longest wait between reconnection attempts.
    pub reconnect_max: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `API_ADDR`: where the api listens (the portal's existing backend port).
    pub addr: SocketAddr,
    /// `MAX_BODY_BYTES`: the largest JSON request body accepted.
    pub max_body_bytes: usize,
    /// `WS_BUFFER`: events buffered per WebSocket connection; a client that lets the
    /// buffer fill is disconnected rather than slowing the others.
    pub ws_buffer: usize,
    /// `WS_PING_SECS`: heartbeat interval; a connection silent for two is closed.
    pub ws_ping: Duration,
    /// `SHUTDOWN_GRACE_SECS`: how long a stopping process waits for in-flight work.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `JWT_SECRET`: the HS256 key of bearer tokens. The default is for development only.
    pub jwt_secret: Secret,
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    /// `WORKER_PREFETCH`: unacknowledged deliveries per work queue: at most this many
    /// jobs of one kind run at once in one worker process (and never more, in all,
    /// than `DATABASE_MAX_CONNECTIONS` less one).
    pub prefetch: u16,
    /// `WORKER_KINDS`: comma-separated job kinds this worker consumes; empty means all,
    /// so roles can scale apart.
    pub kinds: Vec<String>,
    /// `JOB_MAX_ATTEMPTS`: attempts before a transiently failing job is dead.
    pub max_attempts: i32,
    /// `JOB_TIMEOUT_SECS`: a handler running longer is cut off and retried, well
    /// below RabbitMQ's consumer timeout (30 minutes by default), which would close the channel.
    pub timeout: Duration,
    /// `RETRY_TIERS`: the delay queues, e.g. `1s,5s,30s,2m,10m,1h`. Each is a queue
    /// with that TTL; a retry waits in the shortest tier not shorter than its backoff.
    pub retry_tiers: Vec<Duration>,
    /// `RETRY_BASE_MS`: the first retry's backoff before jitter; each next one doubles.
    pub retry_base: Duration,
    /// `DELIVERY_LIMIT`: how often the broker redelivers a job whose worker died
    /// holding it before it dead-letters it (poison containment).
    pub delivery_limit: u32,
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// `OUTBOX_BATCH`: rows published per confirm round trip.
    pub batch: i64,
    /// `OUTBOX_POLL_MS`: the relay polls this often besides waking on NOTIFY.
    pub poll: Duration,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub json: bool,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            database: DatabaseSettings {
                url: Secret::new(var(
                    "DATABASE_URL",
                    "postgres://root@127.0.0.1:5432/commcenter",
                )),
                max_connections: parse("DATABASE_MAX_CONNECTIONS", "40")?,
            },
            broker: BrokerSettings {
                url: Secret::new(var("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")),
                prefix: queue_prefix(&var("QUEUE_PREFIX", "commcenter"))?,
                reconnect_max: Duration::from_secs(parse("RECONNECT_MAX_SECS", "30")?),
            },
            http: HttpSettings {
                addr: parse("API_ADDR", "127.0.0.1:8001")?,
                max_body_bytes: parse("MAX_BODY_BYTES", "65536")?,
                ws_buffer: positive(parse("WS_BUFFER", "256")?, "WS_BUFFER")?,
                ws_ping: Duration::from_secs(positive(
                    parse("WS_PING_SECS", "30")?,
                    "WS_PING_SECS",
                )?),
                shutdown_grace: Duration::from_secs(parse("SHUTDOWN_GRACE_SECS", "30")?),
            },
            auth: AuthSettings {
                jwt_secret: Secret::new(var("JWT_SECRET", "dev-only-secret-change-me")),
            },
            jobs: JobSettings {
                prefetch: positive(parse("WORKER_PREFETCH", "64")?, "WORKER_PREFETCH")?,
                kinds: var("WORKER_KINDS", "")
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect(),
                max_attempts: positive(parse("JOB_MAX_ATTEMPTS", "8")?, "JOB_MAX_ATTEMPTS")?,
                timeout: Duration::from_secs(positive(
                    parse("JOB_TIMEOUT_SECS", "60")?,
                    "JOB_TIMEOUT_SECS",
                )?),
                retry_tiers: parse_tiers(&var("RETRY_TIERS", "1s,5s,30s,2m,10m,1h"))
                    .context("RETRY_TIERS")?,
                retry_base: Duration::from_millis(parse("RETRY_BASE_MS", "1000")?),
                delivery_limit: positive(parse("DELIVERY_LIMIT", "5")?, "DELIVERY_LIMIT")?,
            },
            relay: RelaySettings {
                batch: positive(parse("OUTBOX_BATCH", "500")?, "OUTBOX_BATCH")?,
                poll: Duration::from_millis(positive(
                    parse("OUTBOX_POLL_MS", "1000")?,
                    "OUTBOX_POLL_MS",
                )?),
            },
            telemetry: TelemetrySettings {
                json: match var("LOG_FORMAT", "text").as_str() {
                    "text" => false,
                    "json" => true,
                    other => bail!("LOG_FORMAT must be text or json, not {other:?}"),
                },
            },
        })
    }
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn parse<T: FromStr>(name: &str, default: &str) -> anyhow::Result<T>
where
    T::Err: fmt::Display,
{
    let raw = var(name, default);
    raw.parse()
        .map_err(|e| anyhow::anyhow!("{name}={raw:?} is invalid: {e}"))
}

fn positive<T: PartialOrd + Default>(value: T, name: &str) -> anyhow::Result<T> {
    if value <= T::default() {
        bail!("{name} must be greater than zero");
    }
    Ok(value)
}

/// Queue and exchange names are built from the prefix, so keep it to safe characters.
pub fn queue_prefix(raw: &str) -> anyhow::Result<String> {
    if raw.is_empty()
        || raw.len() > 100
        || !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        bail!("QUEUE_PREFIX must be 1 to 100 characters of letters, digits, _ - .");
    }
    Ok(raw.to_owned())
}

/// Parses `1s,5s,30s,2m,10m,1h` (also `250ms`) into ascending, distinct durations.
pub fn parse_tiers(raw: &str) -> anyhow::Result<Vec<Duration>> {
    let mut tiers = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_duration)
        .collect::<anyhow::Result<Vec<_>>>()?;
    tiers.sort();
    tiers.dedup();
    if tiers.is_empty() {
        bail!("at least one delay tier is needed");
    }
    Ok(tiers)
}

pub fn parse_duration(raw: &str) -> anyhow::Result<Duration> {
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("{raw:?} has no unit (ms, s, m, h)"))?;
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .with_context(|| format!("{raw:?} does not start with a number"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => bail!("{raw:?} has unknown unit {other:?} (ms, s, m, h)"),
    };
    if duration.is_zero() {
        bail!("{raw:?} is zero");
    }
    Ok(duration)
}

/// A tier's name in queue names: `250ms`, `5s`, `2m`, `1h`.
pub fn tier_label(tier: Duration) -> String {
    let ms = tier.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_sort_and_label() {
        let tiers = parse_tiers("5s, 1s,2m,250ms,1h").unwrap();
        let labels: Vec<_> = tiers.iter().map(|t| tier_label(*t)).collect();
        assert_eq!(labels, ["250ms", "1s", "5s", "2m", "1h"]);
        assert!(parse_tiers("").is_err());
        assert!(parse_tiers("5").is_err());
        assert!(parse_tiers("0s").is_err());
        assert!(parse_tiers("5d").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn prefix_is_checked() {
        assert!(queue_prefix("commcenter").is_ok());
        assert!(queue_prefix("a b").is_err());
        assert!(queue_prefix("").is_err());
    }
}
