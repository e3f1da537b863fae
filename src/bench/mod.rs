//! `illume bench`: throughput of each compiled backend, one table per backend.
//!
//! Each group (`ops`, and the model groups as they land) produces [`Row`]s measured on the
//! backend the suite runs on; rows that compare two ways of doing the same work carry the
//! ratio, measured side by side in the same run.

use std::fmt;
use std::time::{Duration, Instant};

use illume_backends::{BackendKind, BackendTask, IllumeBackend};

mod diffusion;
mod dualvitok;
mod kernels;
mod mllm;
mod ops;

/// One measured line of a benchmark table.
#[derive(Debug, Clone)]
pub struct Row {
    pub group: &'static str,
    pub item: String,
    pub shape: String,
    /// Median wall time of one run.
    pub time: Duration,
    /// Throughput in the row's own unit (GFLOP/s, tokens/s, ...), when meaningful.
    pub throughput: Option<(f64, &'static str)>,
    /// Peak resident memory of the process during the row (host memory), in bytes.
    pub peak_rss: Option<u64>,
    /// A side-by-side comparison, e.g. "fused/generic 2.1x".
    pub note: String,
}

/// Which rows to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub groups: Vec<String>,
    /// Smaller shapes and fewer repetitions, for a smoke run.
    pub quick: bool,
}

impl Options {
    pub fn wants(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g == group)
    }
}

/// The groups `illume bench --group` accepts.
pub const GROUPS: &[&str] = &["ops", "kernels", "dualvitok", "mllm", "diffusion"];

struct Suite<'a> {
    options: &'a Options,
}

impl BackendTask for Suite<'_> {
    type Output = Vec<Row>;

    fn run<B: IllumeBackend>(self, device: B::Device) -> Vec<Row> {
        let mut rows = Vec::new();
        if self.options.wants("ops") {
            rows.extend(ops::rows::<B>(&device, self.options));
        }
        if self.options.wants("kernels") {
            rows.extend(kernels::rows::<B>(&device, self.options));
        }
        if self.options.wants("dualvitok") {
            rows.extend(dualvitok::rows::<B>(&device, self.options));
        }
        if self.options.wants("diffusion") {
            rows.extend(diffusion::rows::<B>(&device, self.options));
        }
        if self.options.wants("mllm") {
            rows.extend(mllm::rows::<B>(&device, self.options));
        }
        rows
    }
}

/// Run the selected groups on one backend.
pub fn run(
    kind: BackendKind,
    options: &Options,
) -> Result<Vec<Row>, illume_backends::BackendError> {
    illume_backends::run_on(kind, Suite { options })
}

/// Median time of `iters` runs of `f` after `warmup` unmeasured ones; `f` must block until
/// its result is computed (read a value back, or sync the device).
pub fn time_median(warmup: usize, iters: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<Duration> = (0..iters.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Peak resident set size tracking through `/proc/self` (Linux); `None` elsewhere.
pub mod memory {
    /// Reset the kernel's high-water mark of this process's resident memory.
    pub fn reset_peak() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }

    /// Peak resident memory since the last reset, in bytes.
    pub fn peak() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

/// A whole table, printable.
pub struct Table<'a> {
    pub backend: BackendKind,
    pub rows: &'a [Row],
}

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "backend: {}", self.backend)?;
        writeln!(
            f,
            "{:<10} {:<34} {:<26} {:>12} {:>18} {:>11}  note",
            "group", "item", "shape", "time", "throughput", "peak RSS"
        )?;
        for row in self.rows {
            let time = if row.time.as_secs_f64() >= 1.0 {
                format!("{:.2} s", row.time.as_secs_f64())
            } else {
                format!("{:.2} ms", row.time.as_secs_f64() * 1e3)
            };
            let throughput = row
                .throughput
                .map(|(v, unit)| format!("{v:.1} {unit}"))
                .unwrap_or_default();
            let rss = row
                .peak_rss
                .map(|b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64))
                .unwrap_or_default();
            writeln!(
                f,
                "{:<10} {:<34} {:<26} {:>12} {:>18} {:>11}  {}",
                row.group, row.item, row.shape, time, throughput, rss, row.note
            )?;
        }
        Ok(())
    }
}
