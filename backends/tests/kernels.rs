//! Each hot-path operation, as the backend dispatches it (a fused CubeCL kernel on wgpu and
//! cuda, the reference composition on ndarray), against the reference composition on the
//! same backend and against a plain scalar loop written here, over shapes that include odd
//! sizes (not multiples of the vector width or the cube size), strided inputs, and the
//! fall-back shapes.

use burn::tensor::{Int, Tensor, TensorData};
use illume_backends::{reference, sample_values, IllumeBackend, Modulation};
use illume_test_harness::{assert_close_scaled, backend_tests, to_f32s};

fn tensor<B: IllumeBackend, const D: usize>(
    data: &[f32],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
}

fn ints<B: IllumeBackend>(t: Tensor<B, 1, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().into_vec::<i64>().unwrap()
}

/// The dispatched operation and the reference both match `expected`, and each other.
fn check(what: &str, dispatched: Vec<f32>, reference: Vec<f32>, expected: &[f32], tol: f32) {
    assert_close_scaled(
        &format!("{what}: dispatched vs scalar loop"),
        &dispatched,
        expected,
        tol,
    );
    assert_close_scaled(
        &format!("{what}: reference vs scalar loop"),
        &reference,
        expected,
        tol,
    );
    assert_close_scaled(
        &format!("{what}: dispatched vs reference"),
        &dispatched,
        &reference,
        tol,
    );
}

fn rms_norm_matches_reference<B: IllumeBackend>(device: &B::Device) {
    // d = 7 (no vectors), 130 (pairs), 1000 and 2048 (vectors of 4, 250/512 per row).
    for (rows, d) in [(3, 7), (5, 130), (4, 1000), (2, 2048)] {
        let x = sample_values(rows * d, 1);
        let w = sample_values(d, 2);
        let eps = 1e-6;
        let expected: Vec<f32> = x
            .chunks(d)
            .flat_map(|row| {
                let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
                let inv = 1.0 / (ms + eps as f32).sqrt();
                row.iter()
                    .zip(&w)
                    .map(move |(v, w)| v * inv * w)
                    .collect::<Vec<_>>()
            })
            .collect();
        let xt = tensor::<B, 2>(&x, [rows, d], device);
        let wt = tensor::<B, 1>(&w, [d], device);
        // f32 sums of up to 2048 squares: a few ulps of unit-scale outputs.
        check(
            &format!("rms_norm [{rows}, {d}]"),
            to_f32s(B::rms_norm(xt.clone(), wt.clone(), eps)),
            to_f32s(reference::rms_norm(xt, wt, eps)),
            &expected,
            1e-5,
        );
    }
    // A transposed (strided) 3-D input.
    let x = sample_values(2 * 6 * 12, 3);
    let w = sample_values(6, 4);
    let xt = tensor::<B, 3>(&x, [2, 6, 12], device).swap_dims(1, 2);
    let wt = tensor::<B, 1>(&w, [6], device);
    let expected = to_f32s(reference::rms_norm(xt.clone(), wt.clone(), 1e-5));
    assert_close_scaled(
        "rms_norm strided [2, 12, 6]",
        &to_f32s(B::rms_norm(xt, wt, 1e-5)),
        &expected,
        1e-5,
    );
}

fn silu_mul_matches_reference<B: IllumeBackend>(device: &B::Device) {
    for shape in [[7usize, 13], [6, 64], [3, 1001]] {
        let len = shape[0] * shape[1];
        let (g, u) = (sample_values(len, 5), sample_values(len, 6));
        let expected: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        let (gt, ut) = (
            tensor::<B, 2>(&g, shape, device),
            tensor::<B, 2>(&u, shape, device),
        );
        // Element-wise in f32: rounding only.
        check(
            &format!("silu_mul {shape:?}"),
            to_f32s(B::silu_mul(gt.clone(), ut.clone())),
            to_f32s(reference::silu_mul(gt, ut)),
            &expected,
            1e-6,
        );
    }
    let (g, u) = (sample_values(5 * 9, 7), sample_values(5 * 9, 8));
    let gt = tensor::<B, 2>(&g, [5, 9], device).transpose();
    let ut = tensor::<B, 2>(&u, [9, 5], device);
    let expected = to_f32s(reference::silu_mul(gt.clone(), ut.clone()));
    assert_close_scaled(
        "silu_mul strided [9, 5]",
        &to_f32s(B::silu_mul(gt, ut)),
        &expected,
        1e-6,
    );
}

/// Rotate-half RoPE on `[b, h, s, d]` row-major data.
fn rotary_loop(x: &[f32], [b, h, s, d]: [usize; 4], cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let half = d / 2;
    let mut out = vec![0.0; x.len()];
    for row in 0..b * h * s {
        let p = row % s;
        for j in 0..d {
            let rotated = if j < half {
                -x[row * d + j + half]
            } else {
                x[row * d + j - half]
            };
            out[row * d + j] = x[row * d + j] * cos[p * d + j] + rotated * sin[p * d + j];
        }
    }
    out
}

fn rotary_matches_reference<B: IllumeBackend>(device: &B::Device) {
    // d = 6 (odd half), 16, 80 (the ViT head), 128 (the LLM head).
    for shape in [
        [1usize, 2, 5, 6],
        [2, 3, 7, 16],
        [1, 2, 9, 80],
        [1, 2, 3, 128],
    ] {
        let [b, h, s, d] = shape;
        let x = sample_values(b * h * s * d, 9);
        let angles = sample_values(s * d, 10);
        let cos: Vec<f32> = angles.iter().map(|a| (a * 3.0).cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| (a * 3.0).sin()).collect();
        let expected = rotary_loop(&x, shape, &cos, &sin);
        let xt = tensor::<B, 4>(&x, shape, device);
        let (ct, st) = (
            tensor::<B, 2>(&cos, [s, d], device),
            tensor::<B, 2>(&sin, [s, d], device),
        );
        check(
            &format!("rotary {shape:?}"),
            to_f32s(B::rotary(xt.clone(), ct.clone(), st.clone())),
            to_f32s(reference::rotary(xt, ct, st)),
            &expected,
            1e-6,
        );
    }
    // The usual strided view: a projection [b, s, h, d] seen as [b, h, s, d].
    let (b, s, h, d) = (2, 5, 3, 8);
    let x = sample_values(b * s * h * d, 11);
    let angles = sample_values(s * d, 12);
    let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
    let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
    let xt = tensor::<B, 4>(&x, [b, s, h, d], device).swap_dims(1, 2);
    let (ct, st) = (
        tensor::<B, 2>(&cos, [s, d], device),
        tensor::<B, 2>(&sin, [s, d], device),
    );
    let expected = to_f32s(reference::rotary(xt.clone(), ct.clone(), st.clone()));
    assert_close_scaled(
        "rotary strided [2, 3, 5, 8]",
        &to_f32s(B::rotary(xt, ct, st)),
        &expected,
        1e-6,
    );
}

/// GroupNorm with optional affine and modulation, then optional SiLU, in f64.
#[allow(clippy::too_many_arguments)]
fn group_norm_loop(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    groups: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f64,
    modulation: Option<(&[f32], &[f32])>,
    silu: bool,
) -> Vec<f32> {
    let plane = h * w;
    let len = c / groups * plane;
    let mut out = vec![0.0; x.len()];
    for g in 0..n * groups {
        let run = &x[g * len..(g + 1) * len];
        let mean = run.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = run.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, &v) in run.iter().enumerate() {
            let at = g * len + i;
            let ch = (at / plane) % c;
            let mut y = (v as f64 - mean) * inv;
            if let Some(gamma) = gamma {
                y *= gamma[ch] as f64;
            }
            if let Some(beta) = beta {
                y += beta[ch] as f64;
            }
            if let Some((scale, shift)) = modulation {
                y = y * scale[at] as f64 + shift[at] as f64;
            }
            if silu {
                y /= 1.0 + (-y).exp();
            }
            out[at] = y as f32;
        }
    }
    out
}

fn group_norm_matches_reference<B: IllumeBackend>(device: &B::Device) {
    let eps = 1e-6;
    // An odd plane (15) with partial affine, the MoVQ layout (32 groups), and large groups
    // spread over several statistics chunks, offset by +5 so that a naive E[x²] − E[x]²
    // would lose the variance.
    struct Case {
        shape: [usize; 4],
        groups: usize,
        with_gamma: bool,
        with_beta: bool,
        silu: bool,
        offset: f32,
    }
    let cases = [
        Case {
            shape: [2, 6, 5, 3],
            groups: 3,
            with_gamma: true,
            with_beta: false,
            silu: false,
            offset: 0.0,
        },
        Case {
            shape: [1, 64, 8, 8],
            groups: 32,
            with_gamma: true,
            with_beta: true,
            silu: true,
            offset: 0.0,
        },
        Case {
            shape: [1, 32, 64, 64],
            groups: 2,
            with_gamma: true,
            with_beta: true,
            silu: false,
            offset: 5.0,
        },
        Case {
            shape: [2, 4, 3, 7],
            groups: 2,
            with_gamma: false,
            with_beta: false,
            silu: true,
            offset: 0.0,
        },
    ];
    for Case {
        shape,
        groups,
        with_gamma,
        with_beta,
        silu,
        offset,
    } in cases
    {
        let [n, c, h, w] = shape;
        let x: Vec<f32> = sample_values(n * c * h * w, 13)
            .iter()
            .map(|v| v + offset)
            .collect();
        let gamma = sample_values(c, 14);
        let beta = sample_values(c, 15);
        let expected = group_norm_loop(
            &x,
            shape,
            groups,
            with_gamma.then_some(&gamma[..]),
            with_beta.then_some(&beta[..]),
            eps,
            None,
            silu,
        );
        let xt = tensor::<B, 4>(&x, shape, device);
        let gt = with_gamma.then(|| tensor::<B, 1>(&gamma, [c], device));
        let bt = with_beta.then(|| tensor::<B, 1>(&beta, [c], device));
        // f32 statistics over up to 65,536 values of unit variance.
        check(
            &format!("group_norm {shape:?} / {groups} groups"),
            to_f32s(B::group_norm(
                xt.clone(),
                groups,
                gt.clone(),
                bt.clone(),
                eps,
                silu,
            )),
            to_f32s(reference::group_norm(xt, groups, gt, bt, eps, silu)),
            &expected,
            1e-4,
        );
    }
}

fn spatial_norm_matches_reference<B: IllumeBackend>(device: &B::Device) {
    let eps = 1e-6;
    for (shape, groups, silu) in [
        ([2usize, 8, 6, 5], 4usize, true),
        ([1, 64, 4, 4], 32, false),
    ] {
        let [n, c, h, w] = shape;
        let len = n * c * h * w;
        let (x, scale, shift) = (
            sample_values(len, 16),
            sample_values(len, 17),
            sample_values(len, 18),
        );
        let (gamma, beta) = (sample_values(c, 19), sample_values(c, 20));
        let expected = group_norm_loop(
            &x,
            shape,
            groups,
            Some(&gamma),
            Some(&beta),
            eps,
            Some((&scale, &shift)),
            silu,
        );
        let xt = tensor::<B, 4>(&x, shape, device);
        let modulation = Modulation {
            scale: tensor::<B, 4>(&scale, shape, device),
            shift: tensor::<B, 4>(&shift, shape, device),
        };
        let gt = Some(tensor::<B, 1>(&gamma, [c], device));
        let bt = Some(tensor::<B, 1>(&beta, [c], device));
        check(
            &format!("spatial_norm {shape:?} / {groups} groups"),
            to_f32s(B::spatial_norm(
                xt.clone(),
                groups,
                gt.clone(),
                bt.clone(),
                eps,
                modulation.clone(),
                silu,
            )),
            to_f32s(reference::spatial_norm(
                xt, groups, gt, bt, eps, modulation, silu,
            )),
            &expected,
            1e-4,
        );
    }
}

/// Squared distance of row `i` of `z` to code `j`, in f64.
fn distance(z: &[f32], codebook: &[f32], d: usize, i: usize, j: usize) -> f64 {
    (0..d)
        .map(|t| (z[i * d + t] as f64 - codebook[j * d + t] as f64).powi(2))
        .sum()
}

/// Every index is the exact nearest code, or a code at the same distance up to f32 rounding
/// of the distance (the two formulations round differently on near-ties).
fn assert_nearest(what: &str, got: &[i64], z: &[f32], codebook: &[f32], d: usize) {
    let k = codebook.len() / d;
    let mut exact = 0;
    for (i, &g) in got.iter().enumerate() {
        let best = (0..k)
            .min_by(|&a, &b| {
                distance(z, codebook, d, i, a).total_cmp(&distance(z, codebook, d, i, b))
            })
            .unwrap();
        if g as usize == best {
            exact += 1;
            continue;
        }
        let (dg, db) = (
            distance(z, codebook, d, i, g as usize),
            distance(z, codebook, d, i, best),
        );
        // Near-tie tolerance: f32 distances of unit-scale vectors.
        assert!(
            (dg - db).abs() <= 1e-5 * db.max(1.0),
            "{what}: row {i} got code {g} at distance {dg}, nearest is {best} at {db}"
        );
    }
    println!("    {what}: {exact}/{} exact nearest codes", got.len());
}

fn nearest_code_matches_reference<B: IllumeBackend>(device: &B::Device) {
    // Odd code dimension, the tiny configuration (8), the real one (32) with a codebook
    // spread over several cube ranges, and more rows than one cube holds.
    for (n, k, d) in [
        (5usize, 7usize, 3usize),
        (37, 100, 8),
        (130, 1000, 32),
        (70, 3000, 32),
    ] {
        let z = sample_values(n * d, 21);
        let codebook = sample_values(k * d, 22);
        let zt = tensor::<B, 2>(&z, [n, d], device);
        let ct = tensor::<B, 2>(&codebook, [k, d], device);
        let dispatched = ints(B::nearest_code(zt.clone(), ct.clone()));
        let reference = ints(reference::nearest_code(zt, ct, 64));
        assert_nearest(
            &format!("nearest_code dispatched n={n} k={k} d={d}"),
            &dispatched,
            &z,
            &codebook,
            d,
        );
        assert_nearest(
            &format!("nearest_code reference n={n} k={k} d={d}"),
            &reference,
            &z,
            &codebook,
            d,
        );
    }
    // Exact ties: codes 3 and 10 are the same vector and z sits on it: the first wins.
    let d = 4;
    let mut codebook = sample_values(12 * d, 23);
    let twin: Vec<f32> = codebook[3 * d..4 * d].to_vec();
    codebook[10 * d..11 * d].copy_from_slice(&twin);
    let zt = tensor::<B, 2>(&twin, [1, d], device);
    let ct = tensor::<B, 2>(&codebook, [12, d], device);
    assert_eq!(
        ints(B::nearest_code(zt.clone(), ct.clone())),
        vec![3],
        "dispatched tie"
    );
    assert_eq!(
        ints(reference::nearest_code(zt, ct, 5)),
        vec![3],
        "reference tie"
    );
}

/// Softmax attention in f64 over row-major `[b, h, sq, d]` / `[b, hk, sk, d]` data.
fn attention_loop(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [b, h, sq, d]: [usize; 4],
    [hk, sk]: [usize; 2],
    scale: f64,
    causal: bool,
) -> Vec<f32> {
    let mut out = vec![0.0; q.len()];
    for bi in 0..b {
        for hi in 0..h {
            let kh = hi / (h / hk);
            for i in 0..sq {
                let qo = ((bi * h + hi) * sq + i) * d;
                let visible: Vec<usize> =
                    (0..sk).filter(|&j| !causal || j + sq <= i + sk).collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        let ko = ((bi * hk + kh) * sk + j) * d;
                        (0..d)
                            .map(|t| q[qo + t] as f64 * k[ko + t] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for t in 0..d {
                    let acc: f64 = visible
                        .iter()
                        .zip(&weights)
                        .map(|(&j, w)| w * v[((bi * hk + kh) * sk + j) * d + t] as f64)
                        .sum();
                    out[qo + t] = (acc / total) as f32;
                }
            }
        }
    }
    out
}

fn attention_matches_reference<B: IllumeBackend>(device: &B::Device) {
    // (q shape, kv heads, kv length, causal): plain, causal over two query blocks (33 rows),
    // KV-cache prefill chunk and one-token decode, grouped-query heads, the ViT head (80),
    // the LLM head (128) over several key tiles, and a head too wide for the kernel (320,
    // the reference path).
    let cases: [([usize; 4], usize, usize, bool); 8] = [
        ([1, 2, 5, 16], 2, 5, false),
        ([2, 3, 33, 8], 3, 33, true),
        ([1, 2, 3, 16], 2, 11, true),
        ([1, 4, 1, 16], 4, 17, true),
        ([1, 4, 6, 8], 2, 6, true),
        ([1, 2, 20, 80], 2, 20, false),
        ([1, 1, 9, 128], 1, 70, true),
        ([1, 1, 4, 320], 1, 4, false),
    ];
    for (shape, hk, sk, causal) in cases {
        let [b, h, sq, d] = shape;
        let q = sample_values(b * h * sq * d, 24);
        let k = sample_values(b * hk * sk * d, 25);
        let v = sample_values(b * hk * sk * d, 26);
        let scale = 1.0 / (d as f64).sqrt();
        let expected = attention_loop(&q, &k, &v, shape, [hk, sk], scale, causal);
        let qt = tensor::<B, 4>(&q, shape, device);
        let kt = tensor::<B, 4>(&k, [b, hk, sk, d], device);
        let vt = tensor::<B, 4>(&v, [b, hk, sk, d], device);
        // Online vs two-pass softmax in f32: a few ulps of unit-scale outputs.
        check(
            &format!("attention q{shape:?} kv[{hk}, {sk}] causal={causal}"),
            to_f32s(IllumeBackend::attention(
                qt.clone(),
                kt.clone(),
                vt.clone(),
                scale,
                causal,
            )),
            to_f32s(reference::attention(qt, kt, vt, scale, causal)),
            &expected,
            1e-5,
        );
    }
    // Strided query and keys: [b, s, h, d] projections seen as [b, h, s, d].
    let (b, h, s, d) = (1, 2, 7, 16);
    let q = tensor::<B, 4>(&sample_values(b * s * h * d, 27), [b, s, h, d], device).swap_dims(1, 2);
    let k = tensor::<B, 4>(&sample_values(b * s * h * d, 28), [b, s, h, d], device).swap_dims(1, 2);
    let v = tensor::<B, 4>(&sample_values(b * h * s * d, 29), [b, h, s, d], device);
    let expected = to_f32s(reference::attention(
        q.clone(),
        k.clone(),
        v.clone(),
        0.25,
        true,
    ));
    assert_close_scaled(
        "attention strided",
        &to_f32s(IllumeBackend::attention(q, k, v, 0.25, true)),
        &expected,
        1e-5,
    );
}

backend_tests!(
    rms_norm_matches_reference,
    silu_mul_matches_reference,
    rotary_matches_reference,
    group_norm_matches_reference,
    spatial_norm_matches_reference,
    nearest_code_matches_reference,
    attention_matches_reference,
);
