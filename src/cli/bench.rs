use illume::backends::BackendKind;
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

pub fn run(args: Args) -> super::CliResult {
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
        match bench::run(kind, &options) {
            Ok(rows) => println!(
                "{}",
                bench::Table {
                    backend: kind,
                    rows: &rows
                }
            ),
            // An explicitly requested backend that cannot run is an error; an implicit one
            // is reported and skipped.
            Err(e) if explicit => return Err(e.into()),
            Err(e) => println!("backend {kind}: skipped: {e}\n"),
        }
    }
    Ok(())
}
