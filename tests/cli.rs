//! The `illume` binary end to end: what users see on good and bad input.

use std::process::{Command, Output};

use illume_test_harness::fixture_sets;

fn illume(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_illume"))
        .args(args)
        .env_remove("ILLUME_BACKEND")
        .output()
        .expect("the illume binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn inspect_names_each_official_checkpoint_kind() {
    let cases = [
        ("dualvitok", "pytorch_model.bin", "DualViTok"),
        ("dualvitok", "model.safetensors", "DualViTok"),
        ("mllm", "", "ILLUME+ MLLM"),
        ("sdxl_decoder", "", "SDXL diffusion decoder"),
    ];
    for (component, file, kind) in cases {
        for set in fixture_sets(component) {
            let path = set.dir.join(file);
            let out = illume(&["inspect", path.to_str().unwrap()]);
            let stdout = text(&out.stdout);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                text(&out.stderr)
            );
            assert!(stdout.contains(&format!("kind:       {kind}")), "{stdout}");
            assert!(stdout.contains("tensors:"), "{stdout}");
            assert!(
                stdout.contains("parameters by top-level prefix:"),
                "{stdout}"
            );
        }
    }
}

#[test]
fn inspect_of_a_missing_path_is_an_error_not_a_panic() {
    let out = illume(&["inspect", "/nonexistent/checkpoint.bin"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("/nonexistent/checkpoint.bin"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_repo_id_says_where_it_looked() {
    let out = illume(&["inspect", "Nobody/no-such-model"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Hugging Face cache"), "{stderr}");
    assert!(stderr.contains("huggingface-cli download"), "{stderr}");
}

#[test]
fn unknown_backend_lists_the_choices() {
    let out = illume(&["--backend", "tpu", "bench"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ndarray, wgpu, cuda"), "{stderr}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn backend_not_compiled_in_names_the_feature() {
    let out = illume(&["bench", "--backends", "cuda", "--quick"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--features cuda"), "{stderr}");
}

#[test]
fn bench_prints_a_table_per_backend() {
    let out = illume(&[
        "bench",
        "--backends",
        "ndarray",
        "--group",
        "ops",
        "--quick",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("backend: ndarray"), "{stdout}");
    assert!(stdout.contains("matmul f32"), "{stdout}");
    assert!(stdout.contains("GFLOP/s"), "{stdout}");
}
