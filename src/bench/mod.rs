//! `illume bench`: throughput of each compiled backend, one table per backend.
//!
//! Each group (`ops`, and the model groups as they land) produces [`Row`]s measured on the
//! backend the suite runs on; rows that compare two ways of doing the same work carry the
//! ratio, measured side by side in the same run.

use std::fmt;
use std::time::{Duration, Instant};

use illume_backends::{dtype_name, BackendKind, BackendTask, IllumeBackend, Precision};

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

/// A group's measuring function on backend `B`.
type Group<B> = fn(&burn::tensor::Device<B>, &Options) -> Vec<Row>;

struct Suite<'a, Emit> {
    options: &'a Options,
    emit: Emit,
}

impl<Emit: FnMut(&[Row])> BackendTask for Suite<'_, Emit> {
    type Output = Vec<Row>;

    fn run<B: IllumeBackend>(mut self, device: B::Device) -> Vec<Row> {
        let groups: [(&str, Group<B>); 5] = [
            ("ops", ops::rows::<B>),
            ("kernels", kernels::rows::<B>),
            ("dualvitok", dualvitok::rows::<B>),
            ("diffusion", diffusion::rows::<B>),
            ("mllm", mllm::rows::<B>),
        ];
        let mut rows = Vec::new();
        for (name, group) in groups {
            if self.options.wants(name) {
                let measured = group(&device, self.options);
                (self.emit)(&measured);
                rows.extend(measured);
            }
        }
        rows
    }
}

/// Run the selected groups on one backend at `precision`, handing each group's rows to
/// `emit` as soon as they are measured (a long run shows its results as it goes).
pub fn run(
    kind: BackendKind,
    precision: Precision,
    options: &Options,
    emit: impl FnMut(&[Row]),
) -> Result<Vec<Row>, illume_backends::BackendError> {
    illume_backends::run_on(kind, precision, Suite { options, emit })
}

/// The float type `kind` computes in at `precision` (what the bench table's heading says).
pub fn compute_dtype(
    kind: BackendKind,
    precision: Precision,
) -> Result<&'static str, illume_backends::BackendError> {
    let (_, dtype) = illume_backends::limits(kind, precision)?;
    Ok(dtype_name(dtype))
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

/// The heading of one backend's table: the backend, its float type, the column names.
pub fn header(backend: BackendKind, dtype: &str) -> String {
    format!(
        "backend: {backend} ({dtype})\n{:<10} {:<34} {:<26} {:>12} {:>18} {:>11}  note",
        "group", "item", "shape", "time", "throughput", "peak RSS"
    )
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = if self.time.as_secs_f64() >= 1.0 {
            format!("{:.2} s", self.time.as_secs_f64())
        } else {
            format!("{:.2} ms", self.time.as_secs_f64() * 1e3)
        };
        let throughput = self
            .throughput
            .map(|(v, unit)| format!("{v:.1} {unit}"))
            .unwrap_or_default();
        let rss = self
            .peak_rss
            .map(|b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64))
            .unwrap_or_default();
        write!(
            f,
            "{:<10} {:<34} {:<26} {:>12} {:>18} {:>11}  {}",
            self.group, self.item, self.shape, time, throughput, rss, self.note
        )
    }
}
