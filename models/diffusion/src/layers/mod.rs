//! Building blocks shared by the UNet and the VAE, named and laid out as diffusers' modules
//! so that parameter paths equal checkpoint keys.

mod attention;
mod norm;
mod resnet;
mod sampling;

pub use attention::{Attention, CrossAttentionContext};
pub use norm::{group_norm, group_norm_config, layer_norm_config};
pub use resnet::{ResnetBlock2D, ResnetSettings};
pub use sampling::{nearest_resize, Downsample2D, Upsample2D};

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;

/// A `k×k` convolution with bias and `padding` on every side (PyTorch `nn.Conv2d`).
pub fn conv2d<B: Backend>(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .init(device)
}

/// A `nn.Linear(d_in, d_out, bias)`.
pub fn linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}
