//! Raw throughput of the backend: what the hardware gives before any model code.

use burn::tensor::{ops::ConvOptions, Distribution, Tensor};
use illume_backends::{dtype_name, float_dtype, IllumeBackend};

use super::{time_median, with_peak, Row, Sink};

const GROUP: &str = "ops";

/// Official PyTorch (oneDNN) GEMM 2048³ on this machine kind, GFLOP/s (`perf_targets.md`).
fn official_gemm_2048(dtype: &str) -> Option<f64> {
    match dtype {
        "f32" => Some(223.0),
        "bf16" => Some(896.0),
        _ => None,
    }
}

pub fn rows<B: IllumeBackend>(device: &B::Device, sink: &mut Sink) {
    let dtype = dtype_name(float_dtype::<B>(device));
    let matmul = format!("matmul {dtype}");
    let conv = format!("conv2d 3x3 {dtype}");
    let (want_matmul, want_conv) = (sink.wants(GROUP, &matmul), sink.wants(GROUP, &conv));
    let quick = sink.quick();
    let (warmup, iters) = if quick { (1, 3) } else { (2, 7) };
    let sizes: &[usize] = if quick {
        &[256, 512]
    } else {
        &[512, 1024, 2048]
    };
    if want_matmul {
        for &n in sizes {
            let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
            let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
            let (time, peak_rss) = with_peak(|| {
                time_median(warmup, iters, || {
                    let _ = a.clone().matmul(b.clone()).slice([0..1, 0..1]).into_data();
                })
            });
            let flops = 2.0 * (n as f64).powi(3);
            let official = official_gemm_2048(dtype)
                .filter(|_| n == 2048)
                .map(|gflops| flops / (gflops * 1e9));
            sink.emit(Row {
                group: GROUP,
                item: matmul.clone(),
                shape: format!("{n}x{n} @ {n}x{n}"),
                time,
                throughput: Some((flops / time.as_secs_f64() / 1e9, "GFLOP/s")),
                peak_rss,
                official,
                note: String::new(),
            });
        }
    }
    if !want_conv {
        return;
    }
    let (c, hw): (usize, usize) = if quick { (64, 32) } else { (256, 64) };
    let x = Tensor::<B, 4>::random([1, c, hw, hw], Distribution::Normal(0.0, 1.0), device);
    let w = Tensor::<B, 4>::random([c, c, 3, 3], Distribution::Normal(0.0, 0.05), device);
    let (time, peak_rss) = with_peak(|| {
        time_median(warmup, iters, || {
            // The convolution the models run (IllumeBackend's, per backend).
            let y = B::convolve2d(
                x.clone(),
                w.clone(),
                None,
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1).into(),
            );
            let _ = y.slice([0..1, 0..1, 0..1, 0..1]).into_data();
        })
    });
    let flops = 2.0 * (c * c * 9 * hw * hw) as f64;
    sink.emit(Row {
        group: GROUP,
        item: conv,
        shape: format!("[1,{c},{hw},{hw}] -> {c}"),
        time,
        throughput: Some((flops / time.as_secs_f64() / 1e9, "GFLOP/s")),
        peak_rss,
        official: None,
        note: String::new(),
    });
}
