//! Figures: percentiles, rates, the server's resident memory, and the report printed at the end
//! (and written as JSON with `--json`).

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub(crate) fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// The results, in the order they are printed, with a number and unit for comparisons.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) rows: BTreeMap<usize, (String, String)>,
    pub(crate) figures: serde_json::Map<String, Value>,
}

impl Report {
    pub(crate) fn add(&mut self, name: &str, value: String) {
        let index = self.rows.len();
        self.rows.insert(index, (name.to_owned(), value));
        eprintln!("  {name}: {}", self.rows[&index].1);
    }
    pub(crate) fn figure(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.insert(name.to_owned(), json!({"value": value, "unit": unit}));
    }
    pub(crate) fn print(&self) {
        let width = self.rows.values().map(|(n, _)| n.len()).max().unwrap_or(10);
        println!("{:width$}  value", "metric");
        println!("{:-<width$}  {:-<24}", "", "");
        for (name, value) in self.rows.values() {
            println!("{name:width$}  {value}");
        }
    }
}

pub(crate) fn record_latencies(report: &mut Report, name: &str, samples: &mut [Duration]) {
    samples.sort();
    for (label, p) in [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)] {
        report.figure(&format!("{name} {label}"), percentile(samples, p).as_secs_f64() * 1000.0, "ms");
    }
}

pub(crate) fn rate(count: usize, elapsed: Duration) -> String {
    format!("{:.1}/s", count as f64 / elapsed.as_secs_f64().max(1e-9))
}

pub(crate) fn latencies(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms (n={})",
        percentile(&samples, 0.50).as_secs_f64() * 1000.0,
        percentile(&samples, 0.95).as_secs_f64() * 1000.0,
        percentile(&samples, 0.99).as_secs_f64() * 1000.0,
        samples.len()
    )
}
