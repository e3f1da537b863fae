//! The UNet's down, mid and up blocks: `DownBlock2D` / `CrossAttnDownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `UpBlock2D` / `CrossAttnUpBlock2D` (a block without attention
//! simply has an empty `attentions` list, exactly as its checkpoint has no such keys).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;

use super::config::{AttentionSettings, DownBlockSettings, MidBlockSettings, UpBlockSettings};
use super::transformer::{Transformer2DModel, TransformerSettings};
use crate::layers::{
    CrossAttentionContext, Downsample2D, ResnetBlock2D, ResnetSettings, Upsample2D,
};

/// Per-block inputs shared by every layer of one UNet call.
pub struct BlockInputs<'a, B: Backend> {
    /// `silu(timestep embedding)`, `[batch, temb]`.
    pub temb_silu: &'a Tensor<B, 2>,
    pub context: &'a CrossAttentionContext<B>,
}

/// Common settings of the resnets and transformers of every block.
#[derive(Debug, Clone, Copy)]
pub struct Shared {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub linear_projection: bool,
}

impl Shared {
    fn resnet(&self, in_channels: usize, out_channels: usize, scale: f64) -> ResnetSettings {
        ResnetSettings {
            in_channels,
            out_channels,
            temb_channels: Some(self.temb_channels),
            groups: self.groups,
            eps: self.eps,
            output_scale_factor: scale,
        }
    }

    fn transformers<B: IllumeBackend>(
        &self,
        channels: usize,
        attention: Option<&AttentionSettings>,
        device: &B::Device,
    ) -> Vec<Transformer2DModel<B>> {
        let Some(a) = attention else {
            return Vec::new();
        };
        a.layers
            .iter()
            .map(|&layers| {
                let settings = TransformerSettings {
                    channels,
                    heads: a.heads,
                    layers,
                    cross_attention_dim: a.cross_attention_dim,
                    groups: self.groups,
                    linear_projection: self.linear_projection,
                };
                Transformer2DModel::new(settings, device)
            })
            .collect()
    }
}

#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attentions: Vec<Transformer2DModel<B>>,
    downsamplers: Vec<Downsample2D<B>>,
}

impl<B: IllumeBackend> DownBlock<B> {
    pub fn new(s: &DownBlockSettings, shared: &Shared, padding: usize, device: &B::Device) -> Self {
        Self {
            resnets: (0..s.resnets)
                .map(|i| {
                    let cin = s.resnet_in_channels(i);
                    ResnetBlock2D::new(shared.resnet(cin, s.out_channels, 1.0), device)
                })
                .collect(),
            attentions: shared.transformers(s.out_channels, s.attention.as_ref(), device),
            downsamplers: s
                .downsample
                .then(|| Downsample2D::new(s.out_channels, padding, device))
                .into_iter()
                .collect(),
        }
    }

    /// Runs the block; pushes every intermediate state the up path consumes as a skip
    /// connection onto `skips`.
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        inputs: &BlockInputs<'_, B>,
        skips: &mut Vec<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(inputs.temb_silu));
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(x, inputs.context);
            }
            skips.push(x.clone());
        }
        for downsampler in &self.downsamplers {
            x = downsampler.forward(x);
            skips.push(x.clone());
        }
        x
    }
}

#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attentions: Vec<Transformer2DModel<B>>,
}

impl<B: IllumeBackend> MidBlock<B> {
    pub fn new(s: &MidBlockSettings, shared: &Shared, device: &B::Device) -> Self {
        let c = s.channels;
        let attentions = shared.transformers(c, Some(&s.attention), device);
        Self {
            resnets: (0..=attentions.len())
                .map(|_| ResnetBlock2D::new(shared.resnet(c, c, s.output_scale_factor), device))
                .collect(),
            attentions,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>, inputs: &BlockInputs<'_, B>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, Some(inputs.temb_silu));
        for (attention, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attention.forward(x, inputs.context);
            x = resnet.forward(x, Some(inputs.temb_silu));
        }
        x
    }
}

#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attentions: Vec<Transformer2DModel<B>>,
    upsamplers: Vec<Upsample2D<B>>,
}

impl<B: IllumeBackend> UpBlock<B> {
    pub fn new(s: &UpBlockSettings, shared: &Shared, device: &B::Device) -> Self {
        Self {
            resnets: (0..s.resnets)
                .map(|i| {
                    let cin = s.resnet_in_channels(i);
                    ResnetBlock2D::new(shared.resnet(cin, s.out_channels, 1.0), device)
                })
                .collect(),
            attentions: shared.transformers(s.out_channels, s.attention.as_ref(), device),
            upsamplers: s
                .upsample
                .then(|| Upsample2D::new(s.out_channels, device))
                .into_iter()
                .collect(),
        }
    }

    /// Runs the block, popping its skip connections off `skips` (deepest first). The
    /// upsampler resizes to the size of the next block's skips (twice the size, unless the
    /// UNet input is not a multiple of the total downsampling).
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        inputs: &BlockInputs<'_, B>,
        skips: &mut Vec<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("the down path pushed one skip per up resnet");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(inputs.temb_silu));
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(x, inputs.context);
            }
        }
        let upsample_size = skips.last().map(|skip| {
            let [_, _, h, w] = skip.dims();
            [h, w]
        });
        for upsampler in &self.upsamplers {
            x = upsampler.forward(x, upsample_size);
        }
        x
    }
}
