//! Cross-backend parity: the same inputs through the same random-weight models on a
//! backend and on ndarray (the reference), compared with stated tolerances — what
//! `illume doctor` reports and what `tests/backend_parity.rs` asserts.
//!
//! Components: the fused hot-path operations, and the demo DualViTok, MLLM and diffusion
//! decoder (the reference fixtures' tiny configurations with deterministic weights, so
//! every code path of the real architectures runs in seconds). Float outputs must agree
//! within a tolerance relative to their scale; token ids and VQ indices must be identical.
//!
//! A backend computing in half precision is still compared with the f32 reference: floats
//! within [`half_tolerance`], ids identical but for [`HALF_ID_FLIPS`] of them (an f16
//! rounding can move a near-tie, and a greedy sequence follows its first changed id).

use std::fmt;

use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use illume_backends::{
    float_dtype, reference, run_on, sample_values, BackendKind, BackendTask, IllumeBackend,
    Modulation, Precision,
};

/// The parts of the runtime checked one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The hot-path operations (`IllumeBackend`: fused kernels on wgpu and cuda).
    Kernels,
    /// The demo DualViTok: encode to indices, decode to pixels.
    DualViTok,
    /// The demo MLLM: prompt logits, greedy ids, the vocabulary in small shards.
    Mllm,
    /// The demo diffusion decoder: two denoising steps and the VAE.
    Diffusion,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Kernels,
        Component::DualViTok,
        Component::Mllm,
        Component::Diffusion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Kernels => "kernels",
            Component::DualViTok => "dualvitok",
            Component::Mllm => "mllm",
            Component::Diffusion => "diffusion",
        }
    }
}

/// What a backend produced for one item of a component.
#[derive(Debug, Clone)]
enum Produced {
    /// Float values, to agree within `tolerance · max(1, max|reference|)`.
    Floats { values: Vec<f32>, tolerance: f32 },
    /// Token ids or indices, to be identical.
    Ids(Vec<i64>),
}

/// The outcome of one item.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Floats: the largest difference and the largest one allowed.
    Close { max_diff: f32, allowed: f32 },
    /// Ids: how many differ, and how many may (0 in f32).
    Identical {
        differing: usize,
        allowed: usize,
        total: usize,
    },
    /// The item could not be compared (a run failed, or the shapes differ).
    Failed(String),
}

/// One compared item of a component.
#[derive(Debug, Clone)]
pub struct Check {
    pub component: Component,
    pub item: String,
    pub verdict: Verdict,
}

impl Check {
    pub fn passed(&self) -> bool {
        match self.verdict {
            Verdict::Close { max_diff, allowed } => max_diff <= allowed,
            Verdict::Identical {
                differing, allowed, ..
            } => differing <= allowed,
            Verdict::Failed(_) => false,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed() { "ok" } else { "FAILED" };
        let detail = match &self.verdict {
            Verdict::Close { max_diff, allowed } => {
                format!("max |diff| {max_diff:.2e} (allowed {allowed:.1e})")
            }
            Verdict::Identical {
                differing,
                allowed: 0,
                total,
            } => format!("{} of {total} identical", total - differing),
            Verdict::Identical {
                differing,
                allowed,
                total,
            } => format!(
                "{} of {total} identical ({allowed} may differ)",
                total - differing
            ),
            Verdict::Failed(reason) => reason.clone(),
        };
        write!(
            f,
            "{:<10} {:<44} {:<44} {status}",
            self.component.name(),
            self.item,
            detail
        )
    }
}

/// Errors of the parity run itself (a backend that cannot start).
pub type ParityError = Box<dyn std::error::Error>;

/// Float tolerance, relative to the output's scale, of a half-precision run against the f32
/// reference: a few units of the format's last place, compounded over the demo models'
/// layers (f16 has 11 significant bits, bf16 8).
pub fn half_tolerance(dtype: FloatDType) -> f32 {
    match dtype {
        // Measured on lavapipe, against this reference: at most 8.7e-3 of scale (diffusion
        // latents and VAE), 1.4e-3 for the MLLM logits and the kernels; against the official
        // fixtures 1.5e-2 (DualViTok reconstruction). Twice the worst.
        FloatDType::F16 => 3e-2,
        // f16's bound times the ratio of unit roundoffs (2⁻⁸ / 2⁻¹¹); not yet measured.
        FloatDType::BF16 => 2.4e-1,
        _ => 0.0,
    }
}

/// Ids of one item that may differ in half precision, out of `total`: one in eight.
pub const HALF_ID_FLIPS: f32 = 0.125;

/// Run `component` on `kind` at `precision` and on ndarray (f32), and compare item by item.
/// Returns the float type the candidate computed in, and the checks.
pub fn check(
    kind: BackendKind,
    precision: Precision,
    component: Component,
) -> Result<(FloatDType, Vec<Check>), ParityError> {
    let (_, reference) = run_on(BackendKind::NdArray, Precision::F32, Outputs { component })??;
    let (dtype, candidate) = run_on(kind, precision, Outputs { component })??;
    if reference.len() != candidate.len() {
        return Err(format!(
            "{}: {} items on ndarray, {} on {kind}",
            component.name(),
            reference.len(),
            candidate.len()
        )
        .into());
    }
    let checks = reference
        .into_iter()
        .zip(candidate)
        .map(|((item, expected), (_, actual))| Check {
            component,
            verdict: compare(&expected, &actual, dtype),
            item,
        })
        .collect();
    Ok((dtype, checks))
}

fn compare(expected: &Produced, actual: &Produced, dtype: FloatDType) -> Verdict {
    let half = matches!(dtype, FloatDType::F16 | FloatDType::BF16);
    match (expected, actual) {
        (
            Produced::Floats {
                values: e,
                tolerance,
            },
            Produced::Floats { values: a, .. },
        ) if e.len() == a.len() => {
            let scale = e.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let max_diff = e
                .iter()
                .zip(a)
                .map(|(e, a)| (e - a).abs())
                .fold(0.0f32, |m, d| if d.is_nan() || d > m { d } else { m });
            Verdict::Close {
                max_diff,
                allowed: tolerance.max(half_tolerance(dtype)) * scale,
            }
        }
        (Produced::Ids(e), Produced::Ids(a)) if e.len() == a.len() => Verdict::Identical {
            differing: e.iter().zip(a).filter(|(e, a)| e != a).count(),
            allowed: if half {
                (e.len() as f32 * HALF_ID_FLIPS).floor() as usize
            } else {
                0
            },
            total: e.len(),
        },
        _ => Verdict::Failed("different output shapes".into()),
    }
}

struct Outputs {
    component: Component,
}

type Items = Vec<(String, Produced)>;

impl BackendTask for Outputs {
    type Output = Result<(FloatDType, Items), String>;

    fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output {
        let items = match self.component {
            Component::Kernels => Ok(kernels::<B>(&device)),
            Component::DualViTok => dualvitok::<B>(&device).map_err(|e| e.to_string()),
            Component::Mllm => mllm::<B>(&device).map_err(|e| e.to_string()),
            Component::Diffusion => diffusion::<B>(&device).map_err(|e| e.to_string()),
        }?;
        Ok((float_dtype::<B>(&device), items))
    }
}

fn input<B: IllumeBackend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let len = shape.iter().product();
    Tensor::from_data(TensorData::new(sample_values(len, seed), shape), device)
}

fn floats<B: IllumeBackend, const D: usize>(t: Tensor<B, D>, tolerance: f32) -> Produced {
    Produced::Floats {
        values: t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("float tensor"),
        tolerance,
    }
}

fn ids<B: IllumeBackend>(t: Tensor<B, 1, Int>) -> Produced {
    Produced::Ids(
        t.into_data()
            .convert::<i64>()
            .into_vec::<i64>()
            .expect("int tensor"),
    )
}

/// The hot-path operations at small real-architecture shapes (odd sizes included).
fn kernels<B: IllumeBackend>(device: &B::Device) -> Items {
    // f32 kernels against f32 compositions: differences are rounding (measured ≤ 2e-6).
    const TOL: f32 = 1e-4;
    let mut items = Vec::new();
    let x = input::<B, 2>([7, 896], 1, device);
    let w = input::<B, 1>([896], 2, device);
    items.push((
        "rms_norm [7, 896]".into(),
        floats(B::rms_norm(x, w, 1e-6), TOL),
    ));
    let gate = input::<B, 2>([7, 4864], 3, device);
    let up = input::<B, 2>([7, 4864], 4, device);
    items.push((
        "silu_mul [7, 4864]".into(),
        floats(B::silu_mul(gate, up), TOL),
    ));
    let q = input::<B, 4>([1, 7, 14, 64], 5, device).swap_dims(1, 2);
    let cos = input::<B, 2>([7, 64], 6, device);
    let sin = input::<B, 2>([7, 64], 7, device);
    items.push((
        "rotary [1, 14, 7, 64] (strided)".into(),
        floats(B::rotary(q, cos, sin), TOL),
    ));
    let x = input::<B, 4>([1, 64, 9, 13], 8, device);
    let gamma = input::<B, 1>([64], 9, device);
    let beta = input::<B, 1>([64], 10, device);
    items.push((
        "group_norm+silu [1, 64, 9, 13] / 32".into(),
        floats(
            B::group_norm(
                x.clone(),
                32,
                Some(gamma.clone()),
                Some(beta.clone()),
                1e-6,
                true,
            ),
            TOL,
        ),
    ));
    let modulation = Modulation {
        scale: input::<B, 4>([1, 64, 9, 13], 11, device),
        shift: input::<B, 4>([1, 64, 9, 13], 12, device),
    };
    items.push((
        "spatial_norm+silu [1, 64, 9, 13] / 32".into(),
        floats(
            B::spatial_norm(x, 32, Some(gamma), Some(beta), 1e-6, modulation, true),
            TOL,
        ),
    ));
    let z = input::<B, 2>([81, 32], 13, device);
    let codebook = input::<B, 2>([4099, 32], 14, device);
    items.push((
        "nearest_code [81, 32] x [4099, 32]".into(),
        ids(B::nearest_code(z.clone(), codebook.clone())),
    ));
    items.push((
        "nearest_code (reference composition)".into(),
        ids(reference::nearest_code(z, codebook, 1024)),
    ));
    for (name, [h, sq, d], [hk, sk], causal) in [
        ("attention causal GQA", [14, 37, 64], [2, 37], true),
        ("attention decode (KV cache)", [14, 1, 64], [2, 300], true),
        ("attention ViT", [4, 40, 80], [4, 40], false),
    ] {
        let q = input::<B, 4>([1, h, sq, d], 15, device);
        let k = input::<B, 4>([1, hk, sk, d], 16, device);
        let v = input::<B, 4>([1, hk, sk, d], 17, device);
        let scale = 1.0 / (d as f64).sqrt();
        items.push((
            format!("{name} q[1,{h},{sq},{d}] kv[{hk},{sk}]"),
            floats(IllumeBackend::attention(q, k, v, scale, causal), TOL),
        ));
    }
    items
}

/// A deterministic picture in [-1, 1], `[1, 3, h, w]`: smooth gradients plus texture, so
/// the tokenizer sees structure rather than noise.
fn test_image<B: IllumeBackend>(h: usize, w: usize, device: &B::Device) -> Tensor<B, 4> {
    let texture = sample_values(3 * h * w, 21);
    let pixels: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            let wave = ((x as f32 / w as f32) * (2.0 + c as f32) * std::f32::consts::PI).sin();
            (0.6 * wave * (y as f32 / h as f32) + 0.3 * texture[i]).clamp(-1.0, 1.0)
        })
        .collect();
    Tensor::from_data(TensorData::new(pixels, [1, 3, h, w]), device)
}

/// A deterministic `shape` grid of indices below `codebook_size`.
fn pattern_grid(
    shape: [usize; 2],
    codebook_size: usize,
) -> illume_dualvitok::Result<illume_dualvitok::TokenGrid> {
    let n = shape[0] * shape[1];
    let ids = (0..n).map(|i| ((i * 7 + 3) % codebook_size) as u32);
    illume_dualvitok::TokenGrid::new(shape, ids.collect())
}

fn grid_ids(grid: &illume_dualvitok::TokenGrid) -> Produced {
    Produced::Ids(grid.indices.iter().map(|&i| i as i64).collect())
}

/// The demo DualViTok on a non-square picture: both index grids, then the decoded image.
fn dualvitok<B: IllumeBackend>(device: &B::Device) -> Result<Items, ParityError> {
    use illume_dualvitok::DualViTok;
    let dir = crate::demo::materialize("dualvitok", illume_dualvitok::demo::write)?;
    let tokenizer = DualViTok::<B>::load(&dir, device)?;
    let tokens = tokenizer.encode(&test_image::<B>(64, 96, device))?;
    let [sh, sw] = tokens.semantic.shape;
    let [ph, pw] = tokens.pixel.shape;
    // Decode fixed tokens, not the encoded ones: in half precision a flipped index would
    // change the picture, which says nothing about the decoder's arithmetic.
    let config = illume_dualvitok::demo::config();
    let fixed = illume_dualvitok::DualTokens {
        semantic: pattern_grid([sh, sw], config.semantic_quantizer.codebook_size)?,
        pixel: pattern_grid([ph, pw], config.pixel_quantizer.codebook_size)?,
    };
    let decoded = tokenizer.decode(&fixed)?;
    Ok(vec![
        (
            format!("semantic indices {sh}x{sw}"),
            grid_ids(&tokens.semantic),
        ),
        (format!("pixel indices {ph}x{pw}"), grid_ids(&tokens.pixel)),
        // Five resolution levels of convolutions, attention and SpatialNorm in f32.
        (
            "decoded image [1, 3, 64, 96], fixed tokens".into(),
            floats(decoded, 1e-3),
        ),
    ])
}

/// The demo MLLM: a prompt's last logits, six greedy steps, and the prompt's logits again
/// with the vocabulary (embedding and LM head) held in shards of 37 rows.
fn mllm<B: IllumeBackend>(device: &B::Device) -> Result<Items, ParityError> {
    use illume_mllm::IllumeMllm;
    let dir = crate::demo::materialize("mllm", illume_mllm::demo::write)?;
    let vision = illume_mllm::demo::vision_config();
    let prompt: Vec<u32> = (0..23u32).map(|i| (i * 37 + 11) % 280).collect();
    let last_logits = |model: &IllumeMllm<B>, ids: &[u32]| -> Result<Tensor<B, 2>, ParityError> {
        let mut cache = model.lm.new_cache(1, ids.len());
        Ok(model
            .lm
            .forward_last_logits(model.lm.embed(ids)?, &mut cache, &[0])?)
    };

    let model = IllumeMllm::<B>::load(&dir, &vision, device)?;
    let logits = last_logits(&model, &prompt)?;
    let mut sequence = prompt.clone();
    let mut greedy = Vec::new();
    let mut next = logits.clone();
    for _ in 0..6 {
        let id = next
            .clone()
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .into_vec::<i64>()?[0];
        greedy.push(id);
        sequence.push(id as u32);
        next = last_logits(&model, &sequence)?;
    }
    drop(model);
    let sharded = IllumeMllm::<B>::load_with_shards(&dir, &vision, 37, device)?;
    let sharded_logits = last_logits(&sharded, &prompt)?;
    // Two decoder layers and the LM head in f32.
    Ok(vec![
        ("prompt logits (23 tokens)".into(), floats(logits, 1e-4)),
        ("greedy ids (6 steps)".into(), Produced::Ids(greedy)),
        (
            "prompt logits, vocabulary in 37-row shards".into(),
            floats(sharded_logits, 1e-4),
        ),
    ])
}

/// The demo diffusion decoder at 512x512: two guided denoising steps from seeded latents,
/// then the VAE.
fn diffusion<B: IllumeBackend>(device: &B::Device) -> Result<Items, ParityError> {
    use illume_diffusion::{
        CodeEmbedder, CodePrecision, DenoiseOptions, DiffusionDecoder, ImageSize, NoiseSource,
    };
    use illume_dualvitok::{DualTokens, DualViTok};
    let tokenizer_dir = crate::demo::materialize("dualvitok", illume_dualvitok::demo::write)?;
    let tokenizer = DualViTok::<B>::load(&tokenizer_dir, device)?;
    let dir = crate::demo::materialize("diffusion", illume_diffusion::demo::write)?;
    let decoder = DiffusionDecoder::<B>::load(&dir, device)?;
    let config = illume_dualvitok::demo::config();
    let tokens = DualTokens {
        semantic: pattern_grid([9, 9], config.semantic_quantizer.codebook_size)?,
        pixel: pattern_grid([16, 16], config.pixel_quantizer.codebook_size)?,
    };
    let code_map = CodeEmbedder::new(&tokenizer, CodePrecision::Float32).code_map(&tokens)?;
    let size = ImageSize {
        width: 512,
        height: 512,
    };
    let mut noise = NoiseSource::new(5);
    let initial = decoder.initial_noise(size, &mut noise);
    let options = DenoiseOptions {
        size,
        steps: 2,
        guidance_scale: 1.5,
    };
    let latents = decoder.denoise(code_map, initial, &options, &mut noise, |_| {
        std::ops::ControlFlow::Continue(())
    })?;
    let pixels = decoder.latents_to_pixels(latents.clone(), None);
    // A UNet twice (cross-attention, GroupNorm, convolutions) and a VAE, in f32.
    Ok(vec![
        ("latents after 2 guided steps".into(), floats(latents, 1e-3)),
        ("VAE decode [1, 3, 512, 512]".into(), floats(pixels, 1e-3)),
    ])
}
