//! diffusers `Transformer2DModel` (continuous input, `norm_type="layer_norm"`) and its
//! `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, LayerNorm, Linear};
use burn::tensor::{activation, backend::Backend, Tensor};
use illume_backends::reference::apply_layer_norm;
use illume_backends::IllumeBackend;

use crate::layers::{
    conv2d, group_norm, group_norm_config, layer_norm_config, linear, Attention,
    CrossAttentionContext,
};

/// Epsilon of the transformer blocks' LayerNorms (diffusers' default).
const LAYER_NORM_EPS: f64 = 1e-5;

/// `GEGLU`: `proj` to twice the width, `value * gelu(gate)` (exact GELU).
#[derive(Module, Debug)]
pub struct GeGlu<B: Backend> {
    proj: Linear<B>,
}

/// `FeedForward(dim, activation_fn="geglu")`, inner width 4·dim. Checkpoint keys
/// `ff.net.0.proj` / `ff.net.2` are loaded as `ff.geglu.proj` / `ff.linear_out` (a Rust
/// field cannot be named `0`; see [`super::checkpoint_key`]).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    geglu: GeGlu<B>,
    linear_out: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    fn new(dim: usize, device: &B::Device) -> Self {
        let inner = 4 * dim;
        Self {
            geglu: GeGlu {
                proj: linear(dim, 2 * inner, true, device),
            },
            linear_out: linear(inner, dim, true, device),
        }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let projected = self.geglu.proj.forward(x);
        let [value, gate] = projected
            .chunk(2, 2)
            .try_into()
            .expect("GEGLU projection splits in two");
        self.linear_out.forward(value * activation::gelu(gate))
    }
}

/// `BasicTransformerBlock` with LayerNorms (eps 1e-5), self-attention, cross-attention and
/// the feed-forward, each with a residual connection.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    norm1: LayerNorm<B>,
    attn1: Attention<B>,
    norm2: LayerNorm<B>,
    attn2: Attention<B>,
    norm3: LayerNorm<B>,
    ff: FeedForward<B>,
}

impl<B: IllumeBackend> BasicTransformerBlock<B> {
    fn new(dim: usize, heads: usize, cross_attention_dim: usize, device: &B::Device) -> Self {
        Self {
            norm1: layer_norm_config(dim, LAYER_NORM_EPS).init(device),
            attn1: Attention::transformer(dim, dim, heads, device),
            norm2: layer_norm_config(dim, LAYER_NORM_EPS).init(device),
            attn2: Attention::transformer(dim, cross_attention_dim, heads, device),
            norm3: layer_norm_config(dim, LAYER_NORM_EPS).init(device),
            ff: FeedForward::new(dim, device),
        }
    }

    fn forward(&self, x: Tensor<B, 3>, context: &CrossAttentionContext<B>) -> Tensor<B, 3> {
        let x = self.attn1.forward(
            apply_layer_norm(&self.norm1, x.clone(), LAYER_NORM_EPS),
            None,
        ) + x;
        let x = self.attn2.forward_cross(
            apply_layer_norm(&self.norm2, x.clone(), LAYER_NORM_EPS),
            context,
        ) + x;
        self.ff
            .forward(apply_layer_norm(&self.norm3, x.clone(), LAYER_NORM_EPS))
            + x
    }
}

/// `Transformer2DModel`: GroupNorm (eps 1e-6), projection in, transformer blocks over the
/// `h·w` positions, projection out, residual. The projections are Linear layers
/// (`use_linear_projection`, SDXL) or 1×1 convolutions (checkpoint keys `proj_in`/`proj_out`
/// loaded as `proj_in_conv`/`proj_out_conv`).
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    norm: GroupNorm<B>,
    proj_in: Option<Linear<B>>,
    proj_in_conv: Option<Conv2d<B>>,
    transformer_blocks: Vec<BasicTransformerBlock<B>>,
    proj_out: Option<Linear<B>>,
    proj_out_conv: Option<Conv2d<B>>,
}

/// Construction settings of a [`Transformer2DModel`].
#[derive(Debug, Clone, Copy)]
pub struct TransformerSettings {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub cross_attention_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

impl<B: IllumeBackend> Transformer2DModel<B> {
    pub fn new(s: TransformerSettings, device: &B::Device) -> Self {
        let c = s.channels;
        let lin = s.linear_projection;
        Self {
            norm: group_norm_config(s.groups, c, 1e-6).init(device),
            proj_in: lin.then(|| linear(c, c, true, device)),
            proj_in_conv: (!lin).then(|| conv2d([c, c], 1, 1, 0, device)),
            transformer_blocks: (0..s.layers)
                .map(|_| BasicTransformerBlock::new(c, s.heads, s.cross_attention_dim, device))
                .collect(),
            proj_out: lin.then(|| linear(c, c, true, device)),
            proj_out_conv: (!lin).then(|| conv2d([c, c], 1, 1, 0, device)),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>, context: &CrossAttentionContext<B>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let normed = group_norm(&self.norm, x.clone(), false);
        let normed = match &self.proj_in_conv {
            Some(conv) => conv.forward(normed),
            None => normed,
        };
        let mut tokens = normed.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        if let Some(proj) = &self.proj_in {
            tokens = proj.forward(tokens);
        }
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context);
        }
        if let Some(proj) = &self.proj_out {
            tokens = proj.forward(tokens);
        }
        let out = tokens.reshape([b, h, w, c]).permute([0, 3, 1, 2]);
        let out = match &self.proj_out_conv {
            Some(conv) => conv.forward(out),
            None => out,
        };
        out + x
    }
}
