//! Tensor building blocks shared by the DualViTok networks.

use burn::nn::conv::Conv2dConfig;
use burn::nn::PaddingConfig2d;
use burn::tensor::{activation, backend::Backend, Tensor};

/// A `k×k`, stride-1 convolution with "same" zero padding (`k/2`), as every convolution of the
/// MoVQ encoder/decoder is.
pub fn conv_config(c_in: usize, c_out: usize, kernel: usize) -> Conv2dConfig {
    let p = kernel / 2;
    Conv2dConfig::new([c_in, c_out], [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
}

/// Convolutions go through [`illume_backends::IllumeBackend::convolve2d`], each backend's
/// fastest path.
pub use illume_backends::conv2d;

/// `x` with a row-major layout (a copy when `x` is a strided view, a no-op otherwise).
///
/// Burn 0.21's wgpu matmul returns wrong values when its right operand is a transposed view
/// with a long inner dimension that is not a multiple of 16 (seen with 1160 and 1176 = the
/// ViT patch size; fine with 1024 or 1200). Operands that may be such views go through here.
pub fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    x.reshape([dims.iter().product::<usize>()]).reshape(dims)
}

/// `x · σ(1.702 x)`, the activation of the Qwen2-VL vision blocks.
pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * activation::sigmoid(x.mul_scalar(1.702))
}

/// LayerNorm over the last dimension without affine parameters (`elementwise_affine=False`).
pub fn layer_norm_plain<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    illume_backends::reference::layer_norm(x, None, None, eps)
}

/// `F.pixel_unshuffle(x, 2)`: `[b, c, h, w]` → `[b, 4c, h/2, w/2]`, channel `4c + 2i + j`
/// holding the pixel at offset `(i, j)` of each 2×2 cell.
pub fn pixel_unshuffle<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h / 2, 2, w / 2, 2])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([b, c * 4, h / 2, w / 2])
}

/// `F.pixel_shuffle(x, 2)`, the inverse of [`pixel_unshuffle`].
pub fn pixel_shuffle<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c4, h, w] = x.dims();
    let c = c4 / 4;
    x.reshape([b, c, 2, 2, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([b, c, h * 2, w * 2])
}

/// 2×2 average pooling (stride 2).
pub fn avg_pool_2x2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h / 2, 2, w / 2, 2])
        .mean_dim(5)
        .mean_dim(3)
        .reshape([b, c, h / 2, w / 2])
}

/// Nearest-neighbour upsampling by an integer factor (exact for PyTorch's `nearest` mode at
/// integer scales).
pub fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, factor: usize) -> Tensor<B, 4> {
    if factor == 1 {
        return x;
    }
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, factor, w, factor])
        .reshape([b, c, h * factor, w * factor])
}

/// `x · scale + shift` where `scale`/`shift` live on a grid `factor` times coarser than `x`
/// (nearest-upsampled by broadcasting, never materialised at full size).
pub fn modulate_nearest<B: Backend>(
    x: Tensor<B, 4>,
    scale: Tensor<B, 4>,
    shift: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let [_, _, hs, ws] = scale.dims();
    let (fy, fx) = (h / hs, w / ws);
    let coarse = |t: Tensor<B, 4>| t.reshape([b, c, hs, 1, ws, 1]);
    (x.reshape([b, c, hs, fy, ws, fx]) * coarse(scale) + coarse(shift)).reshape([b, c, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};
    use illume_backends::NdArray;

    type B = NdArray;

    #[test]
    fn shuffles_are_inverse_and_pooling_averages_cells() {
        let device = Default::default();
        let x = Tensor::<B, 4>::random([1, 3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        pixel_shuffle(pixel_unshuffle(x.clone()))
            .into_data()
            .assert_eq(&x.clone().into_data(), true);
        // Channel 4c + 2i + j of the unshuffled tensor is pixel (2y + i, 2x + j) of channel c.
        let un = pixel_unshuffle(x.clone());
        let a = un.slice([0..1, 7..8, 1..2, 2..3]).into_scalar();
        let b = x.clone().slice([0..1, 1..2, 3..4, 5..6]).into_scalar();
        assert_eq!(a, b);
        let pooled = avg_pool_2x2(x.clone())
            .slice([0..1, 2..3, 1..2, 0..1])
            .into_scalar();
        let cell = x.slice([0..1, 2..3, 2..4, 0..2]).mean().into_scalar();
        assert!((pooled - cell).abs() < 1e-6);
    }

    #[test]
    fn coarse_modulation_equals_upsampled_modulation() {
        let device = Default::default();
        let x = Tensor::<B, 4>::random([1, 2, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let s = Tensor::<B, 4>::random([1, 2, 2, 3], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<B, 4>::random([1, 2, 2, 3], Distribution::Normal(0.0, 1.0), &device);
        let expected = x.clone() * upsample_nearest(s.clone(), 4) + upsample_nearest(t.clone(), 4);
        modulate_nearest(x, s, t)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
    }
}
