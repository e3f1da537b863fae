//! Fused kernels against the generic compositions they replace: the same operation on the
//! same backend in the same run, `reference::*` ("generic") then the backend's dispatch
//! ("fused"), with the speed-up in the note column. On ndarray the dispatch is the generic
//! composition itself (ratio ≈ 1: there is no fused kernel on the CPU backend).

use std::time::Duration;

use burn::tensor::{backend::Backend, BasicOps, DType, Distribution, Tensor};
use illume_backends::{float_dtype, reference, IllumeBackend, Modulation};

use super::{time_median, with_peak, Row, Sink};

const GROUP: &str = "kernels";

/// How much work one call does, for the throughput column.
enum Work {
    /// Bytes read and written once (memory-bound operations).
    Bytes(f64),
    /// Floating-point operations (compute-bound operations).
    Flops(f64),
}

/// One operation's two rows and which of them to measure.
struct Pair<'a> {
    item: &'a str,
    generic: bool,
    fused: bool,
}

impl Pair<'_> {
    fn any(&self) -> bool {
        self.generic || self.fused
    }
}

/// Ask the sink for both rows of `item` (both asked: a dry run records both names).
fn wanted<'a>(sink: &mut Sink, item: &'a str) -> Pair<'a> {
    let generic = sink.wants(GROUP, &format!("{item} generic"));
    let fused = sink.wants(GROUP, &format!("{item} fused"));
    Pair {
        item,
        generic,
        fused,
    }
}

/// Time the generic composition and the dispatched operation side by side (each when its
/// row is wanted) and emit their rows.
fn compare<B: Backend, const D: usize, K: BasicOps<B>>(
    sink: &mut Sink,
    pair: &Pair,
    shape: String,
    work: Work,
    mut generic: impl FnMut() -> Tensor<B, D, K>,
    mut fused: impl FnMut() -> Tensor<B, D, K>,
) {
    let (warmup, iters) = if sink.quick() { (1, 3) } else { (2, 7) };
    let measure = |f: &mut dyn FnMut() -> Tensor<B, D, K>| {
        // Reading one value back waits for the whole computation.
        with_peak(|| {
            time_median(warmup, iters, || {
                let _ = f().flatten::<1>(0, D - 1).narrow(0, 0, 1).into_data();
            })
        })
    };
    let throughput = |t: Duration| match work {
        Work::Bytes(b) => Some((b / t.as_secs_f64() / 1e9, "GB/s")),
        Work::Flops(f) => Some((f / t.as_secs_f64() / 1e9, "GFLOP/s")),
    };
    let item = pair.item;
    let generic_time = pair.generic.then(|| {
        let (time, peak_rss) = measure(&mut generic);
        sink.emit(Row {
            group: GROUP,
            item: format!("{item} generic"),
            shape: shape.clone(),
            time,
            throughput: throughput(time),
            peak_rss,
            ..Row::default()
        });
        time
    });
    if pair.fused {
        let (time, peak_rss) = measure(&mut fused);
        // The speed-up needs both rows of this run.
        let note = generic_time
            .map(|generic| {
                format!(
                    "fused/generic speed-up {:.2}x",
                    generic.as_secs_f64() / time.as_secs_f64()
                )
            })
            .unwrap_or_default();
        sink.emit(Row {
            group: GROUP,
            item: format!("{item} fused"),
            shape,
            time,
            throughput: throughput(time),
            peak_rss,
            note,
            ..Row::default()
        });
    }
}

fn normal<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

pub fn rows<B: IllumeBackend>(device: &B::Device, sink: &mut Sink) {
    let quick = sink.quick();
    // Bytes of `elements` values in the compute type (f32, or f16/bf16 with --precision).
    let element_size = DType::from(float_dtype::<B>(device)).size();
    let bytes = |elements: usize| (elements * element_size) as f64;

    // RMSNorm and the SwiGLU activation at the 3B model's prefill of a 512² image prompt
    // (1404 positions; hidden 2048, intermediate 11008).
    let tokens = if quick { 256 } else { 1404 };
    let pair = wanted(sink, "rms_norm");
    if pair.any() {
        let x = normal::<B, 2>([tokens, 2048], device);
        let w = normal::<B, 1>([2048], device);
        compare(
            sink,
            &pair,
            format!("[{tokens}, 2048]"),
            Work::Bytes(bytes(2 * tokens * 2048)),
            || reference::rms_norm(x.clone(), w.clone(), 1e-6),
            || B::rms_norm(x.clone(), w.clone(), 1e-6),
        );
    }
    let pair = wanted(sink, "silu_mul");
    if pair.any() {
        let gate = normal::<B, 2>([tokens, 11008], device);
        let up = normal::<B, 2>([tokens, 11008], device);
        compare(
            sink,
            &pair,
            format!("[{tokens}, 11008]"),
            Work::Bytes(bytes(3 * tokens * 11008)),
            || reference::silu_mul(gate.clone(), up.clone()),
            || B::silu_mul(gate.clone(), up.clone()),
        );
    }

    // RoPE on the 3B model's queries (16 heads of 128), as a transposed projection view.
    let pair = wanted(sink, "rotary (LLM)");
    if pair.any() {
        let q = normal::<B, 4>([1, tokens, 16, 128], device).swap_dims(1, 2);
        let cos = normal::<B, 2>([tokens, 128], device);
        let sin = normal::<B, 2>([tokens, 128], device);
        compare(
            sink,
            &pair,
            format!("[1, 16, {tokens}, 128]"),
            Work::Bytes(bytes(2 * 16 * tokens * 128)),
            || reference::rotary(q.clone(), cos.clone(), sin.clone()),
            || B::rotary(q.clone(), cos.clone(), sin.clone()),
        );
    }

    // GroupNorm + SiLU and SpatialNorm + SiLU at the MoVQ decoder's last level (384
    // channels at full resolution, 32 groups).
    let group_norm = wanted(sink, "group_norm+silu");
    let spatial_norm = wanted(sink, "spatial_norm+silu");
    if group_norm.any() || spatial_norm.any() {
        let (c, hw) = if quick { (128, 64) } else { (384, 256) };
        let x = normal::<B, 4>([1, c, hw, hw], device);
        let gamma = normal::<B, 1>([c], device);
        let beta = normal::<B, 1>([c], device);
        let elements = c * hw * hw;
        let shape = format!("[1, {c}, {hw}, {hw}] / 32");
        if group_norm.any() {
            compare(
                sink,
                &group_norm,
                shape.clone(),
                Work::Bytes(bytes(3 * elements)),
                || {
                    reference::group_norm(
                        x.clone(),
                        32,
                        Some(gamma.clone()),
                        Some(beta.clone()),
                        1e-6,
                        true,
                    )
                },
                || {
                    B::group_norm(
                        x.clone(),
                        32,
                        Some(gamma.clone()),
                        Some(beta.clone()),
                        1e-6,
                        true,
                    )
                },
            );
        }
        if spatial_norm.any() {
            let modulation = Modulation {
                scale: normal::<B, 4>([1, c, hw, hw], device),
                shift: normal::<B, 4>([1, c, hw, hw], device),
            };
            compare(
                sink,
                &spatial_norm,
                shape,
                Work::Bytes(bytes(5 * elements)),
                || {
                    reference::spatial_norm(
                        x.clone(),
                        32,
                        Some(gamma.clone()),
                        Some(beta.clone()),
                        1e-6,
                        modulation.clone(),
                        true,
                    )
                },
                || {
                    B::spatial_norm(
                        x.clone(),
                        32,
                        Some(gamma.clone()),
                        Some(beta.clone()),
                        1e-6,
                        modulation.clone(),
                        true,
                    )
                },
            );
        }
    }

    // SimVQ look-up of the pixel codes of a 512² image (1024 × 32 against 98,304 codes).
    let pair = wanted(sink, "nearest_code");
    if pair.any() {
        let (n, k) = if quick { (256, 32768) } else { (1024, 98304) };
        let z = normal::<B, 2>([n, 32], device);
        let codebook = normal::<B, 2>([k, 32], device);
        compare(
            sink,
            &pair,
            format!("[{n}, 32] x [{k}, 32]"),
            Work::Flops(3.0 * (n * k * 32) as f64),
            || reference::nearest_code(z.clone(), codebook.clone(), reference::NEAREST_CODE_TILE),
            || B::nearest_code(z.clone(), codebook.clone()),
        );
    }

    // Attention: the 3B model's causal prefill (16 query heads, 2 KV heads) and one decode
    // step against a 1404-position cache; the ViT's bidirectional attention (16 heads of 80).
    let attention = |sink: &mut Sink, item: &str, q: [usize; 4], kv: [usize; 2], causal| {
        let pair = wanted(sink, item);
        if !pair.any() {
            return;
        }
        let [b, h, sq, d] = q;
        let [hk, sk] = kv;
        let q = normal::<B, 4>([b, h, sq, d], device);
        let k = normal::<B, 4>([b, hk, sk, d], device);
        let v = normal::<B, 4>([b, hk, sk, d], device);
        let scale = 1.0 / (d as f64).sqrt();
        let pairs = if causal {
            sq * sk - sq * (sq - 1) / 2
        } else {
            sq * sk
        };
        compare(
            sink,
            &pair,
            format!("q[{b},{h},{sq},{d}] kv[{hk},{sk}]"),
            Work::Flops(4.0 * (b * h * pairs * d) as f64),
            || reference::attention(q.clone(), k.clone(), v.clone(), scale, causal),
            || IllumeBackend::attention(q.clone(), k.clone(), v.clone(), scale, causal),
        );
    };
    let prefill = if quick { 128 } else { 512 };
    attention(
        sink,
        "attention causal",
        [1, 16, prefill, 128],
        [2, prefill],
        true,
    );
    let cache = if quick { 256 } else { 1404 };
    attention(sink, "attention decode", [1, 16, 1, 128], [2, cache], true);
    let patches = if quick { 324 } else { 1296 };
    attention(
        sink,
        "attention ViT",
        [1, 16, patches, 80],
        [16, patches],
        false,
    );
}
