//! `illume doctor`: which backends this binary has, what the device under each allows, and
//! whether each component computes on it what the CPU reference computes.

use std::time::Duration;

use illume::backends::{dtype_name, human_bytes, BackendKind, Precision};
use illume::parity::{self, Component};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Checks, per backend: that the device starts; its adapter (wgpu: name, \
type, driver), its limits (largest buffer and storage binding — the cap that makes the MLLM \
shard its 283k-row vocabulary — shared memory, f16/bf16 support); then the parity of every \
component against ndarray: the fused kernels, and the built-in demo DualViTok, MLLM and \
diffusion decoder (random weights, tiny widths, real architectures). Floats must agree within \
the stated tolerance, token ids and VQ indices exactly. The device runs at the global \
--precision (auto: what the models would run in); in f16/bf16 the float tolerance widens \
(3e-2 and 2.4e-1 of the output's scale) and one id in eight may differ. The exit status is \
non-zero when a check fails.\n\nExamples:\n  cargo run --release --features wgpu -- doctor\n  \
illume doctor --backends cuda --component kernels\n  illume doctor --precision f16"
)]
pub struct Args {
    /// Backends to check, comma-separated (default: every compiled backend but ndarray, the
    /// reference the others are compared with: flex, wgpu, cuda).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<BackendKind>,
    /// Only these components (repeatable; default: all).
    #[arg(long = "component", value_parser = clap::builder::PossibleValuesParser::new(
        Component::ALL.map(Component::name)))]
    components: Vec<String>,
    /// Report the devices and their limits only, without parity checks.
    #[arg(long)]
    no_parity: bool,
}

pub fn run(args: Args, precision: Precision) -> super::CliResult {
    let compiled = BackendKind::compiled();
    let names: Vec<&str> = compiled.iter().map(|k| k.name()).collect();
    println!(
        "illume {} — compiled backends: {}",
        env!("CARGO_PKG_VERSION"),
        names.join(", ")
    );
    let kinds: Vec<BackendKind> = if args.backends.is_empty() {
        compiled
            .iter()
            .copied()
            .filter(|&k| k != BackendKind::NdArray)
            .collect()
    } else {
        args.backends.clone()
    };
    if kinds.is_empty() {
        println!(
            "only the CPU reference (ndarray) is compiled in: nothing to compare. Rebuild with \
             `--features wgpu` (Vulkan, Metal, DX12; Mesa lavapipe without a GPU) or \
             `--features cuda` to check a GPU."
        );
    }
    let components: Vec<Component> = Component::ALL
        .into_iter()
        .filter(|c| args.components.is_empty() || args.components.iter().any(|n| n == c.name()))
        .collect();

    let (mut passed, mut failed) = (0, 0);
    for kind in kinds {
        println!("\n== {kind}");
        if !kind.is_compiled() {
            println!("  not compiled in: rebuild with `--features {kind}`");
            failed += 1;
            continue;
        }
        #[cfg(feature = "wgpu")]
        if kind == BackendKind::Wgpu {
            match illume::backends::wgpu_adapter() {
                Ok(adapter) => println!("{adapter}"),
                Err(e) => println!("  adapter: {e}"),
            }
        }
        let (limits, dtype) = match illume::backends::limits(kind, precision) {
            Ok(report) => report,
            Err(e) => {
                println!("  cannot start: {e}");
                failed += 1;
                continue;
            }
        };
        let size = |bytes: Option<u64>| {
            bytes
                .map(human_bytes)
                .unwrap_or_else(|| "host memory".into())
        };
        println!(
            "  kernel binding limit:  {}",
            size(limits.max_storage_binding_size)
        );
        println!(
            "  shared memory:         {}",
            size(limits.max_shared_memory_size.map(|b| b as u64))
        );
        println!(
            "  half precision:        f16 {}, bf16 {}",
            if limits.f16 { "yes" } else { "no" },
            if limits.bf16 { "yes" } else { "no" }
        );
        println!(
            "  computes in:           {} (--precision {precision})",
            dtype_name(dtype)
        );
        if args.no_parity {
            continue;
        }
        println!("  parity against ndarray:");
        for &component in &components {
            let bar = spinner();
            bar.set_message(format!("{} on {kind} and ndarray", component.name()));
            let result = parity::check(kind, precision, component);
            bar.finish_and_clear();
            match result {
                Ok((_, checks)) => {
                    for check in checks {
                        println!("    {check}");
                        if check.passed() {
                            passed += 1;
                        } else {
                            failed += 1;
                        }
                    }
                }
                Err(e) => {
                    println!("    {:<10} could not run: {e}", component.name());
                    failed += 1;
                }
            }
        }
    }
    println!();
    if failed > 0 {
        return Err(format!("{failed} check(s) failed, {passed} passed").into());
    }
    if passed > 0 {
        println!("all {passed} checks passed");
    }
    Ok(())
}

/// A spinner on stderr naming the component being checked.
fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("  {spinner} {msg} ({elapsed})").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
