//! `illume doctor`: which backends this binary has, what the device under each allows, and
//! whether each component computes on it what the CPU reference computes.

use std::time::Duration;

use illume::backends::{dtype_name, human_bytes, BackendKind, Precision};
use illume::parity::{self, Component};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

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

pub fn run(args: Args, precision: Precision, json: bool) -> super::CliResult {
    // Text for people, or (with --json) one document at the end.
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    let compiled = BackendKind::compiled();
    let names: Vec<&str> = compiled.iter().map(|k| k.name()).collect();
    say(format!(
        "illume {} — compiled backends: {}",
        env!("CARGO_PKG_VERSION"),
        names.join(", ")
    ));
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
        say(
            "only the CPU reference (ndarray) is compiled in: nothing to compare. Rebuild with \
             `--features wgpu` (Vulkan, Metal, DX12; Mesa lavapipe without a GPU) or \
             `--features cuda` to check a GPU."
                .into(),
        );
    }
    let components: Vec<Component> = Component::ALL
        .into_iter()
        .filter(|c| args.components.is_empty() || args.components.iter().any(|n| n == c.name()))
        .collect();

    let (mut passed, mut failed) = (0, 0);
    let mut reports = Vec::new();
    for kind in kinds {
        say(format!("\n== {kind}"));
        let mut report = json!({ "backend": kind.name() });
        if !kind.is_compiled() {
            say(format!(
                "  not compiled in: rebuild with `--features {kind}`"
            ));
            report["error"] = json!("not compiled in");
            reports.push(report);
            failed += 1;
            continue;
        }
        #[cfg(feature = "wgpu")]
        if kind == BackendKind::Wgpu {
            match illume::backends::wgpu_adapter() {
                Ok(adapter) => {
                    say(adapter.to_string());
                    report["adapter"] = json!(adapter.to_string().trim());
                }
                Err(e) => say(format!("  adapter: {e}")),
            }
        }
        let (limits, dtype) = match illume::backends::limits(kind, precision) {
            Ok(report) => report,
            Err(e) => {
                say(format!("  cannot start: {e}"));
                report["error"] = json!(e.to_string());
                reports.push(report);
                failed += 1;
                continue;
            }
        };
        let size = |bytes: Option<u64>| {
            bytes
                .map(human_bytes)
                .unwrap_or_else(|| "host memory".into())
        };
        say(format!(
            "  kernel binding limit:  {}",
            size(limits.max_storage_binding_size)
        ));
        say(format!(
            "  shared memory:         {}",
            size(limits.max_shared_memory_size.map(|b| b as u64))
        ));
        say(format!(
            "  half precision:        f16 {}, bf16 {}",
            if limits.f16 { "yes" } else { "no" },
            if limits.bf16 { "yes" } else { "no" }
        ));
        say(format!(
            "  computes in:           {} (--precision {precision})",
            dtype_name(dtype)
        ));
        report["limits"] = json!({
            "max_storage_binding_bytes": limits.max_storage_binding_size,
            "max_shared_memory_bytes": limits.max_shared_memory_size,
            "f16": limits.f16,
            "bf16": limits.bf16,
        });
        report["dtype"] = json!(dtype_name(dtype));
        if args.no_parity {
            reports.push(report);
            continue;
        }
        say("  parity against ndarray:".into());
        let mut checks_json = Vec::new();
        for &component in &components {
            let bar = spinner();
            bar.set_message(format!("{} on {kind} and ndarray", component.name()));
            let result = parity::check(kind, precision, component);
            bar.finish_and_clear();
            match result {
                Ok((_, checks)) => {
                    for check in checks {
                        say(format!("    {check}"));
                        checks_json.push(json!({
                            "component": component.name(),
                            "item": check.item,
                            "passed": check.passed(),
                            "detail": check.to_string(),
                        }));
                        if check.passed() {
                            passed += 1;
                        } else {
                            failed += 1;
                        }
                    }
                }
                Err(e) => {
                    say(format!("    {:<10} could not run: {e}", component.name()));
                    checks_json.push(json!({
                        "component": component.name(),
                        "passed": false,
                        "detail": format!("could not run: {e}"),
                    }));
                    failed += 1;
                }
            }
        }
        report["checks"] = json!(checks_json);
        reports.push(report);
    }
    if json {
        super::common::print_json(&json!({
            "version": env!("CARGO_PKG_VERSION"),
            "compiled": names,
            "backends": reports,
            "passed": passed,
            "failed": failed,
        }))?;
    } else {
        println!();
    }
    if failed > 0 {
        return Err(format!("{failed} check(s) failed, {passed} passed").into());
    }
    if passed > 0 {
        say(format!("all {passed} checks passed"));
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
