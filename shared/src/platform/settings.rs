//! One typed settings tree, read from environment variables with documented defaults
//! that work on a development machine (PostgreSQL and RabbitMQ on loopback).
//! `.env.example` lists every variable. An invalid value is an error naming the variable.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use anyhow::{Context, bail};

// The providers' settings are theirs; they are read from the environment here, with
// every other setting.
pub use commcenter_providers::settings::{GmailSettings, RingCentralSettings, Secret};

use crate::domain::PhoneRegion;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub jobs: JobSettings,
    pub relay: RelaySettings,
    pub telemetry: TelemetrySettings,
    pub metrics: MetricsSettings,
    pub storage: StorageSettings,
    pub ringcentral: RingCentralSettings,
    pub gmail: GmailSettings,
    pub contacts: ContactSettings,
    pub crews: CrewSettings,
    pub reach: ReachSettings,
    pub push: PushSettings,
}

/// Web Push: the key every instance signs with, and where subscriptions may point.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// `VAPID_PRIVATE_KEY`: the P-256 private key (base64url, 32 bytes). Unset, one is
    /// made once and kept in the database, so every instance signs with the same.
    pub vapid_private_key: Option<Secret>,
    /// `VAPID_SUBJECT` (default `mailto:webpush@localhost`): who push services contact
    /// about our pushes, a `mailto:` or `https:` URL.
    pub vapid_subject: String,
    /// `PUSH_ENDPOINT_ALLOW`: the origins a subscription's endpoint may have; the server
    /// POSTs to that URL, so nothing else is accepted (no SSRF).
    pub endpoint_allow: Vec<AllowedOrigin>,
}

/// The browsers' push services: Chrome and Edge's FCM, Firefox's autopush, Apple's,
/// and Windows' WNS hosts.
pub const DEFAULT_PUSH_ENDPOINT_ALLOW: &str = "https://fcm.googleapis.com,\
     https://updates.push.services.mozilla.com,https://web.push.apple.com,\
     https://*.push.apple.com,https://*.notify.windows.com";

/// One entry of `PUSH_ENDPOINT_ALLOW`: `https://host[:port]`, `https://*.domain` (any
/// host under it), or `http://` on `localhost` or `127.x.x.x` (tests, the fakes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigin {
    pub scheme: String,
    /// Lower case, without a leading `*.`.
    pub host: String,
    /// `*.host`: any host under `host`, not `host` itself.
    pub subdomains: bool,
    /// The port; `None` for the scheme's default.
    pub port: Option<u16>,
}

impl AllowedOrigin {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = raw
            .split_once("://")
            .with_context(|| format!("{raw:?} is not an origin (scheme://host[:port])"))?;
        let scheme = scheme.to_ascii_lowercase();
        if rest.contains(['/', '?', '#', '@', '[']) {
            bail!("{raw:?}: an origin has no path, query, user or IPv6 literal");
        }
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (
                host,
                Some(
                    port.parse::<u16>()
                        .with_context(|| format!("{raw:?}: the port is not a number"))?,
                ),
            ),
            None => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        let (host, subdomains) = match host.strip_prefix("*.") {
            Some(domain) => (domain.to_owned(), true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') {
            bail!("{raw:?}: a host, or *. and a domain");
        }
        let loopback = host == "localhost" || host.starts_with("127.");
        match scheme.as_str() {
            "https" => {}
            "http" if loopback && !subdomains => {}
            _ => bail!("{raw:?}: push endpoints are https (http only on a loopback address)"),
        }
        Ok(Self {
            scheme,
            host,
            subdomains,
            port,
        })
    }
}

/// Reading the phone numbers and addresses people write.
#[derive(Debug, Clone)]
pub struct ContactSettings {
    /// `DEFAULT_PHONE_REGION`: the country (ISO 3166 alpha-2, default `US`) a number
    /// written without `+` and a country code is read in.
    pub default_phone_region: PhoneRegion,
}

/// Reaching customers who are not in the portal.
#[derive(Debug, Clone)]
pub struct ReachSettings {
    /// `FALLBACK_AFTER_SECS` (default 300): how long an in-app message may stay unread
    /// before it goes on by the customer's fallback channel (they may set their own).
    pub fallback_after: Duration,
    /// `PORTAL_URL` (default none): the portal's address, linked from fallbacks.
    pub portal_url: Option<String>,
}

/// Field crews: dispatch reminders, arrival, the positions kept.
#[derive(Debug, Clone)]
pub struct CrewSettings {
    /// `DISPATCH_ACK_SECS` (default 120): a member connected when dispatched who has not
    /// acknowledged within this long is sent an SMS.
    pub dispatch_ack: Duration,
    /// `ARRIVAL_RADIUS_M` (default 150): a dispatched crew reported within this many
    /// metres of the site has arrived.
    pub arrival_radius_m: f64,
    /// `LOCATION_RETENTION_HOURS` (default 72): crews' reported positions are pruned
    /// this long after they came in (the latest of each crew is always kept).
    pub location_retention: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: the PostgreSQL database; created at start-up if missing.
    pub url: Secret,
    /// `DATABASE_MAX_CONNECTIONS`: the pool's bound. A worker holds one connection per
    /// job in flight, so a worker process runs at most this many, less one, at once.
    pub max_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS` (default 1500): the longest wait for a pooled
    /// connection while all are busy; past it the api answers 503 `busy`. (An outage
    /// is told at once, without waiting for it: the api's `health` module.)
    pub acquire_timeout: Duration,
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
    /// `WS_MAX_PER_USER`: open WebSockets one user may have, across every api instance;
    /// the next is refused (429).
    pub ws_max_per_user: i64,
    /// `WS_MAX_MESSAGE_BYTES`: the largest client message; a larger one closes the
    /// connection with 1009 (nothing bigger is ever buffered).
    pub ws_max_message_bytes: usize,
    /// `PRESENCE_HEARTBEAT_SECS`: how often an api instance says it is alive (and sweeps
    /// away instances that stopped saying so).
    pub presence_heartbeat: Duration,
    /// `PRESENCE_TTL_SECS`: an instance silent this long is dead: its users go offline
    /// everywhere (within this and one heartbeat).
    pub presence_ttl: Duration,
    /// `SHUTDOWN_GRACE_SECS`: how long a stopping process waits for in-flight work.
    pub shutdown_grace: Duration,
    /// `RATE_LIMIT_*`: token buckets per user and route group, and per address for
    /// requests without a valid token.
    pub rate_limits: RateLimits,
    /// `HTTP_MAX_CONNECTIONS` (default 10,000): open HTTP connections per listener
    /// (the api's, the workers' metrics); beyond, 503 and closed at once.
    pub max_connections: usize,
    /// `HTTP_HEADER_TIMEOUT_SECS` (default 10): a request's headers must arrive within
    /// it; an idle keep-alive connection is closed after it.
    pub header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_SECS` (default 30): a request body must arrive within it, in
    /// all; uploads have `UPLOAD_BODY_TIMEOUT_SECS` (default 600).
    pub body_timeout: Duration,
    pub upload_body_timeout: Duration,
    /// `HTTP_MAX_HEADER_BYTES` (default 16384): a request's headers, names and values,
    /// at most this long; beyond, `431 headers_too_large`. (hyper itself answers an
    /// empty 431 only beyond about 400 KiB, or past 100 headers.)
    pub max_header_bytes: usize,
    /// `HTTP_LISTEN_BACKLOG` (default: the kernel's `net.core.somaxconn`, else 1024):
    /// connections the kernel holds for the api before it accepts them. (The standard
    /// library's 128 made a burst of 1,000 connects wait seconds for SYN retries.)
    pub listen_backlog: u32,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `JWT_SECRET`: the HS256 key of bearer tokens. The default is for development only:
    /// the api refuses to start with it, or with a key shorter than
    /// [`MIN_JWT_SECRET_BYTES`], unless `ALLOW_WEAK_JWT_SECRET` is true.
    pub jwt_secret: Secret,
    /// `ALLOW_WEAK_JWT_SECRET` (default false): a development machine's permission to
    /// sign tokens with a guessable key.
    pub allow_weak_secret: bool,
    /// `JWT_MAX_LIFETIME` (default `30d`; `s`, `m`, `h`, `d`, or `none`) and
    /// `JWT_LEEWAY_SECS` (default 60): tokens valid for longer are refused, and `nbf`
    /// or `iat` more than the leeway ahead of our clock.
    pub token_times: crate::platform::auth::TimeRules,
}

/// The example `JWT_SECRET` of `.env.example` and the default: anyone can sign tokens with it.
pub const EXAMPLE_JWT_SECRET: &str = "dev-only-secret-change-me";
/// HS256 keys shorter than this can be guessed offline from one token (RFC 7518 §3.2
/// asks for a key at least as long as the hash: 32 bytes).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

impl AuthSettings {
    /// Refuses the example key or a short one, unless `ALLOW_WEAK_JWT_SECRET` says this
    /// is a development machine. The api calls it before it serves.
    pub fn refuse_weak_secret(&self) -> anyhow::Result<()> {
        if self.allow_weak_secret {
            return Ok(());
        }
        let secret = self.jwt_secret.expose();
        let problem = if secret == EXAMPLE_JWT_SECRET {
            "is the example key, which anyone can sign tokens with".to_owned()
        } else if secret.len() < MIN_JWT_SECRET_BYTES {
            format!(
                "is {} bytes; a key must have at least {MIN_JWT_SECRET_BYTES}",
                secret.len()
            )
        } else {
            return Ok(());
        };
        bail!(
            "JWT_SECRET {problem}. Set a random one (e.g. `openssl rand -hex 32`), \
             or ALLOW_WEAK_JWT_SECRET=true on a development machine"
        )
    }
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    /// `WORKER_PREFETCH`: unacknowledged deliveries per work queue: at most this many
    /// jobs of one kind run at once in one worker process. Jobs working inside their
    /// transaction are also bounded, in all, by `DATABASE_MAX_CONNECTIONS` less one;
    /// provider sends wait on the provider holding no connection, so this is theirs.
    pub prefetch: u16,
    /// `WORKER_BATCH_SIZE` (default 64): deliveries of a batching kind that are ready
    /// together run in one transaction, at most this many (1: one job a transaction).
    pub batch_size: usize,
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
    /// `JOB_RETENTION_HOURS`: succeeded and discarded jobs, with their attempts, are
    /// pruned this long after they finished; dead ones stay until an operator acts.
    pub retention: Duration,
    /// `IDEMPOTENCY_RETENTION_HOURS`: how long an `Idempotency-Key` is remembered.
    pub idempotency_retention: Duration,
    /// `EVENT_RETENTION_HOURS`: how long events are kept for WebSocket clients to
    /// recover (`?since=`); a position older than that answers `recovered: false`.
    pub event_retention: Duration,
    /// `RESCUE_AFTER_SECS` (default 900): a job `queued` this long, or `retrying` this
    /// long past its due time, lost its broker message: the rescuer publishes it again.
    /// Longer than the longest wait a healthy backlog makes (a copy that was only slow
    /// runs nothing, but is delivered for nothing).
    pub rescue_after: Duration,
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// `OUTBOX_BATCH`: rows published per confirm round trip.
    pub batch: i64,
    /// `OUTBOX_POLL_MS`: the relay polls this often besides waking when its own
    /// process commits; polling is how another process's leftovers are found.
    pub poll: Duration,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub json: bool,
}

#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// `METRICS_ADDR`: where the workers serve `/metrics` (default `127.0.0.1:9464`;
    /// `0` or empty serves none). The api serves it on `API_ADDR`.
    pub addr: Option<SocketAddr>,
    /// `METRICS_TOKEN`: when set, `/metrics` (api and workers) answers only requests
    /// with `Authorization: Bearer <token>`; unset, anyone who reaches it may scrape.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `UPLOAD_DIR`: root of the disk blob store (uploads and thumbnails), used when
    /// `USE_S3` is false. Created at start-up if missing.
    pub upload_dir: PathBuf,
    /// `USE_S3`: `true` stores blobs in S3 (or an S3-compatible store) instead of
    /// `UPLOAD_DIR`; then the `S3_*` and `AWS_*` variables below are read and checked.
    pub s3: Option<S3Settings>,
    /// `MAX_FILE_SIZE`: the largest upload accepted, per file, in bytes (50 MiB by
    /// default), enforced while the body streams in: one byte more and the partial
    /// object is removed.
    pub max_file_size: u64,
    /// `THUMBNAIL_MAX_SIDE`: the longest side, in pixels, of the thumbnails made of images.
    pub thumbnail_max_side: u32,
    /// `MEDIA_MEMORY_BUDGET` (MiB, default 256): the memory a worker's image decodes
    /// may take together; an image that alone needs more fails with the reason.
    pub media_memory_budget_mib: u32,
}

/// RingCentral's settings from the environment.
fn ringcentral_from_env() -> anyhow::Result<RingCentralSettings> {
    let every: u64 = parse("CALL_LOG_IMPORT_SECS", "300")?;
    Ok(RingCentralSettings {
        server_url: base_url("RINGCENTRAL_SERVER_URL", "https://platform.ringcentral.com")?,
        client_id: var("RINGCENTRAL_CLIENT_ID", ""),
        client_secret: Secret::new(var("RINGCENTRAL_CLIENT_SECRET", "")),
        jwt: Secret::new(var("RINGCENTRAL_JWT", "")),
        from_number: var("RINGCENTRAL_FROM_NUMBER", ""),
        webhook_token: Secret::new(var("RINGCENTRAL_WEBHOOK_TOKEN", "")),
        timeout: Duration::from_millis(positive(
            parse("RINGCENTRAL_TIMEOUT_MS", "30000")?,
            "RINGCENTRAL_TIMEOUT_MS",
        )?),
        call_log_import_every: (every > 0).then(|| Duration::from_secs(every)),
    })
}

/// Gmail's settings from the environment.
fn gmail_from_env() -> anyhow::Result<GmailSettings> {
    Ok(GmailSettings {
        client_id: var("GOOGLE_CLIENT_ID", ""),
        client_secret: Secret::new(var("GOOGLE_CLIENT_SECRET", "")),
        token_url: base_url("GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token")?,
        api_url: base_url("GMAIL_API_URL", "https://gmail.googleapis.com")?,
        refresh_token: Secret::new(var("GMAIL_REFRESH_TOKEN", "")),
        sender: var("GMAIL_SENDER", ""),
        timeout: Duration::from_millis(positive(
            parse("GMAIL_TIMEOUT_MS", "30000")?,
            "GMAIL_TIMEOUT_MS",
        )?),
        poll_every: Some(Duration::from_secs(parse("GMAIL_POLL_SECS", "30")?))
            .filter(|every| !every.is_zero()),
    })
}

/// An `http://` or `https://` URL, without a trailing slash.
fn base_url(name: &str, default: &str) -> anyhow::Result<String> {
    let raw = var(name, default);
    let url = raw.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("{name} must start with http:// or https://, not {raw:?}");
    }
    Ok(url.to_owned())
}

#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `S3_BUCKET`: the bucket holding every blob (default `commcenter`); must exist.
    pub bucket: String,
    /// `S3_REGION`: the bucket's region (requests are signed for it).
    pub region: String,
    /// `AWS_ACCESS_KEY_ID`: the static credentials' key id (no instance-role or profile
    /// lookup: no SDK credential chain, to keep the build small).
    pub access_key_id: Secret,
    /// `AWS_SECRET_ACCESS_KEY`: the static credentials' secret.
    pub secret_access_key: Secret,
    /// `S3_ENDPOINT`: endpoint override (`http://` or `https://`) for S3-compatible
    /// stores such as MinIO or moto; empty means AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    /// `S3_FORCE_PATH_STYLE`: address the bucket as `endpoint/bucket/key` rather than
    /// `bucket.endpoint/key`; most S3-compatible stores need it.
    pub force_path_style: bool,
    /// `S3_PART_SIZE`: bytes per multipart-upload part (at least 5 MiB, S3's minimum;
    /// 8 MiB by default). An object no larger goes up in one PutObject. It is also what
    /// one upload buffers in memory, at most.
    pub part_size: u64,
    /// `S3_CONNECT_TIMEOUT_MS`: giving up on a TCP/TLS connect, so a store that is down
    /// fails fast (and the job runtime retries later) instead of hanging a worker.
    pub connect_timeout: Duration,
    /// `S3_OPERATION_TIMEOUT_SECS`: the longest one S3 call may take, retries included
    /// (for a download: until the response starts; the body then streams).
    pub operation_timeout: Duration,
    /// `S3_MAX_ATTEMPTS`: tries per S3 call on transient errors; the job
    /// runtime's own retries come on top, so keep this small.
    pub max_attempts: u32,
}

impl StorageSettings {
    fn from_env() -> anyhow::Result<Self> {
        let s3 = if flag("USE_S3", false)? {
            Some(S3Settings {
                bucket: bucket_name(&var("S3_BUCKET", "commcenter"))?,
                region: required("S3_REGION", "us-east-1")?,
                access_key_id: Secret::new(required("AWS_ACCESS_KEY_ID", "")?),
                secret_access_key: Secret::new(required("AWS_SECRET_ACCESS_KEY", "")?),
                endpoint: match var("S3_ENDPOINT", "").trim() {
                    "" => None,
                    url if url.starts_with("http://") || url.starts_with("https://") => {
                        Some(url.trim_end_matches('/').to_owned())
                    }
                    other => {
                        bail!("S3_ENDPOINT must start with http:// or https://, not {other:?}")
                    }
                },
                force_path_style: flag("S3_FORCE_PATH_STYLE", false)?,
                part_size: {
                    let size: u64 = parse("S3_PART_SIZE", "8388608")?;
                    if !(5 << 20..=5 << 30).contains(&size) {
                        bail!("S3_PART_SIZE must be between 5 MiB (5242880) and 5 GiB, not {size}");
                    }
                    size
                },
                connect_timeout: Duration::from_millis(positive(
                    parse("S3_CONNECT_TIMEOUT_MS", "3000")?,
                    "S3_CONNECT_TIMEOUT_MS",
                )?),
                operation_timeout: Duration::from_secs(positive(
                    parse("S3_OPERATION_TIMEOUT_SECS", "60")?,
                    "S3_OPERATION_TIMEOUT_SECS",
                )?),
                max_attempts: positive(parse("S3_MAX_ATTEMPTS", "3")?, "S3_MAX_ATTEMPTS")?,
            })
        } else {
            None
        };
        let thumbnail_max_side = parse("THUMBNAIL_MAX_SIDE", "256")?;
        if !(1..=4096).contains(&thumbnail_max_side) {
            bail!("THUMBNAIL_MAX_SIDE must be between 1 and 4096, not {thumbnail_max_side}");
        }
        Ok(Self {
            upload_dir: PathBuf::from(required("UPLOAD_DIR", "./var/uploads")?),
            s3,
            max_file_size: positive(parse("MAX_FILE_SIZE", "52428800")?, "MAX_FILE_SIZE")?,
            thumbnail_max_side,
            media_memory_budget_mib: positive(
                parse("MEDIA_MEMORY_BUDGET", "256")?,
                "MEDIA_MEMORY_BUDGET",
            )?,
        })
    }
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
                acquire_timeout: Duration::from_millis(positive(
                    parse("DATABASE_ACQUIRE_TIMEOUT_MS", "1500")?,
                    "DATABASE_ACQUIRE_TIMEOUT_MS",
                )?),
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
                ws_max_per_user: positive(parse("WS_MAX_PER_USER", "10")?, "WS_MAX_PER_USER")?,
                ws_max_message_bytes: positive(
                    parse("WS_MAX_MESSAGE_BYTES", "65536")?,
                    "WS_MAX_MESSAGE_BYTES",
                )?,
                max_connections: positive(
                    parse("HTTP_MAX_CONNECTIONS", "10000")?,
                    "HTTP_MAX_CONNECTIONS",
                )?,
                max_header_bytes: positive(
                    parse("HTTP_MAX_HEADER_BYTES", "16384")?,
                    "HTTP_MAX_HEADER_BYTES",
                )?,
                listen_backlog: positive(
                    parse("HTTP_LISTEN_BACKLOG", &default_listen_backlog().to_string())?,
                    "HTTP_LISTEN_BACKLOG",
                )?,
                header_timeout: Duration::from_secs(positive(
                    parse("HTTP_HEADER_TIMEOUT_SECS", "10")?,
                    "HTTP_HEADER_TIMEOUT_SECS",
                )?),
                body_timeout: Duration::from_secs(positive(
                    parse("HTTP_BODY_TIMEOUT_SECS", "30")?,
                    "HTTP_BODY_TIMEOUT_SECS",
                )?),
                upload_body_timeout: Duration::from_secs(positive(
                    parse("UPLOAD_BODY_TIMEOUT_SECS", "600")?,
                    "UPLOAD_BODY_TIMEOUT_SECS",
                )?),
                rate_limits: RateLimits {
                    sends: rate("RATE_LIMIT_SENDS", "120/m")?,
                    uploads: rate("RATE_LIMIT_UPLOADS", "60/m")?,
                    receipts: rate("RATE_LIMIT_RECEIPTS", "600/m")?,
                    search: rate("RATE_LIMIT_SEARCH", "60/m")?,
                    anonymous: rate("RATE_LIMIT_ANONYMOUS", "120/m")?,
                },
                presence_heartbeat: Duration::from_secs(positive(
                    parse("PRESENCE_HEARTBEAT_SECS", "10")?,
                    "PRESENCE_HEARTBEAT_SECS",
                )?),
                presence_ttl: Duration::from_secs(positive(
                    parse("PRESENCE_TTL_SECS", "30")?,
                    "PRESENCE_TTL_SECS",
                )?),
                shutdown_grace: Duration::from_secs(parse("SHUTDOWN_GRACE_SECS", "30")?),
            },
            auth: AuthSettings {
                jwt_secret: Secret::new(var("JWT_SECRET", EXAMPLE_JWT_SECRET)),
                allow_weak_secret: flag("ALLOW_WEAK_JWT_SECRET", false)?,
                token_times: crate::platform::auth::TimeRules {
                    leeway_secs: parse("JWT_LEEWAY_SECS", "60")?,
                    max_lifetime_secs: lifetime(&var("JWT_MAX_LIFETIME", "30d"))
                        .context("JWT_MAX_LIFETIME")?,
                },
            },
            jobs: JobSettings {
                prefetch: positive(parse("WORKER_PREFETCH", "256")?, "WORKER_PREFETCH")?,
                batch_size: positive(parse("WORKER_BATCH_SIZE", "64")?, "WORKER_BATCH_SIZE")?,
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
                retention: hours("JOB_RETENTION_HOURS", "168")?,
                idempotency_retention: hours("IDEMPOTENCY_RETENTION_HOURS", "24")?,
                event_retention: hours("EVENT_RETENTION_HOURS", "24")?,
                rescue_after: Duration::from_secs(positive(
                    parse("RESCUE_AFTER_SECS", "900")?,
                    "RESCUE_AFTER_SECS",
                )?),
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
            metrics: MetricsSettings {
                addr: metrics_addr(&var("METRICS_ADDR", "127.0.0.1:9464"))?,
                token: Some(var("METRICS_TOKEN", ""))
                    .filter(|token| !token.is_empty())
                    .map(Secret::new),
            },
            storage: StorageSettings::from_env()?,
            ringcentral: ringcentral_from_env()?,
            gmail: gmail_from_env()?,
            contacts: ContactSettings {
                default_phone_region: var("DEFAULT_PHONE_REGION", "US")
                    .parse()
                    .map_err(|e| anyhow::anyhow!("DEFAULT_PHONE_REGION: {e}"))?,
            },
            reach: ReachSettings {
                fallback_after: Duration::from_secs(positive(
                    parse("FALLBACK_AFTER_SECS", "300")?,
                    "FALLBACK_AFTER_SECS",
                )?),
                portal_url: Some(var("PORTAL_URL", ""))
                    .filter(|url| !url.trim().is_empty())
                    .map(|_| base_url("PORTAL_URL", ""))
                    .transpose()?,
            },
            push: PushSettings {
                vapid_private_key: Some(var("VAPID_PRIVATE_KEY", ""))
                    .filter(|key| !key.trim().is_empty())
                    .map(Secret::new),
                vapid_subject: {
                    let subject = var("VAPID_SUBJECT", "mailto:webpush@localhost");
                    if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
                        bail!("VAPID_SUBJECT must be a mailto: or https: URL, not {subject:?}");
                    }
                    subject
                },
                endpoint_allow: var("PUSH_ENDPOINT_ALLOW", DEFAULT_PUSH_ENDPOINT_ALLOW)
                    .split(',')
                    .map(str::trim)
                    .filter(|entry| !entry.is_empty())
                    .map(AllowedOrigin::parse)
                    .collect::<anyhow::Result<_>>()
                    .context("PUSH_ENDPOINT_ALLOW")?,
            },
            crews: CrewSettings {
                dispatch_ack: Duration::from_secs(positive(
                    parse("DISPATCH_ACK_SECS", "120")?,
                    "DISPATCH_ACK_SECS",
                )?),
                arrival_radius_m: positive(parse("ARRIVAL_RADIUS_M", "150")?, "ARRIVAL_RADIUS_M")?,
                location_retention: hours("LOCATION_RETENTION_HOURS", "72")?,
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

/// A variable that must not be empty.
fn required(name: &str, default: &str) -> anyhow::Result<String> {
    let value = var(name, default);
    if value.trim().is_empty() {
        bail!("{name} must be set");
    }
    Ok(value)
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`); empty means the default.
fn flag(name: &str, default: bool) -> anyhow::Result<bool> {
    match var(name, "").trim().to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => bail!("{name} must be true or false, not {other:?}"),
    }
}

/// S3's bucket naming rules, checked at start-up rather than at the first upload.
fn bucket_name(raw: &str) -> anyhow::Result<String> {
    let ok = (3..=63).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
        && raw.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        bail!("S3_BUCKET must be set to a bucket name: 3 to 63 of a-z 0-9 . -, not {raw:?}");
    }
    Ok(raw.to_owned())
}

fn hours(name: &str, default: &str) -> anyhow::Result<Duration> {
    Ok(Duration::from_secs(
        positive(parse::<u64>(name, default)?, name)? * 3600,
    ))
}

/// The kernel's own cap on a listen backlog (Linux), or 1024 where it cannot be read.
fn default_listen_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|raw| raw.trim().parse().ok())
        .filter(|&backlog: &u32| backlog > 0)
        .unwrap_or(1024)
}

fn positive<T: PartialOrd + Default>(value: T, name: &str) -> anyhow::Result<T> {
    if value <= T::default() {
        bail!("{name} must be greater than zero");
    }
    Ok(value)
}

/// `METRICS_ADDR`: an address, or `0` or empty for none.
impl HttpSettings {
    /// What the accept loop holds each listener to.
    pub fn connection_limits(&self) -> crate::platform::http_server::ConnectionLimits {
        crate::platform::http_server::ConnectionLimits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
        }
    }
}

/// How many requests a bucket holds, and how long it takes to fill again from empty:
/// `120/m` is a burst of 120, then one more every half second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// The rate limits of the api, each `None` when switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// `RATE_LIMIT_SENDS` (default `120/m`): messages, SMS, emails, call logs, per user.
    pub sends: Option<Rate>,
    /// `RATE_LIMIT_UPLOADS` (default `60/m`): upload requests, per user.
    pub uploads: Option<Rate>,
    /// `RATE_LIMIT_RECEIPTS` (default `600/m`): delivered and read receipts, per user.
    pub receipts: Option<Rate>,
    /// `RATE_LIMIT_SEARCH` (default `60/m`): searches, per user.
    pub search: Option<Rate>,
    /// `RATE_LIMIT_ANONYMOUS` (default `120/m`): requests without a valid token (the
    /// RingCentral webhook, failed sign-ins), per client address.
    pub anonymous: Option<Rate>,
}

/// `N/s`, `N/m` or `N/h`, or `none`.
fn rate(name: &str, default: &str) -> anyhow::Result<Option<Rate>> {
    let raw = var(name, default);
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let parsed = raw.split_once('/').and_then(|(count, per)| {
        let count: u32 = count.trim().parse().ok().filter(|n| *n > 0)?;
        let per = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(Rate { count, per })
    });
    match parsed {
        Some(rate) => Ok(Some(rate)),
        None => bail!("{name}={raw:?}: say how many per second, minute or hour (120/m), or none"),
    }
}

/// A lifetime in seconds: `90s`, `15m`, `12h`, `30d` or plain seconds; `none` for no
/// limit.
fn lifetime(raw: &str) -> anyhow::Result<Option<i64>> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (digits, unit) = match raw.char_indices().last() {
        Some((at, 's')) => (&raw[..at], 1),
        Some((at, 'm')) => (&raw[..at], 60),
        Some((at, 'h')) => (&raw[..at], 3600),
        Some((at, 'd')) => (&raw[..at], 86_400),
        _ => (raw, 1),
    };
    match digits.parse::<i64>() {
        Ok(n) if n > 0 => Ok(Some(n.saturating_mul(unit))),
        _ => bail!("{raw:?} is not a lifetime: say 3600s, 90m, 12h, 30d or none"),
    }
}

fn metrics_addr(raw: &str) -> anyhow::Result<Option<SocketAddr>> {
    match raw.trim() {
        "" | "0" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("METRICS_ADDR={raw:?} is invalid: {e}")),
    }
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
    fn push_origins_are_https_or_loopback_http() {
        let default: Vec<_> = DEFAULT_PUSH_ENDPOINT_ALLOW
            .split(',')
            .map(|entry| AllowedOrigin::parse(entry.trim()).unwrap())
            .collect();
        assert!(default.iter().all(|o| o.scheme == "https"));
        assert!(
            default
                .iter()
                .any(|o| o.host == "notify.windows.com" && o.subdomains)
        );
        let local = AllowedOrigin::parse("http://127.0.0.1:9199").unwrap();
        assert_eq!((local.host.as_str(), local.port), ("127.0.0.1", Some(9199)));
        for bad in [
            "http://push.example.com",
            "ftp://push.example.com",
            "https://push.example.com/path",
            "https://user@push.example.com",
            "https://*",
            "https://push.example.com:port",
            "push.example.com",
        ] {
            assert!(AllowedOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_example_or_a_short_jwt_secret_is_refused_unless_allowed() {
        let auth = |secret: &str, allow_weak_secret| AuthSettings {
            jwt_secret: Secret::new(secret),
            allow_weak_secret,
            token_times: crate::platform::auth::TimeRules {
                leeway_secs: 60,
                max_lifetime_secs: None,
            },
        };
        let example = auth(EXAMPLE_JWT_SECRET, false).refuse_weak_secret();
        assert!(format!("{:#}", example.unwrap_err()).contains("JWT_SECRET is the example key"));
        let short = auth(&"k".repeat(31), false).refuse_weak_secret();
        assert!(
            format!("{:#}", short.unwrap_err())
                .contains("JWT_SECRET is 31 bytes; a key must have at least 32")
        );
        assert!(auth(&"k".repeat(32), false).refuse_weak_secret().is_ok());
        assert!(auth(EXAMPLE_JWT_SECRET, true).refuse_weak_secret().is_ok());
    }

    #[test]
    fn lifetimes_parse_with_units_or_none() {
        assert_eq!(lifetime("30d").unwrap(), Some(30 * 86_400));
        assert_eq!(lifetime("12h").unwrap(), Some(12 * 3600));
        assert_eq!(lifetime("90m").unwrap(), Some(5400));
        assert_eq!(lifetime("45s").unwrap(), Some(45));
        assert_eq!(lifetime("3600").unwrap(), Some(3600));
        assert_eq!(lifetime("none").unwrap(), None);
        for bad in ["", "0", "-5d", "3w", "d", "ten days"] {
            assert!(lifetime(bad).is_err(), "{bad:?}");
        }
    }

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
    fn metrics_addr_may_be_switched_off() {
        assert_eq!(metrics_addr("").unwrap(), None);
        assert_eq!(metrics_addr("0").unwrap(), None);
        assert_eq!(
            metrics_addr("0.0.0.0:9464").unwrap(),
            Some("0.0.0.0:9464".parse().unwrap())
        );
        let error = metrics_addr("9464").unwrap_err().to_string();
        assert!(error.contains("METRICS_ADDR"), "{error}");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn bucket_names_are_checked() {
        assert!(bucket_name("commcenter-files.eu").is_ok());
        for bad in ["", "ab", "Upper", "a_b", "-ab", "ab-", &"a".repeat(64)] {
            let error = bucket_name(bad).unwrap_err().to_string();
            assert!(error.contains("S3_BUCKET"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn prefix_is_checked() {
        assert!(queue_prefix("commcenter").is_ok());
        assert!(queue_prefix("a b").is_err());
        assert!(queue_prefix("").is_err());
    }
}
