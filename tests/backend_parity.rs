//! Cross-backend parity: every component — the fused hot-path kernels and the demo
//! DualViTok, MLLM and diffusion decoder (random weights at small real-architecture shapes)
//! — on each compiled backend against ndarray, through `illume::parity` (what
//! `illume doctor` runs). Float outputs agree within the tolerance stated beside each item
//! in `src/parity.rs`; token ids and VQ indices must be identical.
//!
//! ndarray is the reference, so its tests run everything twice and check that the CPU
//! results are reproducible; wgpu runs with `--features wgpu` (Mesa lavapipe without a
//! GPU); cuda with `--features cuda` where a device answers (skipped with the reason
//! printed otherwise).

use std::sync::Once;

use illume::backends::BackendKind;
use illume::parity::{check, Component};

/// Write the demo models once, before tests on several threads read them.
fn demos() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        illume::demo::materialize("dualvitok", illume::dualvitok::demo::write).expect("demo");
        illume::demo::materialize("mllm", illume::mllm::demo::write).expect("demo");
        illume::demo::materialize("diffusion", illume::diffusion::demo::write).expect("demo");
    });
}

fn assert_parity(kind: BackendKind, component: Component) {
    demos();
    let checks =
        check(kind, component).unwrap_or_else(|e| panic!("{} on {kind}: {e}", component.name()));
    assert!(
        !checks.is_empty(),
        "{}: nothing was compared",
        component.name()
    );
    for c in &checks {
        println!("  {c}");
    }
    let failed = checks.iter().filter(|c| !c.passed()).count();
    assert_eq!(
        failed,
        0,
        "{failed} of {} checks failed on {kind}",
        checks.len()
    );
}

macro_rules! parity_tests {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            fn run(component: Component) {
                if $kind == BackendKind::Cuda {
                    if let Err(e) = illume::backends::check_available($kind) {
                        illume_test_harness::report_skip("cuda", &e);
                        return;
                    }
                }
                assert_parity($kind, component);
            }

            #[test]
            fn kernels() {
                run(Component::Kernels);
            }

            #[test]
            fn dualvitok() {
                run(Component::DualViTok);
            }

            #[test]
            fn mllm() {
                run(Component::Mllm);
            }

            #[test]
            fn diffusion() {
                run(Component::Diffusion);
            }
        }
    };
}

parity_tests!(ndarray_backend, BackendKind::NdArray);
#[cfg(feature = "wgpu")]
parity_tests!(wgpu_backend, BackendKind::Wgpu);
#[cfg(feature = "cuda")]
parity_tests!(cuda_backend, BackendKind::Cuda);
