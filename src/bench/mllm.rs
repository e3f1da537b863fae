//! The MLLM's decoder with random weights (f32): prefill and decode throughput of a
//! Qwen2.5-0.5B-shaped and the ILLUME+ 3B-shaped model, the 372-token generation of one
//! 256x256 image with batched vs sequential CFG, and the memory-bandwidth roofline of
//! decoding — against the official PyTorch numbers on this machine kind (`perf_targets.md`).
//!
//! The 3B model (13.4 GB in f32) does not fit beside the team's work on a 24 GB machine:
//! its rows run the real 3B shapes (hidden 2048, vocabulary 283,047) with 1 and 3 decoder
//! layers and extrapolate linearly to 36 (`t(L) = fixed + L · per_layer`); set
//! `ILLUME_BENCH_FULL_3B=1` to build all 36 layers instead. `--quick` uses tiny shapes.

use std::time::{Duration, Instant};

use burn::tensor::{Distribution, Tensor};
use illume_backends::IllumeBackend;
use illume_mllm::decoder::{LanguageModel, Qwen2Decoder};
use illume_mllm::generate::{generate, Silent};
use illume_mllm::vocab_shards::{default_rows_per_shard, VocabShards};
use illume_mllm::{
    CfgMode, Chain, DecoderConfig, Decoding, GenerateOptions, ImageGrid, LevelSampling,
    LogitsProcessor, SamplingParams, VocabLayout,
};

use super::{memory, Options, Row};

/// Official PyTorch f32 numbers on this machine kind (`perf_targets.md`).
const OFFICIAL_SMALL_DECODE: f64 = 7.79; // tok/s
const OFFICIAL_SMALL_PREFILL: f64 = 156.0; // tok/s, 256 tokens
const OFFICIAL_3B_DECODE: f64 = 1.48; // tok/s
const OFFICIAL_3B_PREFILL: f64 = 20.6; // tok/s, 128 tokens
const OFFICIAL_3B_IMAGE: f64 = 500.0; // s, one 256x256 image with CFG (two streams)

fn random_lm<B: IllumeBackend>(config: &DecoderConfig, device: &B::Device) -> LanguageModel<B> {
    let decoder =
        illume_dualvitok::demo::fill_random(Qwen2Decoder::new(config, device), 11, device);
    let (vocab, hidden) = (config.vocab_size, config.hidden_size);
    let embed = VocabShards::from_fn(vocab, hidden, default_rows_per_shard(hidden), |rows| {
        Tensor::random([hidden, rows], Distribution::Uniform(-0.05, 0.05), device)
    });
    LanguageModel::from_parts(config.clone(), decoder, embed, None)
}

/// Seconds of a prefill of `n` tokens, and of one decode step (1 or 2 rows).
struct Timings {
    prefill: f64,
    decode: f64,
    decode_batched_cfg: f64,
    decode_sequential_cfg: f64,
}

fn measure<B: IllumeBackend>(
    lm: &LanguageModel<B>,
    prompt: usize,
    steps: usize,
    device: &B::Device,
) -> Timings {
    let hidden = lm.config.hidden_size;
    let embeds =
        |rows, n| Tensor::<B, 3>::random([rows, n, hidden], Distribution::Normal(0.0, 1.0), device);
    let sync = |logits: Tensor<B, 2>| {
        let _ = logits.into_data();
    };
    // Row 0 holds the prompt and three timed runs of `steps` decode steps, each after one
    // warm-up step.
    let mut cache = lm.new_cache(2, prompt + 3 * (steps + 1));
    // Warm-up (and the prompt of the decode runs).
    sync(
        lm.forward_last_logits(embeds(1, prompt), &mut cache, &[0])
            .expect("forward"),
    );
    cache.truncate(0, 0);
    let start = Instant::now();
    sync(
        lm.forward_last_logits(embeds(1, prompt), &mut cache, &[0])
            .expect("forward"),
    );
    let prefill = start.elapsed().as_secs_f64();
    sync(
        lm.forward_last_logits(embeds(1, prompt), &mut cache, &[1])
            .expect("forward"),
    );
    let per_step = |mut step: Box<dyn FnMut() + '_>| {
        step();
        let start = Instant::now();
        for _ in 0..steps {
            step();
        }
        start.elapsed().as_secs_f64() / steps as f64
    };
    let cache = std::cell::RefCell::new(cache);
    let decode = per_step(Box::new(|| {
        sync(
            lm.forward_last_logits(embeds(1, 1), &mut cache.borrow_mut(), &[0])
                .expect("forward"),
        )
    }));
    let decode_batched_cfg = per_step(Box::new(|| {
        sync(
            lm.forward_last_logits(embeds(2, 1), &mut cache.borrow_mut(), &[0, 1])
                .expect("forward"),
        )
    }));
    let decode_sequential_cfg = per_step(Box::new(|| {
        sync(
            lm.forward_last_logits(embeds(1, 1), &mut cache.borrow_mut(), &[0])
                .expect("forward"),
        );
        sync(
            lm.forward_last_logits(embeds(1, 1), &mut cache.borrow_mut(), &[1])
                .expect("forward"),
        );
    }));
    Timings {
        prefill,
        decode,
        decode_batched_cfg,
        decode_sequential_cfg,
    }
}

/// Seconds to generate one image's tokens (the real loop: processor, CFG, sampling).
fn image_generation<B: IllumeBackend>(
    lm: &LanguageModel<B>,
    layout: &VocabLayout,
    size: usize,
    mode: CfgMode,
    device: &B::Device,
) -> f64 {
    let hidden = lm.config.hidden_size;
    let grid = ImageGrid::for_size(size, size);
    let mut processor = LogitsProcessor::new(
        Chain::Eval {
            force_image_start: true,
        },
        layout.clone(),
        Some(grid),
        2.0,
        LevelSampling::from_global(SamplingParams::new(1.0, 2048, 1.0)),
    );
    let options = GenerateOptions {
        max_new_tokens: grid.max_new_tokens(),
        decoding: Decoding::Sample { seed: 5 },
        warpers: SamplingParams::new(1.0, 2048, 1.0),
        cfg_mode: mode,
        ..GenerateOptions::default()
    };
    // Prompts of the official lengths (T2I ~70 tokens, unconditional ~40).
    let prompt = Tensor::<B, 3>::random([1, 70, hidden], Distribution::Normal(0.0, 1.0), device);
    let uncond = Tensor::<B, 3>::random([1, 40, hidden], Distribution::Normal(0.0, 1.0), device);
    let start = Instant::now();
    generate(
        lm,
        prompt,
        Some(uncond),
        &mut processor,
        &options,
        &mut Silent,
    )
    .expect("generation");
    start.elapsed().as_secs_f64()
}

/// Measured memory bandwidth in bytes/s: `a + b` over 2 × 256 MiB (STREAM "add" counts
/// three arrays).
fn bandwidth<B: IllumeBackend>(quick: bool, device: &B::Device) -> f64 {
    let n = if quick { 1 << 22 } else { 1 << 26 };
    let a = Tensor::<B, 1>::random([n], Distribution::Uniform(0.0, 1.0), device);
    let b = Tensor::<B, 1>::random([n], Distribution::Uniform(0.0, 1.0), device);
    let time = super::time_median(1, 5, || {
        let _ = (a.clone() + b.clone()).narrow(0, 0, 1).into_data();
    });
    3.0 * 4.0 * n as f64 / time.as_secs_f64()
}

/// Bytes read from memory per decoded token in f32: every decoder weight and the LM head
/// (the embedding lookup reads one row).
fn bytes_per_token(config: &DecoderConfig) -> f64 {
    4.0 * config.parameter_count() as f64
}

fn with_layers(config: &DecoderConfig, layers: usize) -> DecoderConfig {
    DecoderConfig {
        num_hidden_layers: layers,
        ..config.clone()
    }
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn row(item: String, shape: String, time: f64, per_second: Option<f64>, note: String) -> Row {
    Row {
        group: "mllm",
        item,
        shape,
        time: seconds(time),
        throughput: per_second.map(|v| (v, "tok/s")),
        peak_rss: memory::peak(),
        note,
    }
}

pub fn rows<B: IllumeBackend>(device: &B::Device, options: &Options) -> Vec<Row> {
    let mut rows = Vec::new();
    let quick = options.quick;
    let bw = bandwidth::<B>(quick, device);
    rows.push(Row {
        group: "mllm",
        item: "memory bandwidth (a+b, f32)".into(),
        shape: if quick { "2 x 16 MiB" } else { "2 x 256 MiB" }.into(),
        time: Duration::ZERO,
        throughput: Some((bw / 1e9, "GB/s")),
        peak_rss: None,
        note: "the roofline's numerator".into(),
    });

    // Qwen2.5-0.5B shape, all layers.
    let small = if quick {
        DecoderConfig {
            hidden_size: 128,
            intermediate_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            vocab_size: 4096,
            ..DecoderConfig::qwen2_5_0_5b()
        }
    } else {
        DecoderConfig::qwen2_5_0_5b()
    };
    let (prompt_small, steps) = if quick { (32, 4) } else { (256, 24) };
    memory::reset_peak();
    let lm = random_lm::<B>(&small, device);
    let t = measure(&lm, prompt_small, steps, device);
    drop(lm);
    let name = if quick {
        "tiny decoder"
    } else {
        "Qwen2.5-0.5B shape"
    };
    rows.push(row(
        format!("{name} prefill"),
        format!("{prompt_small} tokens"),
        t.prefill,
        Some(prompt_small as f64 / t.prefill),
        if quick {
            String::new()
        } else {
            format!(
                "PyTorch {OFFICIAL_SMALL_PREFILL} tok/s: {:.2}x",
                prompt_small as f64 / t.prefill / OFFICIAL_SMALL_PREFILL
            )
        },
    ));
    let roofline_small = bw / bytes_per_token(&small);
    rows.push(row(
        format!("{name} decode"),
        format!("1 row, after {prompt_small}"),
        t.decode,
        Some(1.0 / t.decode),
        format!(
            "{}roofline {:.1} tok/s ({:.0}% of it)",
            if quick {
                String::new()
            } else {
                format!(
                    "PyTorch {OFFICIAL_SMALL_DECODE} tok/s: {:.2}x; ",
                    1.0 / t.decode / OFFICIAL_SMALL_DECODE
                )
            },
            roofline_small,
            100.0 / t.decode / roofline_small
        ),
    ));

    // ILLUME+ 3B shape: extrapolated from 1 and 3 layers unless asked for the full model.
    let big = if quick {
        DecoderConfig {
            num_hidden_layers: 4,
            vocab_size: 1319,
            ..small.clone()
        }
    } else {
        DecoderConfig::illume_plus_3b()
    };
    let full = !quick && std::env::var_os("ILLUME_BENCH_FULL_3B").is_some();
    let (prompt_big, steps_big) = if quick { (32, 4) } else { (128, 12) };
    let layout = if quick {
        VocabLayout::extended(240, 239, [256, 768], big.vocab_size)
    } else {
        VocabLayout::extended(151_665, 151_645, [32_768, 98_304], big.vocab_size)
    }
    .expect("the image vocabulary fits");
    let image_size = 256;
    let probe = |layers: usize| {
        memory::reset_peak();
        let lm = random_lm::<B>(&with_layers(&big, layers), device);
        let t = measure(&lm, prompt_big, steps_big, device);
        let batched = image_generation(&lm, &layout, image_size, CfgMode::Batched, device);
        let sequential = image_generation(&lm, &layout, image_size, CfgMode::Sequential, device);
        (t, batched, sequential, memory::peak())
    };
    let target = big.num_hidden_layers;
    let (t, batched, sequential, how, rss) = if full {
        let (t, b, s, rss) = probe(target);
        (t, b, s, format!("{target} layers"), rss)
    } else {
        let (lo, hi) = (1, 3);
        let (t1, b1, s1, _) = probe(lo);
        let (t3, b3, s3, rss) = probe(hi);
        let at = |a: f64, b: f64| a + (b - a) * (target - lo) as f64 / (hi - lo) as f64;
        (
            Timings {
                prefill: at(t1.prefill, t3.prefill),
                decode: at(t1.decode, t3.decode),
                decode_batched_cfg: at(t1.decode_batched_cfg, t3.decode_batched_cfg),
                decode_sequential_cfg: at(t1.decode_sequential_cfg, t3.decode_sequential_cfg),
            },
            at(b1, b3),
            at(s1, s3),
            format!("{target} layers, extrapolated from {lo} and {hi}"),
            rss,
        )
    };
    let name = if quick {
        "tiny image model"
    } else {
        "ILLUME+ 3B shape"
    };
    let mut push =
        |item: String, shape: String, time: f64, per_second: Option<f64>, note: String| {
            rows.push(Row {
                peak_rss: rss,
                ..row(item, shape, time, per_second, note)
            })
        };
    push(
        format!("{name} prefill"),
        format!("{prompt_big} tokens, {how}"),
        t.prefill,
        Some(prompt_big as f64 / t.prefill),
        if quick {
            String::new()
        } else {
            format!(
                "PyTorch {OFFICIAL_3B_PREFILL} tok/s: {:.2}x",
                prompt_big as f64 / t.prefill / OFFICIAL_3B_PREFILL
            )
        },
    );
    let roofline_big = bw / bytes_per_token(&big);
    push(
        format!("{name} decode"),
        format!("1 row, {how}"),
        t.decode,
        Some(1.0 / t.decode),
        format!(
            "{}roofline {:.2} tok/s ({:.0}% of it)",
            if quick {
                String::new()
            } else {
                format!(
                    "PyTorch {OFFICIAL_3B_DECODE} tok/s: {:.2}x; ",
                    1.0 / t.decode / OFFICIAL_3B_DECODE
                )
            },
            roofline_big,
            100.0 / t.decode / roofline_big
        ),
    );
    push(
        format!("{name} CFG step, batched"),
        format!("2 rows in 1 call, {how}"),
        t.decode_batched_cfg,
        Some(1.0 / t.decode_batched_cfg),
        format!(
            "sequential/batched {:.2}x",
            t.decode_sequential_cfg / t.decode_batched_cfg
        ),
    );
    push(
        format!("{name} CFG step, sequential"),
        format!("2 calls of 1 row, {how}"),
        t.decode_sequential_cfg,
        Some(1.0 / t.decode_sequential_cfg),
        String::new(),
    );
    let tokens = ImageGrid::for_size(image_size, image_size).max_new_tokens();
    push(
        format!("{name} 256x256 image, batched CFG"),
        format!("{tokens} tokens, {how}"),
        batched,
        Some(tokens as f64 / batched),
        format!(
            "sequential/batched {:.2}x{}",
            sequential / batched,
            if quick {
                String::new()
            } else {
                format!(
                    "; PyTorch ~{OFFICIAL_3B_IMAGE} s: {:.2}x",
                    OFFICIAL_3B_IMAGE / batched
                )
            }
        ),
    );
    push(
        format!("{name} 256x256 image, sequential CFG"),
        format!("{tokens} tokens, {how}"),
        sequential,
        Some(tokens as f64 / sequential),
        "the official form: a second model call per step".into(),
    );
    rows
}
