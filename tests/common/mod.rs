//! The cross-backend parity test body shared by tests/backend_parity.rs (f32) and
//! tests/half_precision.rs (f16/bf16): one component on one backend at one precision
//! against ndarray in f32, through `illume::parity` (what `illume doctor` runs).

use std::sync::Once;

use burn::tensor::FloatDType;
use illume::backends::{BackendKind, Precision};
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

/// Run `component` on `kind` at `precision` (skipped, with the reason printed, where a
/// GPU device does not answer) and assert every check passes.
pub fn assert_parity(kind: BackendKind, precision: Precision, component: Component) {
    if !kind.is_cpu() && !illume_test_harness::available(kind, precision) {
        return;
    }
    demos();
    let (dtype, checks) = check(kind, precision, component)
        .unwrap_or_else(|e| panic!("{} on {kind} in {precision}: {e}", component.name()));
    let expected = match precision {
        Precision::F16 => FloatDType::F16,
        Precision::Bf16 => FloatDType::BF16,
        Precision::F32 | Precision::Auto => FloatDType::F32,
    };
    assert_eq!(dtype, expected, "{kind} did not compute in {precision}");
    assert!(!checks.is_empty(), "{}: nothing compared", component.name());
    for c in &checks {
        println!("  {c}");
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed())
        .map(|c| c.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} checks failed on {kind} in {precision}:\n{}",
        failed.len(),
        checks.len(),
        failed.join("\n")
    );
}

/// One test per component on `$kind` at `$precision`, in module `$module`.
#[macro_export]
macro_rules! parity_tests {
    ($module:ident, $kind:expr, $precision:expr) => {
        mod $module {
            use illume::backends::{BackendKind, Precision};
            use illume::parity::Component;

            #[test]
            fn kernels() {
                $crate::common::assert_parity($kind, $precision, Component::Kernels);
            }

            #[test]
            fn dualvitok() {
                $crate::common::assert_parity($kind, $precision, Component::DualViTok);
            }

            #[test]
            fn mllm() {
                $crate::common::assert_parity($kind, $precision, Component::Mllm);
            }

            #[test]
            fn diffusion() {
                $crate::common::assert_parity($kind, $precision, Component::Diffusion);
            }
        }
    };
}
