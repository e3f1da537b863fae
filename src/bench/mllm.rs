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
use illume_mllm::kv_cache::KvCache;
use illume_mllm::vocab_shards::{default_rows_per_shard, VocabShards};
use illume_mllm::{
    CfgMode, Chain, DecoderConfig, Decoding, GenerateOptions, ImageGrid, LevelSampling,
    LogitsProcessor, SamplingParams, VocabLayout,
};

use super::{time_median, with_peak, Row, Sink};

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

const GROUP: &str = "mllm";

/// Which measurements of one model to make (one per row).
#[derive(Debug, Clone, Copy)]
struct Parts {
    prefill: bool,
    decode: bool,
    batched_cfg: bool,
    sequential_cfg: bool,
    batched_image: bool,
    sequential_image: bool,
}

impl Parts {
    fn any(self) -> bool {
        self.prefill
            || self.decode
            || self.batched_cfg
            || self.sequential_cfg
            || self.batched_image
            || self.sequential_image
    }
}

/// Seconds of one measurement and the peak resident bytes while it ran.
type Timed = (f64, Option<u64>);

/// Seconds of a prefill of `n` tokens, of one decode step (1 or 2 rows) and of one image's
/// generation, for the parts that were measured.
#[derive(Debug, Default)]
struct Timings {
    prefill: Option<Timed>,
    decode: Option<Timed>,
    batched_cfg: Option<Timed>,
    sequential_cfg: Option<Timed>,
    batched_image: Option<Timed>,
    sequential_image: Option<Timed>,
}

impl Timings {
    /// Each measured part's seconds through `f(at lo, at hi)`, with the peak of `hi`.
    fn combine(&self, hi: &Timings, f: impl Fn(f64, f64) -> f64) -> Timings {
        let at = |lo: Option<Timed>, hi: Option<Timed>| match (lo, hi) {
            (Some((a, _)), Some((b, peak))) => Some((f(a, b), peak)),
            _ => None,
        };
        Timings {
            prefill: at(self.prefill, hi.prefill),
            decode: at(self.decode, hi.decode),
            batched_cfg: at(self.batched_cfg, hi.batched_cfg),
            sequential_cfg: at(self.sequential_cfg, hi.sequential_cfg),
            batched_image: at(self.batched_image, hi.batched_image),
            sequential_image: at(self.sequential_image, hi.sequential_image),
        }
    }
}

/// The prefill and decode parts of `parts` on `lm` (`steps` timed decode steps each).
fn measure<B: IllumeBackend>(
    lm: &LanguageModel<B>,
    prompt: usize,
    steps: usize,
    parts: Parts,
    device: &B::Device,
) -> Timings {
    let hidden = lm.config.hidden_size;
    // One forward of `n` new tokens on each of `rows`, waiting for the logits.
    let forward = |cache: &mut KvCache<B>, n: usize, rows: &[usize]| {
        let embeds = Tensor::<B, 3>::random(
            [rows.len(), n, hidden],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let logits = lm
            .forward_last_logits(embeds, cache, rows)
            .expect("forward");
        let _ = logits.into_data();
    };
    // Row 0 holds the prompt and three runs of one warm-up and `steps` timed decode steps;
    // row 1 the prompt and the CFG runs' second row.
    let mut cache = lm.new_cache(2, prompt + 3 * (steps + 1));
    let prefill = parts.prefill.then(|| {
        forward(&mut cache, prompt, &[0]); // warm-up
        cache.truncate(0, 0);
        with_peak(|| {
            let start = Instant::now();
            forward(&mut cache, prompt, &[0]);
            start.elapsed().as_secs_f64()
        })
    });
    let cfg = parts.batched_cfg || parts.sequential_cfg;
    if !parts.prefill && (parts.decode || cfg) {
        forward(&mut cache, prompt, &[0]);
    }
    if cfg {
        forward(&mut cache, prompt, &[1]);
    }
    let mut per_step = |step: &dyn Fn(&mut KvCache<B>)| {
        with_peak(|| {
            step(&mut cache);
            let start = Instant::now();
            for _ in 0..steps {
                step(&mut cache);
            }
            start.elapsed().as_secs_f64() / steps as f64
        })
    };
    let decode = parts.decode.then(|| per_step(&|c| forward(c, 1, &[0])));
    let batched_cfg = parts
        .batched_cfg
        .then(|| per_step(&|c| forward(c, 1, &[0, 1])));
    let sequential_cfg = parts.sequential_cfg.then(|| {
        per_step(&|c| {
            forward(c, 1, &[0]);
            forward(c, 1, &[1]);
        })
    });
    Timings {
        prefill,
        decode,
        batched_cfg,
        sequential_cfg,
        ..Timings::default()
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

/// Measured memory bandwidth in bytes/s, with the median time of one `a + b` over
/// 2 × 256 MiB (STREAM "add" counts three arrays).
fn bandwidth<B: IllumeBackend>(quick: bool, device: &B::Device) -> (f64, Duration) {
    let n = if quick { 1 << 22 } else { 1 << 26 };
    let a = Tensor::<B, 1>::random([n], Distribution::Uniform(0.0, 1.0), device);
    let b = Tensor::<B, 1>::random([n], Distribution::Uniform(0.0, 1.0), device);
    let time = time_median(1, 5, || {
        let _ = (a.clone() + b.clone()).narrow(0, 0, 1).into_data();
    });
    (3.0 * 4.0 * n as f64 / time.as_secs_f64(), time)
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

/// One row of this group from a measurement in seconds (extrapolations may go below 0).
fn row(item: &str, shape: String, (time, peak_rss): Timed, tokens: Option<f64>) -> Row {
    Row {
        group: GROUP,
        item: item.to_owned(),
        shape,
        time: Duration::from_secs_f64(time.max(0.0)),
        throughput: tokens.map(|n| (n / time, "tok/s")),
        peak_rss,
        ..Row::default()
    }
}

/// The decode row's note: the bandwidth roofline and the share of it reached.
fn roofline(roofline: f64, seconds: f64) -> String {
    format!(
        "roofline {roofline:.2} tok/s ({:.0}% of it)",
        100.0 / seconds / roofline
    )
}

/// "sequential/batched" when both sides were measured.
fn speed_up(sequential: Option<Timed>, batched: f64) -> String {
    sequential
        .map(|(s, _)| format!("sequential/batched {:.2}x", s / batched))
        .unwrap_or_default()
}

pub fn rows<B: IllumeBackend>(device: &B::Device, sink: &mut Sink) {
    let quick = sink.quick();
    // The official timings are for the real shapes only.
    let official = |seconds: f64| (!quick).then_some(seconds);

    // Every row is asked for first: the bandwidth feeds the decode rows' roofline.
    let bandwidth_item = "memory bandwidth (a+b, f32)";
    let want_bandwidth = sink.wants(GROUP, bandwidth_item);
    let small_name = if quick {
        "tiny decoder"
    } else {
        "Qwen2.5-0.5B shape"
    };
    let small_items = [
        format!("{small_name} prefill"),
        format!("{small_name} decode"),
    ];
    let small_parts = Parts {
        prefill: sink.wants(GROUP, &small_items[0]),
        decode: sink.wants(GROUP, &small_items[1]),
        batched_cfg: false,
        sequential_cfg: false,
        batched_image: false,
        sequential_image: false,
    };
    let big_name = if quick {
        "tiny image model"
    } else {
        "ILLUME+ 3B shape"
    };
    let image_size = 256;
    let big_items = [
        "prefill".to_owned(),
        "decode".to_owned(),
        "CFG step, batched".to_owned(),
        "CFG step, sequential".to_owned(),
        format!("{image_size}x{image_size} image, batched CFG"),
        format!("{image_size}x{image_size} image, sequential CFG"),
    ]
    .map(|item| format!("{big_name} {item}"));
    let [prefill, decode, batched_cfg, sequential_cfg, batched_image, sequential_image] =
        big_items.each_ref().map(|item| sink.wants(GROUP, item));
    let big_parts = Parts {
        prefill,
        decode,
        batched_cfg,
        sequential_cfg,
        batched_image,
        sequential_image,
    };

    let bw = (want_bandwidth || small_parts.decode || big_parts.decode).then(|| {
        let ((bw, time), peak_rss) = with_peak(|| bandwidth::<B>(quick, device));
        if want_bandwidth {
            sink.emit(Row {
                group: GROUP,
                item: bandwidth_item.into(),
                shape: if quick { "2 x 16 MiB" } else { "2 x 256 MiB" }.into(),
                time,
                throughput: Some((bw / 1e9, "GB/s")),
                peak_rss,
                note: "the roofline's numerator".into(),
                ..Row::default()
            });
        }
        bw
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
    if small_parts.any() {
        let (prompt, steps) = if quick { (32, 4) } else { (256, 24) };
        let lm = random_lm::<B>(&small, device);
        let t = measure(&lm, prompt, steps, small_parts, device);
        drop(lm);
        if let Some(prefill) = t.prefill {
            sink.emit(Row {
                official: official(prompt as f64 / OFFICIAL_SMALL_PREFILL),
                ..row(
                    &small_items[0],
                    format!("{prompt} tokens"),
                    prefill,
                    Some(prompt as f64),
                )
            });
        }
        if let (Some(decode), Some(bw)) = (t.decode, bw) {
            sink.emit(Row {
                official: official(1.0 / OFFICIAL_SMALL_DECODE),
                note: roofline(bw / bytes_per_token(&small), decode.0),
                ..row(
                    &small_items[1],
                    format!("1 row, after {prompt}"),
                    decode,
                    Some(1.0),
                )
            });
        }
    }

    if !big_parts.any() {
        return;
    }
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
    let (prompt, steps) = if quick { (32, 4) } else { (128, 12) };
    let layout = if quick {
        VocabLayout::extended(240, 239, [256, 768], big.vocab_size)
    } else {
        VocabLayout::extended(151_665, 151_645, [32_768, 98_304], big.vocab_size)
    }
    .expect("the image vocabulary fits");
    let probe = |layers: usize| {
        let lm = random_lm::<B>(&with_layers(&big, layers), device);
        let mut t = measure(&lm, prompt, steps, big_parts, device);
        let image = |mode| with_peak(|| image_generation(&lm, &layout, image_size, mode, device));
        t.batched_image = big_parts.batched_image.then(|| image(CfgMode::Batched));
        t.sequential_image = big_parts
            .sequential_image
            .then(|| image(CfgMode::Sequential));
        t
    };
    let target = big.num_hidden_layers;
    let (t, how) = if full {
        (probe(target), format!("{target} layers"))
    } else {
        let (lo, hi) = (1, 3);
        let t1 = probe(lo);
        let t3 = probe(hi);
        let at = |a: f64, b: f64| a + (b - a) * (target - lo) as f64 / (hi - lo) as f64;
        (
            t1.combine(&t3, at),
            format!("{target} layers, extrapolated from {lo} and {hi}"),
        )
    };
    let [prefill, decode, batched_cfg, sequential_cfg, batched_image, sequential_image] =
        &big_items;
    if let Some(measured) = t.prefill {
        sink.emit(Row {
            official: official(prompt as f64 / OFFICIAL_3B_PREFILL),
            ..row(
                prefill,
                format!("{prompt} tokens, {how}"),
                measured,
                Some(prompt as f64),
            )
        });
    }
    if let (Some(measured), Some(bw)) = (t.decode, bw) {
        sink.emit(Row {
            official: official(1.0 / OFFICIAL_3B_DECODE),
            note: roofline(bw / bytes_per_token(&big), measured.0),
            ..row(decode, format!("1 row, {how}"), measured, Some(1.0))
        });
    }
    if let Some(measured) = t.batched_cfg {
        sink.emit(Row {
            note: speed_up(t.sequential_cfg, measured.0),
            ..row(
                batched_cfg,
                format!("2 rows in 1 call, {how}"),
                measured,
                Some(1.0),
            )
        });
    }
    if let Some(measured) = t.sequential_cfg {
        sink.emit(row(
            sequential_cfg,
            format!("2 calls of 1 row, {how}"),
            measured,
            Some(1.0),
        ));
    }
    let tokens = ImageGrid::for_size(image_size, image_size).max_new_tokens();
    if let Some(measured) = t.batched_image {
        sink.emit(Row {
            official: official(OFFICIAL_3B_IMAGE),
            note: speed_up(t.sequential_image, measured.0),
            ..row(
                batched_image,
                format!("{tokens} tokens, {how}"),
                measured,
                Some(tokens as f64),
            )
        });
    }
    if let Some(measured) = t.sequential_image {
        sink.emit(Row {
            official: official(OFFICIAL_3B_IMAGE),
            note: "the official form: a second model call per step".into(),
            ..row(
                sequential_image,
                format!("{tokens} tokens, {how}"),
                measured,
                Some(tokens as f64),
            )
        });
    }
}
