#!/usr/bin/env bash
# One prepared GPU check for a machine with an NVIDIA GPU (sized for an H200 in < 8 minutes
# after the build): build with CUDA, run the CUDA tests (official fixtures, kernels in bf16;
# a CUDA test that cannot start fails here instead of skipping), `illume doctor` on CUDA in
# f32 and bf16 (cross-backend parity of every demo model), then `illume bench` at
# real shapes. Everything it prints also goes to $OUT/gpu-check.log (or ./gpu-check.log).
#
#   scripts/gpu-check.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-.}/gpu-check.log"
exec > >(tee "$log") 2>&1

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}" CARGO_TERM_COLOR=never
export ILLUME_REQUIRE_BACKENDS=cuda
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
nproc

step "CUDA parity, f32 and bf16 (official fixtures and cross-backend)"
timeout 1500 cargo test --workspace --features cuda -j "$(nproc)" -- cuda_backend
tests=$?

step "cross-backend parity of the demo models on CUDA (illume doctor), f32 and bf16"
cargo build --release --features cuda
timeout 600 target/release/illume doctor --backends cuda --precision f32
doctor_f32=$?
timeout 600 target/release/illume doctor --backends cuda --precision bf16
doctor_bf16=$?

step "bench on CUDA at real shapes"
timeout 900 target/release/illume --backend cuda bench --backends cuda
bench=$?

step "done: tests $tests, doctor f32 $doctor_f32, doctor bf16 $doctor_bf16, bench $bench"
[ "$tests" = 0 ] && [ "$doctor_f32" = 0 ] && [ "$doctor_bf16" = 0 ] && [ "$bench" = 0 ]
