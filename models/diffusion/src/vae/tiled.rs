//! Tiled VAE decoding for large images on small devices, exact rather than blended.
//!
//! Blending overlapping tiles (diffusers' `enable_tiling`) leaves seams, because every
//! GroupNorm and the mid-block attention see the whole image. Here the latent-resolution
//! part (conv_in, mid block) runs whole, with the attention's queries chunked; from there on
//! the network runs layer by layer over horizontal strips: activations live in host memory,
//! each 3×3 convolution reads its strip plus one halo row on each side, and each GroupNorm
//! uses statistics gathered over the whole map first. The result equals plain decoding up
//! to float rounding, and device memory is bounded by the strip size.

use burn::nn::conv::Conv2d;
use burn::nn::GroupNorm;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{activation, Tensor, TensorData};
use illume_backends::IllumeBackend;

use super::{AutoencoderKL, VAE_DTYPE};
use crate::layers::{nearest_resize, ResnetBlock2D};

/// How to tile: the largest strip of one activation map held on the device at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaeTiling {
    /// Bytes of one strip of the widest activation (f32); convolution workspace comes on
    /// top of it. Also bounds the attention score block of the mid block.
    pub strip_bytes: usize,
}

impl Default for VaeTiling {
    /// 64 MiB strips.
    fn default() -> Self {
        Self {
            strip_bytes: 64 << 20,
        }
    }
}

/// A feature map `[n, c, h, w]` held in host memory between layers.
struct HostMap {
    data: Vec<f32>,
    dims: [usize; 4],
}

impl HostMap {
    fn zeros(dims: [usize; 4]) -> Self {
        Self {
            data: vec![0.0; dims.iter().product()],
            dims,
        }
    }

    fn from_tensor<B: IllumeBackend>(t: Tensor<B, 4>) -> Self {
        let dims = t.dims();
        let data = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32 activations");
        Self { data, dims }
    }

    /// Rows `[r0, r1)` of every channel, uploaded to `device`.
    fn rows<B: IllumeBackend>(&self, r0: usize, r1: usize, device: &B::Device) -> Tensor<B, 4> {
        let [n, c, h, w] = self.dims;
        let mut out = Vec::with_capacity(n * c * (r1 - r0) * w);
        for plane in self.data.chunks_exact(h * w) {
            out.extend_from_slice(&plane[r0 * w..r1 * w]);
        }
        Tensor::from_data(
            TensorData::new(out, [n, c, r1 - r0, w]),
            (device, VAE_DTYPE),
        )
    }

    /// Store `t` (`[n, c, rows, w]`) as rows starting at `r0`.
    fn write_rows<B: IllumeBackend>(&mut self, r0: usize, t: Tensor<B, 4>) {
        let [_, _, h, w] = self.dims;
        let rows = t.dims()[2];
        let values = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32");
        for (plane, strip) in self
            .data
            .chunks_exact_mut(h * w)
            .zip(values.chunks_exact(rows * w))
        {
            plane[r0 * w..(r0 + rows) * w].copy_from_slice(strip);
        }
    }

    /// Mean and biased variance of every (sample, group), in f64.
    fn group_stats(&self, groups: usize) -> Vec<(f64, f64)> {
        let [_, c, h, w] = self.dims;
        let group_len = c / groups * h * w;
        self.data
            .chunks_exact(group_len)
            .map(|g| {
                let mean = g.iter().map(|v| *v as f64).sum::<f64>() / group_len as f64;
                let var =
                    g.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / group_len as f64;
                (mean, var)
            })
            .collect()
    }
}

/// Tensors `(scale, shift)` `[n, c, 1, 1]` such that `x·scale + shift` is `norm(x)` with
/// the whole-map statistics of `map`.
fn norm_affine<B: IllumeBackend>(
    norm: &GroupNorm<B>,
    map: &HostMap,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [n, c, _, _] = map.dims;
    let groups = norm.num_groups;
    let stats = map.group_stats(groups);
    let host = |p: Option<Tensor<B, 1>>, default: f32| match p {
        Some(t) => t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32"),
        None => vec![default; c],
    };
    let gamma = host(norm.gamma.as_ref().map(|g| g.val()), 1.0);
    let beta = host(norm.beta.as_ref().map(|b| b.val()), 0.0);
    let mut scale = Vec::with_capacity(n * c);
    let mut shift = Vec::with_capacity(n * c);
    for s in 0..n {
        for ch in 0..c {
            let (mean, var) = stats[s * groups + ch / (c / groups)];
            let inv_std = 1.0 / (var + norm.epsilon).sqrt();
            let k = gamma[ch] as f64 * inv_std;
            scale.push(k as f32);
            shift.push((beta[ch] as f64 - mean * k) as f32);
        }
    }
    let column =
        |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [n, c, 1, 1]), (device, VAE_DTYPE));
    (column(scale), column(shift))
}

/// `[a, b)` row ranges of about `rows` rows covering `0..h`.
fn strips(h: usize, rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..h).step_by(rows).map(move |a| (a, (a + rows).min(h)))
}

/// A 3×3, stride-1, padding-1 convolution of a strip that already carries its halo rows
/// (one above and below, zero rows at the image border): no vertical padding.
fn conv3x3_rows<B: IllumeBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    B::convolve2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        ConvOptions::new([1, 1], [0, 1], [1, 1], 1).into(),
    )
}

/// Add the zero rows a padded convolution would see at the image border.
fn border_rows<B: IllumeBackend>(x: Tensor<B, 4>, top: bool, bottom: bool) -> Tensor<B, 4> {
    if !top && !bottom {
        return x;
    }
    x.pad(
        (0, 0, top as usize, bottom as usize),
        burn::tensor::ops::PadMode::Constant(0.0),
    )
}

/// `conv(silu(norm(x)))` over the whole map, strip by strip.
fn norm_silu_conv<B: IllumeBackend>(
    norm: &GroupNorm<B>,
    conv: &Conv2d<B>,
    x: &HostMap,
    strip_rows: usize,
    device: &B::Device,
    mut epilogue: impl FnMut(usize, usize, Tensor<B, 4>) -> Tensor<B, 4>,
) -> HostMap {
    let [n, _, h, w] = x.dims;
    let cout = conv.weight.dims()[0];
    let (scale, shift) = norm_affine(norm, x, device);
    let mut out = HostMap::zeros([n, cout, h, w]);
    for (a, b) in strips(h, strip_rows) {
        let (lo, hi) = (a.saturating_sub(1), (b + 1).min(h));
        let t = activation::silu(x.rows::<B>(lo, hi, device) * scale.clone() + shift.clone());
        let y = conv3x3_rows(conv, border_rows(t, lo == a, hi == b));
        out.write_rows(a, epilogue(a, b, y));
    }
    out
}

impl<B: IllumeBackend> AutoencoderKL<B> {
    /// `vae.decode(z)` with bounded device memory (see the module documentation); equal to
    /// [`AutoencoderKL::decode`] up to float rounding.
    pub fn decode_tiled(&self, z: Tensor<B, 4>, tiling: VaeTiling) -> Tensor<B, 4> {
        let device = z.device();
        let [n, _, lh, lw] = z.dims();
        let budget_elements = (tiling.strip_bytes / 4).max(1);
        let query_chunk = (budget_elements / (n * lh * lw)).max(1);
        let mut x = HostMap::from_tensor(self.decode_to_mid(z, Some(query_chunk)));
        let rows_for = |map: &HostMap| {
            let [n, c, _, w] = map.dims;
            (budget_elements / (n * c * w)).max(1)
        };
        for block in &self.decoder.up_blocks {
            for resnet in &block.resnets {
                let rows = rows_for(&x);
                x = resnet_tiled(resnet, &x, rows, &device);
            }
            for upsampler in &block.upsamplers {
                let rows = rows_for(&x);
                x = upsample_tiled(&upsampler.conv, &x, rows, &device);
            }
        }
        let d = &self.decoder;
        let rows = rows_for(&x);
        let image = norm_silu_conv(
            &d.conv_norm_out,
            &d.conv_out,
            &x,
            rows,
            &device,
            |_, _, y| y,
        );
        let [n, c, h, w] = image.dims;
        Tensor::from_data(
            TensorData::new(image.data, [n, c, h, w]),
            (&device, VAE_DTYPE),
        )
    }
}

fn resnet_tiled<B: IllumeBackend>(
    r: &ResnetBlock2D<B>,
    x: &HostMap,
    rows: usize,
    device: &B::Device,
) -> HostMap {
    let h1 = norm_silu_conv(&r.norm1, &r.conv1, x, rows, device, |_, _, y| y);
    norm_silu_conv(&r.norm2, &r.conv2, &h1, rows, device, |a, b, y| {
        let skip = x.rows::<B>(a, b, device);
        let skip = match &r.conv_shortcut {
            Some(conv) => illume_backends::conv2d(conv, skip),
            None => skip,
        };
        let out = skip + y;
        if r.output_scale_factor == 1.0 {
            out
        } else {
            out.div_scalar(r.output_scale_factor)
        }
    })
}

/// Nearest ×2 then a 3×3 convolution, strip by strip of the output.
fn upsample_tiled<B: IllumeBackend>(
    conv: &Conv2d<B>,
    x: &HostMap,
    rows: usize,
    device: &B::Device,
) -> HostMap {
    let [n, _, h, w] = x.dims;
    let (oh, ow) = (2 * h, 2 * w);
    let cout = conv.weight.dims()[0];
    let mut out = HostMap::zeros([n, cout, oh, ow]);
    // `rows` bounds input rows; output strips are twice as tall.
    for (a, b) in strips(oh, 2 * rows) {
        // Upsampled rows [u0, u1) feed output rows [a, b); input row i covers 2i, 2i + 1.
        let (u0, u1) = (a.saturating_sub(1), (b + 1).min(oh));
        let (i0, i1) = (u0 / 2, (u1 - 1) / 2 + 1);
        let up = nearest_resize(x.rows::<B>(i0, i1, device), [2 * (i1 - i0), ow]);
        let up = up.narrow(2, u0 - 2 * i0, u1 - u0);
        let y = conv3x3_rows(conv, border_rows(up, u0 == a, u1 == b));
        out.write_rows(a, y);
    }
    out
}
