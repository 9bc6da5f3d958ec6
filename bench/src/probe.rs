//! A cheap profile of a measured window: which processes used the CPU (from `/proc`),
//! and what PostgreSQL committed and flushed (from its statistics views).

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use serde_json::{Value, json};
use sqlx::PgPool;

/// Linux reports process times in clock ticks of 1/100 s (USER_HZ) on every platform
/// we run on; reading sysconf would need libc for one constant.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks by process (with its group), and the machine's busy and total ticks.
pub struct CpuSnapshot {
    at: Instant,
    processes: HashMap<u32, (&'static str, u64)>,
    machine_busy: u64,
    machine_total: u64,
}

impl CpuSnapshot {
    pub fn take() -> Self {
        let me = std::process::id();
        let mut processes = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                let Some((comm, ticks)) = process_ticks(&stat) else {
                    continue;
                };
                let group = if pid == me {
                    "bench process (api+workers+client)"
                } else {
                    match comm {
                        "postgres" => "postgres",
                        "beam.smp" | "erl_child_setup" | "epmd" | "inet_gethost" => "rabbitmq",
                        _ => "other processes",
                    }
                };
                processes.insert(pid, (group, ticks));
            }
        }
        let (machine_busy, machine_total) = machine_ticks().unwrap_or((0, 0));
        Self {
            at: Instant::now(),
            processes,
            machine_busy,
            machine_total,
        }
    }

    /// Cores used by each group since `self`, and the machine's busy share.
    pub fn usage_since(&self) -> CpuUsage {
        let now = Self::take();
        let seconds = now.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let mut cores: BTreeMap<&'static str, f64> = BTreeMap::new();
        for (pid, (group, ticks)) in &now.processes {
            // A process started within the window counts from zero.
            let before = self.processes.get(pid).map_or(0, |(_, ticks)| *ticks);
            *cores.entry(group).or_insert(0.0) +=
                ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND / seconds;
        }
        cores.retain(|_, used| *used >= 0.005);
        let total = now.machine_total.saturating_sub(self.machine_total).max(1);
        let busy = now.machine_busy.saturating_sub(self.machine_busy);
        let machine_busy = busy as f64 / total as f64;
        // Processes that exited within the window (compilers, test binaries) are not
        // in /proc any more; what the machine used beyond the groups above is theirs.
        let attributed: f64 = cores.values().sum();
        let unattributed = machine_busy * cpus() as f64 - attributed;
        if unattributed >= 0.05 {
            cores.insert("unattributed (exited processes, irq)", unattributed);
        }
        CpuUsage {
            cores,
            machine_busy,
        }
    }
}

pub struct CpuUsage {
    pub cores: BTreeMap<&'static str, f64>,
    /// Share of all cores busy (user, system, irq, steal) over the window.
    pub machine_busy: f64,
}

impl CpuUsage {
    /// Cores used by anything but this bench, PostgreSQL and RabbitMQ: other work on
    /// the machine, which takes from the figures.
    pub fn foreign(&self) -> f64 {
        self.cores.get("other processes").copied().unwrap_or(0.0)
            + self
                .cores
                .get("unattributed (exited processes, irq)")
                .copied()
                .unwrap_or(0.0)
    }

    pub fn describe(&self) -> String {
        let groups: Vec<String> = self
            .cores
            .iter()
            .map(|(g, c)| format!("{g} {c:.2}"))
            .collect();
        let mut out = format!(
            "CPU cores used: {}; machine {:.0}% busy of {} cores",
            groups.join(", "),
            self.machine_busy * 100.0,
            cpus()
        );
        if self.foreign() >= 0.15 {
            out.push_str(&format!(
                " (WARNING: {:.2} cores went to other work: this figure is understated)",
                self.foreign()
            ));
        }
        out
    }

    pub fn to_json(&self) -> Value {
        json!({ "cores": self.cores, "machine_busy": self.machine_busy })
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// (comm, utime + stime) from `/proc/{pid}/stat`; comm may hold spaces, so split at
/// the last parenthesis.
fn process_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    // Fields after ")": state(3) ppid(4) ... utime(14) stime(15).
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// (busy, total) ticks of all cores from `/proc/stat`; idle and iowait count as not busy.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

/// PostgreSQL's counters: commits of one database, and the cluster's WAL activity.
/// Commits include the transactions in which each LISTENing backend (one per relay)
/// reads the notifications of the outbox triggers; they write no WAL.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbCounters {
    pub commits: i64,
    pub rollbacks: i64,
    pub wal_records: i64,
    pub wal_bytes: i64,
    pub wal_syncs: i64,
}

impl DbCounters {
    /// Backends publish their statistics about once a second, and at exit: take the
    /// "after" reading once the pool doing the work is closed, or read the figures of
    /// a window of many seconds as approximate.
    pub async fn read(pool: &PgPool) -> Self {
        let (commits, rollbacks): (i64, i64) = sqlx::query_as(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .unwrap_or((0, 0));
        let wal: (i64, i64, i64) =
            sqlx::query_as("SELECT wal_records, wal_bytes::bigint, wal_sync FROM pg_stat_wal")
                .fetch_one(pool)
                .await
                .unwrap_or((0, 0, 0));
        Self {
            commits,
            rollbacks,
            wal_records: wal.0,
            wal_bytes: wal.1,
            wal_syncs: wal.2,
        }
    }

    pub fn since(self, before: Self) -> Self {
        Self {
            commits: self.commits - before.commits,
            rollbacks: self.rollbacks - before.rollbacks,
            wal_records: self.wal_records - before.wal_records,
            wal_bytes: self.wal_bytes - before.wal_bytes,
            wal_syncs: self.wal_syncs - before.wal_syncs,
        }
    }

    /// Per unit of work (a job, a send).
    pub fn describe_per(self, units: u64, unit: &str) -> String {
        let n = units.max(1) as f64;
        format!(
            "per {unit}: {:.2} commits (incl. LISTEN deliveries), {:.2} rollbacks, {:.1} WAL records, {:.0} WAL bytes, {:.3} WAL fsyncs (cluster-wide; {} units each fsync)",
            self.commits as f64 / n,
            self.rollbacks as f64 / n,
            self.wal_records as f64 / n,
            self.wal_bytes as f64 / n,
            self.wal_syncs as f64 / n,
            if self.wal_syncs > 0 {
                format!("{:.1}", n / self.wal_syncs as f64)
            } else {
                "-".into()
            },
        )
    }

    pub fn to_json(self, units: u64) -> Value {
        let n = units.max(1) as f64;
        json!({
            "commits": self.commits, "rollbacks": self.rollbacks, "wal_records": self.wal_records,
            "wal_bytes": self.wal_bytes, "wal_syncs": self.wal_syncs,
            "commits_per_unit": self.commits as f64 / n,
            "wal_syncs_per_unit": self.wal_syncs as f64 / n,
        })
    }
}

/// The indexes of the tables a send writes (communications, its conversation, its job),
/// with how often each was read during the run (`pg_stat_user_indexes`): what every
/// write pays for, beside what used it. An index read by no query of the run is not
/// unused (operators' listings, search, analytics read theirs), but is a place to look.
pub async fn index_report(pool: &PgPool) -> String {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT relname::text, indexrelname::text, idx_scan FROM pg_stat_user_indexes
         WHERE relname IN ('communications', 'conversations', 'jobs')
         ORDER BY relname, indexrelname",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for (table, index, scans) in rows {
        let entry = format!("{index} {scans}");
        match tables.last_mut() {
            Some((name, indexes)) if *name == table => indexes.push(entry),
            _ => tables.push((table, vec![entry])),
        }
    }
    tables
        .iter()
        .map(|(table, indexes)| {
            format!(
                "{table}: {} indexes (scans: {})",
                indexes.len(),
                indexes.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where PostgreSQL's time goes, by statement (`pg_stat_statements`, when the server
/// loads it: `shared_preload_libraries`): forgets what was counted so far, so
/// [`statement_report`] covers what follows.
pub async fn reset_statements(pool: &PgPool) {
    let ready = async {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(pool)
            .await?;
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(pool)
            .await
    };
    ready.await.ok();
}

/// The statements that took the most execution time since [`reset_statements`], each
/// with its share, its calls, and its time and WAL records per `unit` (of `units`);
/// without `pg_stat_statements` it says how to turn it on.
pub async fn statement_report(pool: &PgPool, units: u64, unit: &str) -> String {
    let rows: Result<Vec<(i64, f64, i64, String)>, _> = sqlx::query_as(
        "SELECT calls, total_exec_time, wal_records,
                left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
         FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY total_exec_time DESC",
    )
    .fetch_all(pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(_) => {
            return "not measured: PostgreSQL does not load pg_stat_statements \
                    (ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements', \
                    then restart it)"
                .into();
        }
    };
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let units = units.max(1) as f64;
    let top: Vec<String> = rows
        .iter()
        .take(6)
        .map(|(calls, ms, wal, query)| {
            format!(
                "{:.0}% {:.0} µs and {:.1} WAL records a {unit} over {calls} calls: {query}",
                100.0 * ms / total.max(f64::MIN_POSITIVE),
                1000.0 * ms / units,
                *wal as f64 / units,
            )
        })
        .collect();
    format!(
        "{:.0} µs of statements a {unit}, the most: {}",
        1000.0 * total / units,
        top.join(" | ")
    )
}
