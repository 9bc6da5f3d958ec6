//! The results: one row per figure with its target and what it runs under, printed as a
//! table, plus free-form notes (where the time went) and the JSON of it all.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::Options;

#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    Below(f64),
    /// A baseline: measured to be compared against, not judged.
    None,
    /// A figure shown for context, with no target of its own.
    Info,
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Self::AtLeast(v) => format!(">= {} {unit}", number(v)),
            Self::Below(v) => format!("< {} {unit}", number(v)),
            Self::None => "(baseline)".into(),
            Self::Info => "-".into(),
        }
    }

    fn status(self, value: f64) -> &'static str {
        match self {
            Self::AtLeast(v) if value >= v => "met",
            Self::Below(v) if value < v => "met",
            Self::None | Self::Info => "-",
            _ => "MISSED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub measure: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: Target,
    /// The baseline or ceiling this figure is to be read against.
    pub beside: String,
}

pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Figures later scenarios print beside their own (e.g. `d.msgs_per_s`).
    baselines: BTreeMap<&'static str, f64>,
    details: serde_json::Map<String, Value>,
    options: Value,
}

impl Report {
    pub fn new(options: &Options) -> Self {
        Self {
            rows: Vec::new(),
            notes: Vec::new(),
            baselines: BTreeMap::new(),
            details: serde_json::Map::new(),
            options: json!({
                "scenario": format!("{:?}", options.scenario),
                "jobs": options.jobs(),
                "quick": options.quick,
                "prefetch": options.prefetch,
                "db_connections": options.db_connections,
                "api": format!("{:?}", options.api),
                "window_s": options.window().as_secs_f64(),
                "concurrency": options.concurrency,
                "e2e_concurrency": options.e2e_concurrency,
            }),
        }
    }

    pub fn row(&mut self, row: Row) {
        eprintln!(
            "  => {} {}: {} {} [{}]",
            row.scenario,
            row.measure,
            number(row.value),
            row.unit,
            row.target.status(row.value)
        );
        self.rows.push(row);
    }

    pub fn note(&mut self, note: String) {
        eprintln!("  .. {note}");
        self.notes.push(note);
    }

    pub fn set_baseline(&mut self, key: &'static str, value: f64) {
        self.baselines.insert(key, value);
    }

    /// "label N unit" for a baseline measured earlier in this run, or "label: not run".
    pub fn baseline(&self, key: &str, label: &str, unit: &str) -> String {
        match self.baselines.get(key) {
            Some(v) => format!("{label} {} {unit}", number(*v)),
            None => format!("{label}: not run"),
        }
    }

    pub fn detail(&mut self, key: &str, value: Value) {
        self.details.insert(key.to_owned(), value);
    }

    pub fn print(&self) {
        let header = [
            "scenario",
            "measure",
            "figure",
            "target",
            "status",
            "beside it (baseline / ceiling)",
        ];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.scenario.to_owned(),
                    r.measure.clone(),
                    format!("{} {}", number(r.value), r.unit),
                    r.target.describe(r.unit),
                    r.target.status(r.value).to_owned(),
                    r.beside.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |row: &[String]| {
            let mut out = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                // Figures right-aligned, text left-aligned.
                if i == 2 {
                    out.push_str(&format!("{cell:>w$}"));
                } else {
                    out.push_str(&format!("{cell:<w$}"));
                }
                out.push_str(" | ");
            }
            out.trim_end_matches([' ', '|']).to_owned()
        };
        println!();
        println!("{}", line(&header.map(str::to_owned)));
        println!(
            "{}",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-+-")
        );
        for row in &cells {
            println!("{}", line(row));
        }
        if !self.notes.is_empty() {
            println!("\nwhere the time went:");
            for note in &self.notes {
                println!("  - {note}");
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "scenario": r.scenario,
                    "measure": r.measure,
                    "value": r.value,
                    "unit": r.unit,
                    "target": r.target.describe(r.unit),
                    "status": r.target.status(r.value),
                    "beside": r.beside,
                })
            })
            .collect();
        json!({
            "machine": machine(),
            "options": self.options,
            "rows": rows,
            "notes": self.notes,
            "details": self.details,
        })
    }
}

fn machine() -> Value {
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "os": std::env::consts::OS,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

/// 12345.6 -> "12,346"; small values keep a decimal or two.
pub fn number(value: f64) -> String {
    if value.abs() < 10.0 {
        return format!("{value:.2}");
    }
    if value.abs() < 100.0 {
        return format!("{value:.1}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}
