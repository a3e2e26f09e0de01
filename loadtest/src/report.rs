//! Printing results: one line per measured number, then one `RESULT` line.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use hdrhistogram::Histogram;

/// A titled list of measured numbers.
pub struct Report {
    title: String,
    lines: Vec<(String, String)>,
}

impl Report {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            lines: Vec::new(),
        }
    }

    pub fn line(&mut self, name: impl Into<String>, value: impl Display) {
        self.lines.push((name.into(), value.to_string()));
    }

    /// p50/p90/p99/max of a histogram of microseconds, printed in milliseconds.
    pub fn latency(&mut self, name: &str, histogram: &Histogram<u64>) {
        if histogram.is_empty() {
            self.line(name, "no samples");
            return;
        }
        for (label, quantile) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            self.line(
                format!("{name} {label}"),
                format!("{} ms", ms(histogram.value_at_quantile(quantile))),
            );
        }
        self.line(format!("{name} max"), format!("{} ms", ms(histogram.max())));
    }

    pub fn print(&self) {
        let width = self.lines.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        println!();
        println!("== {} ==", self.title);
        for (name, value) in &self.lines {
            println!("  {name:<width$}  {value}");
        }
        println!();
    }
}

/// A histogram of microseconds from 1 µs to one hour, 3 significant digits.
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records `value` µs, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.max(1));
}

/// Microseconds as milliseconds with three decimals.
pub fn ms(micros: u64) -> String {
    format!("{:.3}", micros as f64 / 1000.0)
}

/// A quantile of a histogram of microseconds in milliseconds ([`ms`]), `n/a` without samples.
pub fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> String {
    match histogram.is_empty() {
        true => "n/a".to_owned(),
        false => ms(histogram.value_at_quantile(quantile)),
    }
}

/// A duration in seconds with three decimals.
pub fn secs(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

/// Connection closes counted by close frame: `3 x 4201 slow consumer, ...`, or `none`.
pub fn closes(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(close, count)| format!("{count} x {close}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU model and count, for the report.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs, {model}")
}

/// CPU time used over `wall`: milliseconds and the share of one core.
pub fn cpu(used: Duration, wall: Duration, ticks_per_sec: u64) -> String {
    format!(
        "{:.0} ms ({:.0}% of one core over the wall time; {ticks_per_sec} ticks/s)",
        used.as_secs_f64() * 1000.0,
        100.0 * used.as_secs_f64() / wall.as_secs_f64()
    )
}
