use illume::backends::{BackendKind, Precision};
use illume::bench;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backends to measure, comma-separated (default: every compiled backend that starts).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<BackendKind>,
    /// Only these groups (repeatable): ops = matmul/conv GFLOP/s; model groups as listed by
    /// `--help`. Default: all.
    #[arg(long = "group", value_parser = clap::builder::PossibleValuesParser::new(bench::GROUPS))]
    groups: Vec<String>,
    /// Smaller shapes and fewer repetitions (a smoke run, not a measurement).
    #[arg(long)]
    quick: bool,
}

pub fn run(args: Args, precision: Precision) -> super::CliResult {
    let explicit = !args.backends.is_empty();
    let kinds = if explicit {
        args.backends
    } else {
        BackendKind::compiled()
    };
    let options = bench::Options {
        groups: args.groups,
        quick: args.quick,
    };
    for kind in kinds {
        // Starting the device first gives the heading its float type, and reports a backend
        // that cannot start before any measuring.
        let dtype = match bench::compute_dtype(kind, precision) {
            Ok(dtype) => dtype,
            // An explicitly requested backend that cannot run is an error; an implicit one
            // is reported and skipped.
            Err(e) if explicit => return Err(e.into()),
            Err(e) => {
                println!("backend {kind}: skipped: {e}\n");
                continue;
            }
        };
        println!("{}", bench::header(kind, dtype));
        bench::run(kind, precision, &options, |rows| {
            for row in rows {
                println!("{row}");
            }
        })?;
        println!();
    }
    Ok(())
}
