//! `illume bench`: throughput of each compiled backend, one table per backend.
//!
//! Each group (`ops`, `kernels` and the model groups) measures its [`Row`]s on the backend
//! the suite runs on and hands each one to a [`Sink`] as soon as it is measured, so a long
//! run shows (and writes) its results as it goes. Rows that compare two ways of doing the
//! same work carry the ratio, measured side by side in the same run; rows with an official
//! PyTorch timing (`perf_targets.md`) carry it and the speed ratio.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use illume_backends::{
    dtype_name, BackendError, BackendKind, BackendTask, IllumeBackend, Precision,
};

mod diffusion;
mod dualvitok;
mod kernels;
mod mllm;
mod ops;

/// One measured line of a benchmark table.
#[derive(Debug, Clone, Default)]
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
    /// Seconds the official PyTorch code takes for the same work (`perf_targets.md`).
    pub official: Option<f64>,
    /// A side-by-side comparison, e.g. "fused/generic 2.1x".
    pub note: String,
}

impl Row {
    /// How many times faster than the official PyTorch code (above 1: faster).
    pub fn ratio(&self) -> Option<f64> {
        self.official
            .map(|official| official / self.time.as_secs_f64())
    }
}

/// Which rows to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only these groups (all when empty).
    pub groups: Vec<String>,
    /// Only rows whose item name contains one of these, ignoring case (all when empty).
    pub items: Vec<String>,
    /// Smaller shapes and fewer repetitions, for a smoke run.
    pub quick: bool,
}

impl Options {
    pub fn wants_group(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g == group)
    }

    pub fn wants_item(&self, item: &str) -> bool {
        self.items.is_empty() || self.items.iter().any(|pattern| matches(pattern, item))
    }
}

/// Whether an `--item` pattern selects the row `item`: a substring, ignoring case.
pub fn matches(pattern: &str, item: &str) -> bool {
    item.to_lowercase().contains(&pattern.to_lowercase())
}

/// The groups `illume bench --group` accepts.
pub const GROUPS: &[&str] = &["ops", "kernels", "dualvitok", "mllm", "diffusion"];

/// A row's name: its group and item.
pub type ItemName = (&'static str, String);

/// Where a group's rows go, and which of them to measure.
///
/// A group asks [`Sink::wants`] for every row before it builds anything for it (inputs, a
/// model), and builds a shared setup only when one of its rows is wanted. A dry run
/// ([`items`]) uses the same calls to list the rows without measuring any.
pub struct Sink<'a> {
    options: &'a Options,
    out: Out<'a>,
}

enum Out<'a> {
    /// A dry run: record each row's name, measure nothing.
    List(&'a mut Vec<ItemName>),
    /// A real run: each row goes to `emit`; after its first error nothing more is measured.
    Measure {
        emit: &'a mut dyn FnMut(&Row) -> io::Result<()>,
        failed: Option<io::Error>,
    },
}

impl Sink<'_> {
    pub fn quick(&self) -> bool {
        self.options.quick
    }

    /// Whether to measure `group`'s row `item` (in a dry run: record its name, and no).
    pub fn wants(&mut self, group: &'static str, item: &str) -> bool {
        match &mut self.out {
            Out::List(names) => {
                // Rows of several shapes share one item name.
                if !names.iter().any(|(g, i)| *g == group && i == item) {
                    names.push((group, item.to_owned()));
                }
                false
            }
            Out::Measure { failed, .. } => failed.is_none() && self.options.wants_item(item),
        }
    }

    /// Hand over one measured row.
    pub fn emit(&mut self, row: Row) {
        if let Out::Measure { emit, failed } = &mut self.out {
            if failed.is_none() {
                *failed = emit(&row).err();
            }
        }
    }
}

/// A group's measuring function on backend `B`.
type Group<B> = fn(&burn::tensor::Device<B>, &mut Sink);

struct Suite<'a> {
    sink: Sink<'a>,
}

impl BackendTask for Suite<'_> {
    /// The error that stopped the run, if any.
    type Output = Option<io::Error>;

    fn run<B: IllumeBackend>(mut self, device: B::Device) -> Option<io::Error> {
        let groups: [(&str, Group<B>); 5] = [
            ("ops", ops::rows::<B>),
            ("kernels", kernels::rows::<B>),
            ("dualvitok", dualvitok::rows::<B>),
            ("diffusion", diffusion::rows::<B>),
            ("mllm", mllm::rows::<B>),
        ];
        for (name, group) in groups {
            if self.sink.options.wants_group(name) {
                group(&device, &mut self.sink);
            }
        }
        match self.sink.out {
            Out::Measure { failed, .. } => failed,
            Out::List(_) => None,
        }
    }
}

/// Why a bench run stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// `emit` failed (e.g. writing the JSON file); the rows after it were not measured.
    #[error(transparent)]
    Emit(io::Error),
}

/// Run the selected rows on one backend at `precision`, handing each row to `emit` as soon
/// as it is measured.
pub fn run(
    kind: BackendKind,
    precision: Precision,
    options: &Options,
    emit: &mut dyn FnMut(&Row) -> io::Result<()>,
) -> Result<(), Error> {
    let sink = Sink {
        options,
        out: Out::Measure { emit, failed: None },
    };
    match illume_backends::run_on(kind, precision, Suite { sink })? {
        Some(e) => Err(Error::Emit(e)),
        None => Ok(()),
    }
}

/// The names of the rows of the selected groups on one backend, measuring nothing (the
/// `items` filter is not applied: these are the names it can match).
pub fn items(
    kind: BackendKind,
    precision: Precision,
    options: &Options,
) -> Result<Vec<ItemName>, BackendError> {
    let mut names = Vec::new();
    let sink = Sink {
        options,
        out: Out::List(&mut names),
    };
    illume_backends::run_on(kind, precision, Suite { sink })?;
    Ok(names)
}

/// The float type `kind` computes in at `precision` (what the bench table's heading says).
pub fn compute_dtype(
    kind: BackendKind,
    precision: Precision,
) -> Result<&'static str, BackendError> {
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

/// Run `f` and return its result with the process's peak resident memory while it ran
/// (what was already resident, such as a loaded model, counts).
pub fn with_peak<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    memory::reset_peak();
    let out = f();
    (out, memory::peak())
}

/// Peak resident set size tracking through `/proc/self` (Linux); `None` elsewhere.
pub mod memory {
    /// Reset the kernel's high-water mark of this process's resident memory to the current
    /// resident size.
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

/// One row as a line of `illume bench --json` (JSON Lines). The field names and meanings
/// are a stable schema: scripts compare runs with it (documented in `--json`'s help).
#[derive(Debug, serde::Serialize)]
pub struct Record<'a> {
    pub group: &'a str,
    pub item: &'a str,
    pub shape: &'a str,
    pub backend: &'a str,
    pub precision: &'a str,
    pub seconds: f64,
    pub throughput: Option<f64>,
    pub unit: Option<&'a str>,
    pub peak_rss_bytes: Option<u64>,
    pub note: &'a str,
    pub official_seconds: Option<f64>,
    pub ratio: Option<f64>,
}

impl Row {
    /// This row measured on `backend` computing in `precision` (the heading's dtype name).
    pub fn record<'a>(&'a self, backend: BackendKind, precision: &'a str) -> Record<'a> {
        Record {
            group: self.group,
            // The table indents a model's stages under it; the name is the rest.
            item: self.item.trim(),
            shape: &self.shape,
            backend: backend.name(),
            precision,
            seconds: self.time.as_secs_f64(),
            throughput: self.throughput.map(|(value, _)| value),
            unit: self.throughput.map(|(_, unit)| unit),
            peak_rss_bytes: self.peak_rss,
            note: &self.note,
            official_seconds: self.official,
            ratio: self.ratio(),
        }
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
        let seconds = self.time.as_secs_f64();
        let time = if seconds >= 1.0 {
            format!("{seconds:.2} s")
        } else {
            format!("{:.2} ms", seconds * 1e3)
        };
        let throughput = self
            .throughput
            .map(|(v, unit)| format!("{v:.1} {unit}"))
            .unwrap_or_default();
        let rss = self
            .peak_rss
            .map(|b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64))
            .unwrap_or_default();
        // The official number in the row's own unit: the same work at its speed.
        let official = match (self.official, self.ratio(), self.throughput) {
            (_, Some(ratio), Some((v, unit))) => {
                format!("PyTorch {:.2} {unit}: {ratio:.2}x", v / ratio)
            }
            (Some(official), Some(ratio), None) => format!("PyTorch {official:.2} s: {ratio:.2}x"),
            _ => String::new(),
        };
        let note = match (official.is_empty(), self.note.is_empty()) {
            (false, false) => format!("{official}; {}", self.note),
            (false, true) => official,
            _ => self.note.clone(),
        };
        write!(
            f,
            "{:<10} {:<34} {:<26} {:>12} {:>18} {:>11}  {note}",
            self.group, self.item, self.shape, time, throughput, rss
        )
    }
}
