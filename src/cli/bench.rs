use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use illume::backends::{BackendKind, Precision};
use illume::bench;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Groups (--group, default all): ops (matmul and conv GFLOP/s), kernels (fused kernels \
against their generic compositions), dualvitok, mllm and diffusion (the models at their \
real shapes with random weights, against the official PyTorch timings where known).

Each row is printed as soon as it is measured. --item runs only the rows whose item name \
contains the pattern, and skips measuring the others; an --item that matches no row lists \
the item names. --quick is a smoke run on tiny shapes (its timings mean little).

Examples:
  illume bench --backends flex --group ops --item matmul --quick
  illume bench --backends flex --group mllm --item \"3B shape decode\" --jsonl runs.jsonl
      (one row at the real shapes, also written to runs.jsonl)
  illume bench --group ops --quick --json
      (the rows as JSON lines on stdout instead of tables)")]
pub struct Args {
    /// Backends to measure, comma-separated (default: every compiled backend that starts).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<BackendKind>,
    /// Only these groups (repeatable); see below. Default: all.
    #[arg(long = "group", value_parser = clap::builder::PossibleValuesParser::new(bench::GROUPS))]
    groups: Vec<String>,
    /// Only the rows whose item name contains PATTERN, ignoring case (repeatable: any of
    /// them). Rows not selected are not measured.
    #[arg(long = "item", value_name = "PATTERN")]
    items: Vec<String>,
    /// Also write every row to FILE as it is measured, one JSON object per line (the file
    /// is truncated first). Fields: group, item, shape, backend, precision (the dtype of
    /// the table heading), seconds (median wall time of one run), throughput and unit
    /// (null when none), peak_rss_bytes (peak resident memory while the row ran; null when
    /// unknown), note, official_seconds (the official PyTorch time for the same work; null
    /// when none) and ratio (official_seconds / seconds: above 1 is faster; null when none).
    /// With the global --json, the same objects go to stdout instead of the tables.
    #[arg(long, value_name = "FILE")]
    jsonl: Option<PathBuf>,
    /// Smaller shapes and fewer repetitions (a smoke run, not a measurement).
    #[arg(long)]
    quick: bool,
}

pub fn run(args: Args, precision: Precision, json_stdout: bool) -> super::CliResult {
    let explicit = !args.backends.is_empty();
    let kinds = if explicit {
        args.backends
    } else {
        BackendKind::compiled()
    };
    let options = bench::Options {
        groups: args.groups,
        items: args.items,
        quick: args.quick,
    };
    // Starting each device first gives the heading its float type, and reports a backend
    // that cannot start before any measuring.
    let mut backends = Vec::new();
    for kind in kinds {
        match bench::compute_dtype(kind, precision) {
            Ok(dtype) => backends.push((kind, dtype)),
            // An explicitly requested backend that cannot run is an error; an implicit one
            // is reported and skipped.
            Err(e) if explicit => return Err(e.into()),
            Err(e) => eprintln!("backend {kind}: skipped: {e}"),
        }
    }
    check_items(&backends, precision, &options)?;
    let mut json = match &args.jsonl {
        Some(path) => Some((open_json(path)?, path)),
        None => None,
    };
    for (kind, dtype) in backends {
        if !json_stdout {
            println!("{}", bench::header(kind, dtype));
        }
        let mut emit = |row: &bench::Row| -> io::Result<()> {
            if json_stdout {
                let line = serde_json::to_string(&row.record(kind, dtype))?;
                let mut out = io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()?;
            } else {
                println!("{row}");
            }
            if let Some((file, path)) = &mut json {
                // Flushed per row: a stopped run keeps what it measured.
                serde_json::to_writer(&mut *file, &row.record(kind, dtype))
                    .map_err(io::Error::from)
                    .and_then(|()| writeln!(file))
                    .and_then(|()| file.flush())
                    .map_err(|e| io::Error::new(e.kind(), json_error(path, &e)))?;
            }
            Ok(())
        };
        bench::run(kind, precision, &options, &mut emit)?;
        if !json_stdout {
            println!();
        }
    }
    Ok(())
}

/// Every `--item` must name a row of the selected groups on some backend: a typo is an
/// error before hours of measuring, not an empty table.
fn check_items(
    backends: &[(BackendKind, &str)],
    precision: Precision,
    options: &bench::Options,
) -> super::CliResult {
    // With no backend started, nothing is measured and there are no names to check.
    if options.items.is_empty() || backends.is_empty() {
        return Ok(());
    }
    let mut names: Vec<bench::ItemName> = Vec::new();
    for &(kind, _) in backends {
        for name in bench::items(kind, precision, options)? {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for pattern in &options.items {
        if !names.iter().any(|(_, item)| bench::matches(pattern, item)) {
            let list: Vec<String> = names
                .iter()
                .map(|(group, item)| format!("  {group}: {}", item.trim()))
                .collect();
            return Err(format!(
                "--item {pattern:?} matches no row of the selected groups; the items are:\n{}",
                list.join("\n")
            )
            .into());
        }
    }
    Ok(())
}

/// Create (or truncate) the `--jsonl` file before measuring, so a bad path fails at once.
fn open_json(path: &Path) -> Result<BufWriter<File>, String> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| json_error(path, &e))
}

fn json_error(path: &Path, e: &io::Error) -> String {
    format!("--jsonl {}: {e}", path.display())
}
