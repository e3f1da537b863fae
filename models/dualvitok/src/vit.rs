//! The Qwen2-VL vision transformer of the semantic branch
//! (`qwen2vit/modeling_qwen2_vl.py:Qwen2VisionTransformerPretrainedModel`): patch embedding,
//! pre-LN blocks with 2-D rotary position embedding, and the 2×2 patch merger.
//!
//! The same [`VisionBlock`] (16 heads in DualViTok's extra blocks) serves the semantic
//! encoder's and decoder's `Qwen2VLBatchVisionBlock`s, which differ only in their positions.

use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{activation, backend::Backend, Tensor, TensorData};
use illume_backends::reference::apply_layer_norm;
use illume_backends::IllumeBackend;
use illume_weights::Checkpoint;

use crate::config::VisionTransformerConfig;
use crate::error::Result;
use crate::layers::{contiguous, quick_gelu};
use crate::names;
use crate::preprocess::{VitInput, MERGE_SIZE};

/// LayerNorm epsilon of every vision block and of the merger (`eps=1e-6`).
pub const VISION_NORM_EPS: f64 = 1e-6;
/// RoPE base of `VisionRotaryEmbedding`.
const ROPE_THETA: f32 = 10000.0;

/// Cos/sin tables of the 2-D rotary embedding for a token sequence, `[seq, head_dim]` each.
///
/// `VisionRotaryEmbedding(head_dim / 2)`: a token at (row r, col c) gets the angles
/// `[r·inv_freq, c·inv_freq]` (head_dim/2 values), tiled twice to head_dim and applied
/// rotate-half style, so dims `d` and `d + head_dim/2` form a pair.
#[derive(Debug, Clone)]
pub struct VisionRope<B: Backend> {
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
}

impl<B: Backend> VisionRope<B> {
    /// Tables for tokens at `positions` (row, col), computed in f32 as the official code does.
    pub fn new(positions: &[(usize, usize)], head_dim: usize, device: &B::Device) -> Self {
        let rope_dim = head_dim / 2;
        let inv_freq: Vec<f32> = (0..rope_dim / 2)
            .map(|j| 1.0 / ROPE_THETA.powf((2 * j) as f32 / rope_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(positions.len() * head_dim);
        let mut sin = Vec::with_capacity(positions.len() * head_dim);
        for &(row, col) in positions {
            let angles: Vec<f32> = inv_freq
                .iter()
                .map(|f| row as f32 * f)
                .chain(inv_freq.iter().map(|f| col as f32 * f))
                .collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let shape = [positions.len(), head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// Positions of the ViT's patches: the 2×2 merge-window order of the scaling layer.
    pub fn merge_order(grid: [usize; 2]) -> Vec<(usize, usize)> {
        let [gh, gw] = grid;
        let m = MERGE_SIZE;
        let mut positions = Vec::with_capacity(gh * gw);
        for a in 0..gh / m {
            for c in 0..gw / m {
                for k in 0..m {
                    for l in 0..m {
                        positions.push((a * m + k, c * m + l));
                    }
                }
            }
        }
        positions
    }

    /// Positions of a plain row-major grid (the semantic encoder/decoder blocks).
    pub fn row_major(grid: [usize; 2]) -> Vec<(usize, usize)> {
        let [h, w] = grid;
        (0..h).flat_map(|r| (0..w).map(move |c| (r, c))).collect()
    }
}

/// Multi-head self-attention with a fused `qkv` projection and 2-D RoPE on q and k.
#[derive(Module, Debug)]
pub struct VisionAttention<B: Backend> {
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    num_heads: usize,
}

impl<B: IllumeBackend> VisionAttention<B> {
    /// `x`: `[batch, seq, dim]`, full (bidirectional) attention within each sequence.
    pub fn forward(&self, x: Tensor<B, 3>, rope: &VisionRope<B>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let heads = self.num_heads;
        let head_dim = d / heads;
        // [3, b, heads, s, head_dim]
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, s, 3, heads, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let mut parts = qkv
            .chunk(3, 0)
            .into_iter()
            .map(|t| t.reshape([b, heads, s, head_dim]));
        let (q, k, v) = (
            parts.next().expect("q"),
            parts.next().expect("k"),
            parts.next().expect("v"),
        );
        let q = B::rotary(q, rope.cos.clone(), rope.sin.clone());
        let k = B::rotary(k, rope.cos.clone(), rope.sin.clone());
        let scale = 1.0 / (head_dim as f64).sqrt();
        let out = <B as IllumeBackend>::attention(q, k, v, scale, false)
            .swap_dims(1, 2)
            .reshape([b, s, d]);
        self.proj.forward(out)
    }
}

/// `fc1 → quick_gelu → fc2`.
#[derive(Module, Debug)]
pub struct VisionMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> VisionMlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2.forward(quick_gelu(self.fc1.forward(x)))
    }
}

/// `Qwen2VLVisionBlock` / `Qwen2VLBatchVisionBlock`: pre-LN attention and MLP, residual.
#[derive(Module, Debug)]
pub struct VisionBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: VisionAttention<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: VisionMlp<B>,
}

impl<B: Backend> VisionBlock<B> {
    pub fn new(dim: usize, heads: usize, mlp_dim: usize, device: &B::Device) -> Self {
        let norm = || {
            LayerNormConfig::new(dim)
                .with_epsilon(VISION_NORM_EPS)
                .init(device)
        };
        Self {
            norm1: norm(),
            attn: VisionAttention {
                qkv: LinearConfig::new(dim, 3 * dim).init(device),
                proj: LinearConfig::new(dim, dim).init(device),
                num_heads: heads,
            },
            norm2: norm(),
            mlp: VisionMlp {
                fc1: LinearConfig::new(dim, mlp_dim).init(device),
                fc2: LinearConfig::new(mlp_dim, dim).init(device),
            },
        }
    }
}

impl<B: IllumeBackend> VisionBlock<B> {
    pub fn forward(&self, x: Tensor<B, 3>, rope: &VisionRope<B>) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .attn
                .forward(apply_layer_norm(&self.norm1, x, VISION_NORM_EPS), rope);
        x.clone()
            + self
                .mlp
                .forward(apply_layer_norm(&self.norm2, x, VISION_NORM_EPS))
    }
}

/// The Conv3d patch embedding (no bias), applied as one matmul on flattened patches.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    pub proj: Conv3d<B>,
}

/// The PatchMerger MLP (`mlp.0` Linear, exact GELU, `mlp.2` Linear; see [`names`]).
#[derive(Module, Debug)]
pub struct MergerMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

/// `Qwen2VLPatchMerger`: LayerNorm per patch, 2×2 merge-window patches concatenated, MLP.
#[derive(Module, Debug)]
pub struct PatchMerger<B: Backend> {
    pub ln_q: LayerNorm<B>,
    pub mlp: MergerMlp<B>,
}

impl<B: Backend> PatchMerger<B> {
    /// `[gh·gw, embed]` in merge order → `[gh·gw / 4, hidden]` in row-major token order.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let window = MERGE_SIZE * MERGE_SIZE;
        let x = apply_layer_norm(&self.ln_q, x, VISION_NORM_EPS).reshape([n / window, d * window]);
        self.mlp
            .fc2
            .forward(activation::gelu(self.mlp.fc1.forward(x)))
    }
}

/// `Qwen2VisionTransformerPretrainedModel`: what the MLLM's vision tower and DualViTok's
/// semantic encoder both run on the scaling layer's patches.
#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    pub blocks: Vec<VisionBlock<B>>,
    pub merger: PatchMerger<B>,
    num_heads: usize,
}

impl<B: Backend> VisionTransformer<B> {
    /// The module tree of `config`, with placeholder parameters (initialised lazily, so a
    /// model that is loaded next never materialises them).
    pub fn new(config: &VisionTransformerConfig, device: &B::Device) -> Self {
        let d = config.embed_dim;
        let window = MERGE_SIZE * MERGE_SIZE;
        let p = config.patch_size;
        Self {
            patch_embed: PatchEmbed {
                proj: Conv3dConfig::new(
                    [config.in_channels, d],
                    [config.temporal_patch_size, p, p],
                )
                .with_stride([config.temporal_patch_size, p, p])
                .with_bias(false)
                .init(device),
            },
            blocks: (0..config.depth)
                .map(|_| VisionBlock::new(d, config.num_heads, config.mlp_dim(), device))
                .collect(),
            merger: PatchMerger {
                ln_q: LayerNormConfig::new(d)
                    .with_epsilon(VISION_NORM_EPS)
                    .init(device),
                mlp: MergerMlp {
                    fc1: LinearConfig::new(d * window, d * window).init(device),
                    fc2: LinearConfig::new(d * window, config.hidden_size).init(device),
                },
            },
            num_heads: config.num_heads,
        }
    }

    /// Build the tree of `config` and load it from `checkpoint`, whose names are the official
    /// ones relative to the ViT (`patch_embed.proj.weight`, `blocks.0.…`, `merger.…`): e.g.
    /// `checkpoint.subtree("semantic_encoder.model")` of a DualViTok, or
    /// `subtree("model.vision_tower.semantic_encoder")` of an ILLUME+ MLLM.
    pub fn load(
        checkpoint: &Checkpoint,
        config: &VisionTransformerConfig,
        device: &B::Device,
    ) -> Result<Self> {
        names::load(
            checkpoint,
            Self::new(config, device),
            "Qwen2-VL vision transformer",
        )
    }

    pub fn embed_dim(&self) -> usize {
        self.patch_embed.proj.weight.dims()[0]
    }
}

impl<B: IllumeBackend> VisionTransformer<B> {
    /// `[n, 1176]` patches → `[n, embed]` (the Conv3d as a matmul: kernel = stride = patch).
    pub fn embed_patches(&self, patches: Tensor<B, 2>) -> Tensor<B, 2> {
        let [d, c, t, ph, pw] = self.patch_embed.proj.weight.dims();
        let weight = self
            .patch_embed
            .proj
            .weight
            .val()
            .reshape([d, c * t * ph * pw]);
        patches.matmul(contiguous(weight.transpose()))
    }

    /// Run the blocks on embedded patches of a `grid` (merge order), `[n, embed]` → same.
    pub fn run_blocks(&self, x: Tensor<B, 2>, grid: [usize; 2]) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let rope = VisionRope::new(
            &VisionRope::<B>::merge_order(grid),
            d / self.num_heads,
            &x.device(),
        );
        let mut x = x.reshape([1, n, d]);
        for block in &self.blocks {
            x = block.forward(x, &rope);
        }
        x.reshape([n, d])
    }

    /// Patches → merged features `[h1·w1, hidden]` (row-major over the merged grid).
    pub fn forward(&self, input: &VitInput<B>) -> Tensor<B, 2> {
        let x = self.embed_patches(input.patches.clone());
        self.merger.forward(self.run_blocks(x, input.grid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_order_walks_2x2_windows_row_major() {
        let order = VisionRope::<illume_backends::NdArray>::merge_order([4, 4]);
        assert_eq!(
            &order[..6],
            &[(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3)]
        );
        assert_eq!(order[15], (3, 3));
    }
}
