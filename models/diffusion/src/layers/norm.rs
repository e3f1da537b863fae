//! Normalisation through the backend's hot-path ops.

use burn::nn::{GroupNorm, GroupNormConfig, LayerNormConfig};
use burn::tensor::Tensor;
use illume_backends::IllumeBackend;

/// `nn.GroupNorm(groups, channels, eps)` with affine parameters.
pub fn group_norm_config(groups: usize, channels: usize, eps: f64) -> GroupNormConfig {
    GroupNormConfig::new(groups, channels).with_epsilon(eps)
}

/// `nn.LayerNorm(d, eps)` with affine parameters.
pub fn layer_norm_config(d: usize, eps: f64) -> LayerNormConfig {
    LayerNormConfig::new(d).with_epsilon(eps)
}

/// Apply a loaded GroupNorm through [`IllumeBackend::group_norm`], with the SiLU that
/// follows it in ResNet blocks fused when `silu` is set (a fused kernel can replace both).
pub fn group_norm<B: IllumeBackend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    silu: bool,
) -> Tensor<B, 4> {
    B::group_norm(
        x,
        norm.num_groups,
        norm.gamma.as_ref().map(|g| g.val()),
        norm.beta.as_ref().map(|b| b.val()),
        norm.epsilon,
        silu,
    )
}
