//! DualViTok at the release configuration (random weights): encode and decode of 256² and
//! 512² images, plus the stages that dominate them, against the official PyTorch timings
//! measured on this machine kind (`perf_targets.md`: torch 2.6 fp32, 2 threads).
//!
//! `--quick` runs the tiny demo configuration at 64² and 128² instead (a smoke run).

use burn::tensor::{Distribution, Tensor};
use illume_backends::IllumeBackend;
use illume_dualvitok::{demo, preprocess, DualViTok, DualViTokConfig, DualViTokModel};

use super::{memory, time_median, Options, Row};

/// Official PyTorch seconds at (256², 512²): encode, decode, ViT, pixel encoder, and the
/// pixel SimVQ search (1024 tokens, 512² only).
const OFFICIAL_ENCODE: [f64; 2] = [2.98, 16.5];
const OFFICIAL_DECODE: [f64; 2] = [8.36, 35.8];
const OFFICIAL_VIT: [f64; 2] = [2.32, 13.4];
const OFFICIAL_PIXEL_ENCODER: [f64; 2] = [0.57, 2.79];
const OFFICIAL_NEAREST_512: f64 = 0.227;

fn versus(official: Option<f64>, seconds: f64) -> String {
    match official {
        Some(reference) => format!(
            "PyTorch {reference:.2} s: {:.2}x its speed",
            reference / seconds
        ),
        None => String::new(),
    }
}

pub fn rows<B: IllumeBackend>(device: &B::Device, options: &Options) -> Vec<Row> {
    let (config, sizes, which) = if options.quick {
        (demo::config(), [64, 128], "demo config")
    } else {
        (DualViTokConfig::official(), [256, 512], "release config")
    };
    let model = demo::fill_random(DualViTokModel::<B>::new(&config, device), 7, device);
    let tokenizer = DualViTok::from_model(model, config).with_max_pixels(usize::MAX);
    let mut rows = Vec::new();
    let row = |item: &str, shape: String, time, official: Option<f64>| Row {
        group: "dualvitok",
        item: format!("{item} ({which})"),
        shape,
        time,
        throughput: None,
        peak_rss: memory::peak(),
        note: versus(official, time.as_secs_f64()),
    };
    for (i, size) in sizes.into_iter().enumerate() {
        let official = |table: [f64; 2]| (!options.quick).then_some(table[i]);
        let image =
            Tensor::<B, 4>::random([1, 3, size, size], Distribution::Uniform(-1.0, 1.0), device);

        memory::reset_peak();
        let mut tokens = None;
        let time = time_median(0, 1, || {
            tokens = Some(tokenizer.encode(&image).expect("a valid image"));
        });
        let tokens = tokens.expect("encoded once");
        let [h1, w1] = tokens.semantic.shape;
        let [h2, w2] = tokens.pixel.shape;
        rows.push(row(
            "encode",
            format!("{size}² → {h1}x{w1} + {h2}x{w2}"),
            time,
            official(OFFICIAL_ENCODE),
        ));

        memory::reset_peak();
        let time = time_median(0, 1, || {
            let _ = tokenizer.decode_rgb(&tokens).expect("valid tokens");
        });
        rows.push(row(
            "decode",
            format!("{h1}x{w1} + {h2}x{w2} → {size}²"),
            time,
            official(OFFICIAL_DECODE),
        ));

        let input = preprocess::scaling_layer(image.clone());
        memory::reset_peak();
        let time = time_median(0, 1, || {
            let features = tokenizer.model.semantic_encoder.model.forward(&input);
            let _ = features.slice([0..1, 0..1]).into_data();
        });
        let [gh, gw] = input.grid;
        rows.push(row(
            "  semantic ViT",
            format!("{gh}x{gw} patches"),
            time,
            official(OFFICIAL_VIT),
        ));

        memory::reset_peak();
        let time = time_median(0, 1, || {
            let out = tokenizer.model.pixel_encoder.forward(image.clone());
            let _ = out.slice([0..1, 0..1, 0..1, 0..1]).into_data();
        });
        rows.push(row(
            "  pixel encoder",
            format!("{size}²"),
            time,
            official(OFFICIAL_PIXEL_ENCODER),
        ));

        let codebook = tokenizer.pixel_codebook();
        let z = Tensor::<B, 2>::random(
            [h2 * w2, codebook.dim()],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        memory::reset_peak();
        let time = time_median(1, 3, || {
            let _ = codebook.nearest(z.clone()).into_data();
        });
        let official_nearest = (!options.quick && size == 512).then_some(OFFICIAL_NEAREST_512);
        rows.push(row(
            "  pixel SimVQ nearest code",
            format!("{} tokens, K={}", h2 * w2, codebook.size()),
            time,
            official_nearest,
        ));
    }
    rows
}
