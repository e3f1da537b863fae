//! The semantic encoder head on top of the ViT, and the semantic decoder
//! (`dualvitok_model.py:SemanticEncoder`, `SemanticDecoder`).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::reference::apply_layer_norm;
use illume_backends::IllumeBackend;

use crate::config::{
    SemanticDecoderConfig, SemanticEncoderConfig, VisionTransformerConfig, SEMANTIC_BLOCK_HEADS,
    SEMANTIC_BLOCK_MLP_RATIO,
};
use crate::layers::{contiguous, layer_norm_plain};
use crate::preprocess::VitInput;
use crate::vit::{VisionBlock, VisionRope, VisionTransformer, VISION_NORM_EPS};

/// LayerNorm epsilon of the semantic decoder's output norm: `nn.LayerNorm(c)` with the
/// PyTorch default, unlike every other norm of the semantic path (1e-6).
pub const DECODER_OUTPUT_NORM_EPS: f64 = 1e-5;

/// `proj_out`: `nn.Sequential(Linear[, LayerNorm])` (see [`crate::names`] for the key names).
#[derive(Module, Debug)]
pub struct OutputProjection<B: Backend> {
    pub linear: Linear<B>,
    pub norm: Option<LayerNorm<B>>,
}

impl<B: Backend> OutputProjection<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.linear.forward(x);
        match &self.norm {
            // Only the semantic decoder has this norm.
            Some(norm) => apply_layer_norm(norm, x, DECODER_OUTPUT_NORM_EPS),
            None => x,
        }
    }
}

fn semantic_blocks<B: Backend>(
    dim: usize,
    count: usize,
    device: &B::Device,
) -> Vec<VisionBlock<B>> {
    (0..count)
        .map(|_| {
            VisionBlock::new(
                dim,
                SEMANTIC_BLOCK_HEADS,
                dim * SEMANTIC_BLOCK_MLP_RATIO,
                device,
            )
        })
        .collect()
}

fn run_semantic_blocks<B: IllumeBackend>(
    blocks: &[VisionBlock<B>],
    x: Tensor<B, 3>,
    grid: [usize; 2],
) -> Tensor<B, 3> {
    let [_, _, d] = x.dims();
    let rope = VisionRope::new(
        &VisionRope::<B>::row_major(grid),
        d / SEMANTIC_BLOCK_HEADS,
        &x.device(),
    );
    blocks.iter().fold(x, |x, block| block.forward(x, &rope))
}

/// What the semantic encoder computes for one image.
#[derive(Debug, Clone)]
pub struct SemanticEncoding<B: Backend> {
    /// ViT + merger output `[h1·w1, vit_hidden]` (the MLLM's semantic vision feature).
    pub vit_features: Tensor<B, 2>,
    /// `target_mlp(vit_features)`: LayerNorm without affine (the decoder's regression target).
    pub target: Tensor<B, 2>,
    /// Pre-quantisation latent `[1, z, h1, w1]`.
    pub z: Tensor<B, 4>,
}

/// `SemanticEncoder`: ViT → LayerNorm target → `proj_in` (1×1 conv used as a Linear) →
/// vision blocks with 2-D RoPE over the merged grid (row-major) → `proj_out` to z.
#[derive(Module, Debug)]
pub struct SemanticEncoder<B: Backend> {
    pub model: VisionTransformer<B>,
    /// `None` when the ViT width already equals `embed_dim` (`nn.Identity`).
    pub proj_in: Option<Conv2d<B>>,
    pub blocks: Vec<VisionBlock<B>>,
    pub proj_out: OutputProjection<B>,
    normalize_target: bool,
}

impl<B: Backend> SemanticEncoder<B> {
    pub fn new(
        vit: &VisionTransformerConfig,
        config: &SemanticEncoderConfig,
        device: &B::Device,
    ) -> Self {
        let e = config.embed_dim;
        Self {
            model: VisionTransformer::new(vit, device),
            proj_in: (vit.hidden_size != e)
                .then(|| Conv2dConfig::new([vit.hidden_size, e], [1, 1]).init(device)),
            blocks: semantic_blocks(e, config.num_blocks, device),
            proj_out: OutputProjection {
                linear: LinearConfig::new(e, config.z_channels).init(device),
                norm: None,
            },
            normalize_target: config.target_mlp == "norm",
        }
    }
}

impl<B: IllumeBackend> SemanticEncoder<B> {
    /// `target_mlp`: LayerNorm(eps 1e-6, no affine) or identity.
    pub fn target(&self, vit_features: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.normalize_target {
            layer_norm_plain(vit_features, VISION_NORM_EPS)
        } else {
            vit_features
        }
    }

    /// `F.linear(target, proj_in.weight.view(out, -1), proj_in.bias)` → `[1, n, embed]`.
    pub fn project_in(&self, target: Tensor<B, 2>) -> Tensor<B, 3> {
        let [n, c] = target.dims();
        let x = match &self.proj_in {
            Some(conv) => {
                let out = conv.weight.dims()[0];
                let weight = conv.weight.val().reshape([out, c]);
                let y = target.matmul(contiguous(weight.transpose()));
                match &conv.bias {
                    Some(bias) => y + bias.val().reshape([1, out]),
                    None => y,
                }
            }
            None => target,
        };
        let [_, e] = x.dims();
        x.reshape([1, n, e])
    }

    /// The extra vision blocks on the merged grid `[h1, w1]`.
    pub fn run_blocks(&self, x: Tensor<B, 3>, grid: [usize; 2]) -> Tensor<B, 3> {
        run_semantic_blocks(&self.blocks, x, grid)
    }

    /// From the ViT features of a `[h1, w1]` grid to z `[1, z, h1, w1]`.
    pub fn head(&self, vit_features: Tensor<B, 2>, grid: [usize; 2]) -> SemanticEncoding<B> {
        let target = self.target(vit_features.clone());
        let x = self.run_blocks(self.project_in(target.clone()), grid);
        let x = self.proj_out.forward(x);
        let [_, n, z] = x.dims();
        debug_assert_eq!(n, grid[0] * grid[1]);
        SemanticEncoding {
            vit_features,
            target,
            z: x.swap_dims(1, 2).reshape([1, z, grid[0], grid[1]]),
        }
    }

    pub fn forward(&self, input: &VitInput<B>) -> SemanticEncoding<B> {
        self.head(self.model.forward(input), input.merged_grid())
    }
}

/// `SemanticDecoder`: codes `[1, z, h, w]` → `proj_in` → vision blocks → `proj_out`
/// (Linear + LayerNorm eps 1e-5 for `linear_norm`) → `[1, vit_hidden, h, w]`. Training-time
/// head (it regresses the LayerNorm target); no inference path of ILLUME+ uses it.
#[derive(Module, Debug)]
pub struct SemanticDecoder<B: Backend> {
    pub proj_in: Linear<B>,
    pub blocks: Vec<VisionBlock<B>>,
    pub proj_out: OutputProjection<B>,
}

impl<B: Backend> SemanticDecoder<B> {
    pub fn new(config: &SemanticDecoderConfig, device: &B::Device) -> Self {
        let e = config.embed_dim;
        let out = config.output_channels;
        Self {
            proj_in: LinearConfig::new(config.z_channels, e).init(device),
            blocks: semantic_blocks(e, config.num_blocks, device),
            proj_out: OutputProjection {
                linear: LinearConfig::new(e, out).init(device),
                norm: (config.proj_layer == "linear_norm").then(|| {
                    LayerNormConfig::new(out)
                        .with_epsilon(DECODER_OUTPUT_NORM_EPS)
                        .init(device)
                }),
            },
        }
    }
}

impl<B: IllumeBackend> SemanticDecoder<B> {
    pub fn forward(&self, codes: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = codes.dims();
        let x = codes.reshape([b, c, h * w]).swap_dims(1, 2);
        let x = run_semantic_blocks(&self.blocks, self.proj_in.forward(x), [h, w]);
        let x = self.proj_out.forward(x);
        let [_, _, out] = x.dims();
        x.swap_dims(1, 2).reshape([b, out, h, w])
    }
}
