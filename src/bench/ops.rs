//! Raw throughput of the backend: what the hardware gives before any model code.

use burn::tensor::{ops::ConvOptions, Distribution, Tensor};
use illume_backends::{dtype_name, float_dtype, IllumeBackend};

use super::{memory, time_median, Options, Row};

pub fn rows<B: IllumeBackend>(device: &B::Device, options: &Options) -> Vec<Row> {
    let mut rows = Vec::new();
    let dtype = dtype_name(float_dtype::<B>(device));
    let (warmup, iters) = if options.quick { (1, 3) } else { (2, 7) };
    let sizes: &[usize] = if options.quick {
        &[256, 512]
    } else {
        &[512, 1024, 2048]
    };
    for &n in sizes {
        let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
        memory::reset_peak();
        let time = time_median(warmup, iters, || {
            let _ = a.clone().matmul(b.clone()).slice([0..1, 0..1]).into_data();
        });
        let flops = 2.0 * (n as f64).powi(3);
        rows.push(Row {
            group: "ops",
            item: format!("matmul {dtype}"),
            shape: format!("{n}x{n} @ {n}x{n}"),
            time,
            throughput: Some((flops / time.as_secs_f64() / 1e9, "GFLOP/s")),
            peak_rss: memory::peak(),
            note: String::new(),
        });
    }
    let (c, hw): (usize, usize) = if options.quick { (64, 32) } else { (256, 64) };
    let x = Tensor::<B, 4>::random([1, c, hw, hw], Distribution::Normal(0.0, 1.0), device);
    let w = Tensor::<B, 4>::random([c, c, 3, 3], Distribution::Normal(0.0, 0.05), device);
    memory::reset_peak();
    let time = time_median(warmup, iters, || {
        // The convolution the models run (IllumeBackend's, per backend).
        let y = B::convolve2d(
            x.clone(),
            w.clone(),
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1).into(),
        );
        let _ = y.slice([0..1, 0..1, 0..1, 0..1]).into_data();
    });
    let flops = 2.0 * (c * c * 9 * hw * hw) as f64;
    rows.push(Row {
        group: "ops",
        item: format!("conv2d 3x3 {dtype}"),
        shape: format!("[1,{c},{hw},{hw}] -> {c}"),
        time,
        throughput: Some((flops / time.as_secs_f64() / 1e9, "GFLOP/s")),
        peak_rss: memory::peak(),
        note: String::new(),
    });
    rows
}
