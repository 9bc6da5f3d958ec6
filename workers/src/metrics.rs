//! The workers' metrics: jobs by kind and outcome, attempts by kind and error class,
//! processing time by kind, jobs in flight; and the small HTTP server that serves them
//! at `/metrics` (`METRICS_ADDR`), the workers having no other.
//!
//! The runtime records into the [`JobMetrics`] it holds (`Runtime::metrics`), so two
//! runtimes in one process (as in the tests) count apart.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use commcenter_shared::{
    ledger::jobs::ErrorClass,
    ops::metrics::{self, PREFIX, Registry},
    ops::{self, JobCounts},
    platform::http_server::{self, ConnectionLimits},
    platform::settings::Secret,
};

/// How a delivery of a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Failed transiently; waits in a delay tier.
    Retrying,
    /// Failed for good (permanent, attempts exhausted, or not a job we can run).
    Dead,
    /// A redelivery of a job already finished, or a copy from before a replay.
    Skipped,
    /// A poll that found nothing at its first attempt: left out of the ledger and the
    /// activity chart, counted here only.
    Idle,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
            Self::Skipped => "skipped",
            Self::Idle => "idle",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    kind: String,
    /// `none` for an attempt that succeeded.
    error_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

pub struct JobMetrics {
    registry: Registry,
    /// Jobs finished by minute and kind, not yet added to `job_activity`
    /// ([`crate::activity`] takes them every few seconds).
    activity: Mutex<HashMap<(DateTime<Utc>, String), JobCounts>>,
    jobs: Family<JobLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    durations: Family<KindLabel, Histogram>,
    in_flight: Family<KindLabel, Gauge>,
    rescued: Counter,
}

impl Default for JobMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs",
            "Job deliveries run to an end, by kind and outcome (succeeded, retrying, dead, skipped, idle: a poll that found nothing)",
            jobs.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "job_attempts",
            "Attempts recorded, by kind and error class (none when it succeeded)",
            attempts.clone(),
        );
        let durations = Family::<KindLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(metrics::latency_buckets())) as fn() -> Histogram,
        );
        registry.register(
            "job_duration_seconds",
            "Time an attempt took, handler and bookkeeping, by kind",
            durations.clone(),
        );
        let in_flight = Family::<KindLabel, Gauge>::default();
        registry.register(
            "jobs_in_flight",
            "Jobs this worker process is running now, by kind",
            in_flight.clone(),
        );
        let rescued = Counter::default();
        registry.register(
            "jobs_rescued",
            "Jobs whose broker message was overdue, published again by the rescuer",
            rescued.clone(),
        );
        Self {
            registry,
            rescued,
            activity: Mutex::default(),
            jobs,
            attempts,
            durations,
            in_flight,
        }
    }
}

impl JobMetrics {
    pub fn render(&self) -> String {
        metrics::render(&self.registry)
    }

    /// Counts a job of `kind` in flight until the guard drops.
    pub fn in_flight(&self, kind: &str) -> InFlight {
        let gauge = self.in_flight.get_or_create_owned(&KindLabel {
            kind: kind.to_owned(),
        });
        gauge.inc();
        InFlight(gauge)
    }

    /// An attempt whose outcome is committed: `error_class` is `None` when it
    /// succeeded (or found nothing, `Idle`); a failed one is `Retrying` or `Dead`.
    pub fn attempt_finished(
        &self,
        kind: &str,
        error_class: Option<ErrorClass>,
        outcome: Outcome,
        started_at: DateTime<Utc>,
    ) {
        let took = (Utc::now() - started_at).to_std().unwrap_or_default();
        self.durations
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
        self.attempts
            .get_or_create(&AttemptLabels {
                kind: kind.to_owned(),
                error_class: error_class.map_or("none", ErrorClass::as_str),
            })
            .inc();
        self.job_finished(kind, outcome);
    }

    pub fn job_finished(&self, kind: &str, outcome: Outcome) {
        let add = |counts: &mut JobCounts| match outcome {
            Outcome::Succeeded => counts.succeeded += 1,
            Outcome::Retrying => counts.retried += 1,
            Outcome::Dead => counts.dead += 1,
            Outcome::Skipped | Outcome::Idle => {}
        };
        if !matches!(outcome, Outcome::Skipped | Outcome::Idle) {
            let mut activity = self.activity.lock().unwrap_or_else(PoisonError::into_inner);
            add(activity
                .entry((ops::minute_of(Utc::now()), kind.to_owned()))
                .or_default());
        }
        self.jobs
            .get_or_create(&JobLabels {
                kind: kind.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }
}

impl JobMetrics {
    /// The rescuer published `n` overdue jobs again.
    pub fn jobs_rescued(&self, n: u64) {
        self.rescued.inc_by(n);
    }

    /// The jobs counted since the last take, by minute and kind.
    pub fn take_activity(&self) -> Vec<(DateTime<Utc>, String, JobCounts)> {
        let mut activity = self.activity.lock().unwrap_or_else(PoisonError::into_inner);
        activity
            .drain()
            .map(|((minute, kind), counts)| (minute, kind, counts))
            .collect()
    }

    /// Puts back counts that could not be written, to go with the next take. Minutes
    /// older than the chart can show (a day) are dropped, so a long database outage
    /// cannot grow them without bound.
    pub fn restore_activity(&self, taken: Vec<(DateTime<Utc>, String, JobCounts)>) {
        let oldest = Utc::now() - chrono::Duration::minutes(ops::MAX_MINUTES);
        let mut activity = self.activity.lock().unwrap_or_else(PoisonError::into_inner);
        for (minute, kind, c) in taken.into_iter().filter(|(minute, ..)| *minute >= oldest) {
            let counts = activity.entry((minute, kind)).or_default();
            counts.succeeded += c.succeeded;
            counts.retried += c.retried;
            counts.dead += c.dead;
        }
    }
}

/// A job in flight; dropping it (however the job ends) takes it off the gauge.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `/metrics` on `listener` until `shutdown`; with `token`, only to its bearer.
/// Slow or idle clients are held to `limits`, as on the api.
pub async fn serve(
    metrics: Arc<JobMetrics>,
    token: Option<Secret>,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let router = Router::new()
        .route("/metrics", get(scrape))
        .with_state((metrics, token.map(Arc::new)));
    http_server::serve(listener, limits, move |_peer| router.clone(), shutdown).await;
}

async fn scrape(
    State((metrics, token)): State<(Arc<JobMetrics>, Option<Arc<Secret>>)>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if !metrics::scrape_allowed(token.as_deref(), authorization) {
        return (
            StatusCode::UNAUTHORIZED,
            "the metrics need the METRICS_TOKEN bearer token\n",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_not_written_come_back_but_never_older_than_the_chart_shows() {
        let metrics = JobMetrics::default();
        metrics.job_finished("sms.send", Outcome::Succeeded);
        metrics.job_finished("sms.send", Outcome::Dead);
        metrics.job_finished("sms.send", Outcome::Skipped);
        let mut taken = metrics.take_activity();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].2.succeeded, taken[0].2.dead), (1, 1));
        assert!(metrics.take_activity().is_empty(), "taken once");
        // The write failed: put back, with a minute from two days ago that the chart
        // can no longer show.
        let stale = ops::minute_of(Utc::now() - chrono::Duration::days(2));
        taken.push((
            stale,
            "sms.send".to_owned(),
            JobCounts {
                succeeded: 5,
                ..Default::default()
            },
        ));
        metrics.restore_activity(taken);
        let again = metrics.take_activity();
        assert_eq!(again.len(), 1, "{again:?}");
        assert_ne!(again[0].0, stale);
    }

    fn line_value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn outcomes_follow_the_error_class_and_the_retry() {
        let metrics = JobMetrics::default();
        let started = Utc::now() - chrono::Duration::milliseconds(20);
        let transient = Some(ErrorClass::Transient);
        metrics.attempt_finished("sms.send", None, Outcome::Succeeded, started);
        metrics.attempt_finished("sms.send", transient, Outcome::Retrying, started);
        metrics.attempt_finished("sms.send", transient, Outcome::Dead, started);
        metrics.attempt_finished(
            "sms.send",
            Some(ErrorClass::Permanent),
            Outcome::Dead,
            started,
        );
        metrics.attempt_finished("email.sync", None, Outcome::Idle, started);
        metrics.job_finished("sms.send", Outcome::Skipped);
        let idle = metrics.take_activity();
        assert!(
            idle.iter().all(|(_, kind, _)| kind == "sms.send"),
            "an idle poll is not on the activity chart: {idle:?}"
        );
        let text = metrics.render();
        let jobs = |outcome: &str| {
            line_value(
                &text,
                &format!("commcenter_jobs_total{{kind=\"sms.send\",outcome=\"{outcome}\"}}"),
            )
        };
        assert_eq!(jobs("succeeded"), Some(1.0));
        assert_eq!(jobs("retrying"), Some(1.0));
        assert_eq!(jobs("dead"), Some(2.0));
        assert_eq!(jobs("skipped"), Some(1.0));
        assert_eq!(
            line_value(
                &text,
                "commcenter_jobs_total{kind=\"email.sync\",outcome=\"idle\"}"
            ),
            Some(1.0)
        );
        let attempts = |class: &str| {
            line_value(
                &text,
                &format!(
                    "commcenter_job_attempts_total{{kind=\"sms.send\",error_class=\"{class}\"}}"
                ),
            )
        };
        assert_eq!(attempts("none"), Some(1.0));
        assert_eq!(attempts("transient"), Some(2.0));
        assert_eq!(attempts("permanent"), Some(1.0));
        assert_eq!(
            line_value(
                &text,
                "commcenter_job_duration_seconds_count{kind=\"sms.send\"}"
            ),
            Some(4.0)
        );
        // Four attempts of at least 20 ms: none in the 5 ms bucket.
        assert_eq!(
            line_value(
                &text,
                "commcenter_job_duration_seconds_bucket{kind=\"sms.send\",le=\"0.005\"}"
            ),
            Some(0.0)
        );
    }

    #[test]
    fn the_in_flight_gauge_follows_the_guards() {
        let metrics = JobMetrics::default();
        let series = "commcenter_jobs_in_flight{kind=\"file.process\"}";
        let first = metrics.in_flight("file.process");
        let second = metrics.in_flight("file.process");
        assert_eq!(line_value(&metrics.render(), series), Some(2.0));
        drop(first);
        assert_eq!(line_value(&metrics.render(), series), Some(1.0));
        drop(second);
        assert_eq!(line_value(&metrics.render(), series), Some(0.0));
    }
}
