//! diffusers `ResnetBlock2D` (`resnet_time_scale_shift="default"`, SiLU).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;

use super::{conv2d, group_norm, group_norm_config, linear};

/// `(x + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(silu(temb)))))) / output_scale_factor`,
/// with a 1×1 `conv_shortcut` on `x` when the channel count changes.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    pub(crate) norm1: GroupNorm<B>,
    pub(crate) conv1: Conv2d<B>,
    /// Absent in the VAE (no timestep embedding).
    pub(crate) time_emb_proj: Option<Linear<B>>,
    pub(crate) norm2: GroupNorm<B>,
    pub(crate) conv2: Conv2d<B>,
    pub(crate) conv_shortcut: Option<Conv2d<B>>,
    #[module(skip)]
    pub(crate) output_scale_factor: f64,
}

/// Construction settings of a [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy)]
pub struct ResnetSettings {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the timestep embedding, `None` for the VAE.
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

impl<B: IllumeBackend> ResnetBlock2D<B> {
    pub fn new(s: ResnetSettings, device: &B::Device) -> Self {
        let (cin, cout) = (s.in_channels, s.out_channels);
        Self {
            norm1: group_norm_config(s.groups, cin, s.eps).init(device),
            conv1: conv2d([cin, cout], 3, 1, 1, device),
            time_emb_proj: s.temb_channels.map(|t| linear(t, cout, true, device)),
            norm2: group_norm_config(s.groups, cout, s.eps).init(device),
            conv2: conv2d([cout, cout], 3, 1, 1, device),
            conv_shortcut: (cin != cout).then(|| conv2d([cin, cout], 1, 1, 0, device)),
            output_scale_factor: s.output_scale_factor,
        }
    }

    /// `temb_silu` is `silu(timestep embedding)`, `[batch, temb_channels]` (computed once per
    /// UNet call and shared by every block), or `None` in the VAE.
    pub fn forward(&self, x: Tensor<B, 4>, temb_silu: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let h = illume_backends::conv2d(&self.conv1, group_norm(&self.norm1, x.clone(), true));
        let h = match (&self.time_emb_proj, temb_silu) {
            (Some(proj), Some(temb)) => {
                let [b, c] = [h.dims()[0], h.dims()[1]];
                h + proj.forward(temb.clone()).reshape([b, c, 1, 1])
            }
            _ => h,
        };
        let h = illume_backends::conv2d(&self.conv2, group_norm(&self.norm2, h, true));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => illume_backends::conv2d(conv, x),
            None => x,
        };
        let out = shortcut + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.output_scale_factor)
        }
    }
}
