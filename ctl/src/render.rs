//! Human output: aligned tables and key-value blocks made from the API's JSON.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Errors in a listing are cut to this many characters; `jobs show` prints them whole.
const ERROR_WIDTH: usize = 80;

/// Columns padded to their widest cell; the last column is never padded.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// A JSON value as a cell: strings bare, null as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line, at most `width` characters. An error's start says where it came from and
/// its end says why, so the middle is what gives way (`…`).
pub fn truncate(text: &str, width: usize) -> String {
    let chars: Vec<char> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    if chars.len() <= width {
        return chars.into_iter().collect();
    }
    let head = width / 3;
    let tail = width.saturating_sub(head + 1);
    let mut cut: String = chars[..head].iter().collect();
    cut.push('…');
    cut.extend(&chars[chars.len() - tail..]);
    cut
}

/// An RFC 3339 time from the API as `2026-11-24 12:00:00Z`; `-` when absent.
pub fn time(value: &Value) -> String {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or_else(
            || cell(value),
            |t| {
                t.with_timezone(&Utc)
                    .format("%Y-%m-%d %H:%M:%SZ")
                    .to_string()
            },
        )
}

/// The job listing: one row per job, errors cut to fit a terminal.
pub fn jobs(out: &mut dyn Write, jobs: &[Value]) -> io::Result<()> {
    let mut table = Table::new(&[
        "ID",
        "KIND",
        "STATE",
        "TRIES",
        "CUSTOMER",
        "CREATED",
        "CLASS",
        "LAST ERROR",
    ]);
    for job in jobs {
        table.row(vec![
            cell(&job["id"]),
            cell(&job["kind"]),
            cell(&job["state"]),
            format!(
                "{}/{}",
                cell(&job["attempts_since_replay"]),
                cell(&job["max_attempts"])
            ),
            cell(&job["customer_id"]),
            time(&job["created_at"]),
            cell(&job["last_error_class"]),
            job["last_error"]
                .as_str()
                .map_or_else(|| "-".to_owned(), |e| truncate(e, ERROR_WIDTH)),
        ]);
    }
    table.write(out)
}

/// `name  value` lines, names aligned.
pub fn fields(out: &mut dyn Write, object: &Value, names: &[&str]) -> io::Result<()> {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    for name in names {
        let value = &object[*name];
        let text = if name.ends_with("_at") {
            time(value)
        } else {
            cell(value)
        };
        writeln!(out, "  {name:<width$}  {text}")?;
    }
    Ok(())
}

/// Counts per state (or kind, or class) on one line: `dead 3, retrying 1`.
pub fn counts(map: &Value) -> String {
    let Some(map) = map.as_object().filter(|m| !m.is_empty()) else {
        return "none".to_owned();
    };
    map.iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `jobs show`: the job, what it carried, every attempt, the communication, the
/// broker's verdict and the audit.
pub fn job_detail(out: &mut dyn Write, detail: &Value) -> io::Result<()> {
    let job = &detail["job"];
    writeln!(out, "Job {}", cell(&job["id"]))?;
    fields(
        out,
        job,
        &[
            "kind",
            "state",
            "attempts",
            "attempts_since_replay",
            "max_attempts",
            "generation",
            "customer_id",
            "communication_id",
            "created_at",
            "queued_at",
            "next_attempt_at",
            "first_failed_at",
            "last_failed_at",
            "finished_at",
            "replayed_at",
            "last_error_class",
            "dead_lettered_by_broker",
        ],
    )?;
    if let Some(error) = job["last_error"].as_str() {
        writeln!(out, "\nLast error\n  {error}")?;
    }
    writeln!(out, "\nPayload")?;
    let payload = serde_json::to_string_pretty(&detail["payload"]).unwrap_or_default();
    for line in payload.lines() {
        writeln!(out, "  {line}")?;
    }
    let attempts = detail["attempts"].as_array().map_or(&[][..], Vec::as_slice);
    writeln!(out, "\nAttempts ({})", attempts.len())?;
    if !attempts.is_empty() {
        let mut table = Table::new(&[
            "#",
            "STARTED",
            "MS",
            "OUTCOME",
            "CLASS",
            "HTTP",
            "PROVIDER STATUS",
            "PROVIDER ID",
            "ERROR",
        ]);
        for attempt in attempts {
            table.row(vec![
                cell(&attempt["attempt"]),
                time(&attempt["started_at"]),
                cell(&attempt["duration_ms"]),
                cell(&attempt["outcome"]),
                cell(&attempt["error_class"]),
                cell(&attempt["http_status"]),
                cell(&attempt["provider_status"]),
                cell(&attempt["provider_id"]),
                cell(&attempt["error"]),
            ]);
        }
        table.write(out)?;
    }
    let communication = &detail["communication"];
    if !communication.is_null() {
        writeln!(out, "\nCommunication {}", cell(&communication["id"]))?;
        fields(
            out,
            communication,
            &[
                "customer_id",
                "type",
                "direction",
                "status",
                "failure_reason",
                "provider_status",
                "provider_message_id",
                "updated_at",
            ],
        )?;
    }
    if !detail["broker_death"].is_null() {
        writeln!(out, "\nDead-lettered by the broker")?;
        let death = serde_json::to_string_pretty(&detail["broker_death"]).unwrap_or_default();
        for line in death.lines() {
            writeln!(out, "  {line}")?;
        }
    }
    let audit = detail["audit"].as_array().map_or(&[][..], Vec::as_slice);
    writeln!(out, "\nAudit ({})", audit.len())?;
    if !audit.is_empty() {
        let mut table = Table::new(&["AT", "OPERATOR", "ACTION", "WAS", "REASON"]);
        for entry in audit {
            table.row(vec![
                time(&entry["at"]),
                cell(&entry["operator"]),
                cell(&entry["action"]),
                cell(&entry["previous_state"]),
                cell(&entry["reason"]),
            ]);
        }
        table.write(out)?;
    }
    Ok(())
}

/// `stats`: the broker's queues (or why it could not be asked), the outbox, jobs per state.
pub fn stats(out: &mut dyn Write, health: &Value) -> io::Result<()> {
    let ledger = &health["ledger"];
    let mut states = Table::new(&["STATE", "JOBS"]);
    if let Some(by_state) = ledger["by_state"].as_object() {
        for (state, n) in by_state {
            states.row(vec![state.clone(), cell(n)]);
        }
    }
    writeln!(out, "Jobs per state")?;
    states.write(out)?;
    let outbox = &ledger["outbox"];
    writeln!(
        out,
        "\nOutbox: {} pending, oldest waiting {}s",
        cell(&outbox["pending"]),
        cell(&outbox["lag_seconds"])
    )?;
    let oldest = &ledger["oldest_retrying"];
    if !oldest.is_null() {
        writeln!(
            out,
            "Longest retrying: {} {} ({} attempts, failing since {}): {}",
            cell(&oldest["kind"]),
            cell(&oldest["id"]),
            cell(&oldest["attempts"]),
            time(&oldest["first_failed_at"]),
            truncate(oldest["last_error"].as_str().unwrap_or("-"), ERROR_WIDTH)
        )?;
    }
    let broker = &health["broker"];
    if broker["reachable"] != Value::Bool(true) {
        writeln!(out, "\nRabbitMQ: unreachable ({})", cell(&broker["error"]))?;
        return Ok(());
    }
    writeln!(out, "\nRabbitMQ queues")?;
    let mut queues = Table::new(&["QUEUE", "MESSAGES", "CONSUMERS"]);
    let queue_row = |queues: &mut Table, q: &Value| {
        let name = if q["exists"] == Value::Bool(false) {
            format!("{} (not declared)", cell(&q["queue"]))
        } else {
            cell(&q["queue"])
        };
        queues.row(vec![name, cell(&q["messages"]), cell(&q["consumers"])]);
    };
    let list = |name: &str| {
        broker["queues"][name]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    for queue in list("work").iter().chain(&list("delay")) {
        queue_row(&mut queues, queue);
    }
    queue_row(&mut queues, &broker["queues"]["dead"]);
    queues.write(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_leave_no_trailing_blanks() {
        let mut table = Table::new(&["ID", "STATE", "ERROR"]);
        table.row(vec!["a".into(), "succeeded".into(), "-".into()]);
        table.row(vec!["bbbb".into(), "dead".into(), "boom".into()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID    STATE      ERROR\na     succeeded  -\nbbbb  dead       boom\n"
        );
    }

    #[test]
    fn long_errors_are_cut_on_one_line() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("line one\n  line two", 40), "line one line two");
        let cut = truncate(
            &format!("from here: {} because of this", "é".repeat(100)),
            30,
        );
        assert_eq!(cut.chars().count(), 30);
        assert_eq!(cut, "from here:…ééé because of this");
    }

    #[test]
    fn times_are_shown_in_utc_and_nulls_as_dashes() {
        assert_eq!(
            time(&Value::from("2026-11-24T13:00:00+01:00")),
            "2026-11-24 12:00:00Z"
        );
        assert_eq!(time(&Value::Null), "-");
        assert_eq!(
            counts(&serde_json::json!({"dead": 2, "queued": 1})),
            "dead 2, queued 1"
        );
        assert_eq!(counts(&serde_json::json!({})), "none");
    }
}
