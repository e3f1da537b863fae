//! DualViTok at the release configuration (random weights): encode and decode of 256² and
//! 512² images, plus the stages that dominate them, against the official PyTorch timings
//! measured on this machine kind (`perf_targets.md`: torch 2.6 fp32, 2 threads).
//!
//! `--quick` runs the tiny demo configuration at 64² and 128² instead (a smoke run).

use std::time::{Duration, Instant};

use burn::tensor::{Distribution, Tensor};
use illume_backends::IllumeBackend;
use illume_dualvitok::{demo, preprocess, DualViTok, DualViTokConfig, DualViTokModel};

use super::{time_median, with_peak, Row, Sink};

/// Official PyTorch seconds at (256², 512²): encode, decode, ViT, pixel encoder, and the
/// pixel SimVQ search (1024 tokens, 512² only).
const OFFICIAL_ENCODE: [f64; 2] = [2.98, 16.5];
const OFFICIAL_DECODE: [f64; 2] = [8.36, 35.8];
const OFFICIAL_VIT: [f64; 2] = [2.32, 13.4];
const OFFICIAL_PIXEL_ENCODER: [f64; 2] = [0.57, 2.79];
const OFFICIAL_NEAREST_512: f64 = 0.227;

const GROUP: &str = "dualvitok";

pub fn rows<B: IllumeBackend>(device: &B::Device, sink: &mut Sink) {
    let quick = sink.quick();
    let (config, sizes, which) = if quick {
        (demo::config(), [64, 128], "demo config")
    } else {
        (DualViTokConfig::official(), [256, 512], "release config")
    };
    let name = |item: &str| format!("{item} ({which})");
    let [encode, decode, vit, pixel_encoder, nearest] = [
        "encode",
        "decode",
        "  semantic ViT",
        "  pixel encoder",
        "  pixel SimVQ nearest code",
    ]
    .map(name);
    let [want_encode, want_decode, want_vit, want_pixel_encoder, want_nearest] =
        [&encode, &decode, &vit, &pixel_encoder, &nearest].map(|item| sink.wants(GROUP, item));
    if !(want_encode || want_decode || want_vit || want_pixel_encoder || want_nearest) {
        return;
    }
    let model = demo::fill_random(DualViTokModel::<B>::new(&config, device), 7, device);
    let tokenizer = DualViTok::from_model(model, config).with_max_pixels(usize::MAX);
    for (i, size) in sizes.into_iter().enumerate() {
        // The official timings are for the release configuration only.
        let official = |table: [f64; 2]| (!quick).then_some(table[i]);
        let row = |item: &str, shape: String, (time, peak_rss): (Duration, _), official| Row {
            group: GROUP,
            item: item.to_owned(),
            shape,
            time,
            peak_rss,
            official,
            ..Row::default()
        };
        let image =
            Tensor::<B, 4>::random([1, 3, size, size], Distribution::Uniform(-1.0, 1.0), device);

        // Decoding needs the tokens: encoded (and timed) for either row.
        if want_encode || want_decode {
            let ((tokens, time), peak) = with_peak(|| {
                let start = Instant::now();
                let tokens = tokenizer.encode(&image).expect("a valid image");
                (tokens, start.elapsed())
            });
            let [h1, w1] = tokens.semantic.shape;
            let [h2, w2] = tokens.pixel.shape;
            let grids = format!("{h1}x{w1} + {h2}x{w2}");
            if want_encode {
                sink.emit(row(
                    &encode,
                    format!("{size}² → {grids}"),
                    (time, peak),
                    official(OFFICIAL_ENCODE),
                ));
            }
            if want_decode {
                let measured = with_peak(|| {
                    time_median(0, 1, || {
                        let _ = tokenizer.decode_rgb(&tokens).expect("valid tokens");
                    })
                });
                sink.emit(row(
                    &decode,
                    format!("{grids} → {size}²"),
                    measured,
                    official(OFFICIAL_DECODE),
                ));
            }
        }

        if want_vit {
            let input = preprocess::scaling_layer(image.clone());
            let measured = with_peak(|| {
                time_median(0, 1, || {
                    let features = tokenizer.model.semantic_encoder.model.forward(&input);
                    let _ = features.slice([0..1, 0..1]).into_data();
                })
            });
            let [gh, gw] = input.grid;
            sink.emit(row(
                &vit,
                format!("{gh}x{gw} patches"),
                measured,
                official(OFFICIAL_VIT),
            ));
        }

        if want_pixel_encoder {
            let measured = with_peak(|| {
                time_median(0, 1, || {
                    let out = tokenizer.model.pixel_encoder.forward(image.clone());
                    let _ = out.slice([0..1, 0..1, 0..1, 0..1]).into_data();
                })
            });
            sink.emit(row(
                &pixel_encoder,
                format!("{size}²"),
                measured,
                official(OFFICIAL_PIXEL_ENCODER),
            ));
        }

        if want_nearest {
            let codebook = tokenizer.pixel_codebook();
            let side = size / tokenizer.pixel_patch();
            let z = Tensor::<B, 2>::random(
                [side * side, codebook.dim()],
                Distribution::Normal(0.0, 1.0),
                device,
            );
            let measured = with_peak(|| {
                time_median(1, 3, || {
                    let _ = codebook.nearest(z.clone()).into_data();
                })
            });
            let official = (!quick && size == 512).then_some(OFFICIAL_NEAREST_512);
            sink.emit(row(
                &nearest,
                format!("{} tokens, K={}", side * side, codebook.size()),
                measured,
                official,
            ));
        }
    }
}
