//! diffusers `Attention` (AttnProcessor2_0): multi-head scaled dot-product attention with
//! `to_q`/`to_k`/`to_v`/`to_out.0`, used as self- and cross-attention in the UNet's
//! transformer blocks and, with its own GroupNorm and residual, in the VAE's mid block.

use burn::module::Module;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;

use super::{group_norm, group_norm_config, linear};

/// What the cross-attention layers attend to.
#[derive(Debug, Clone)]
pub enum CrossAttentionContext<B: Backend> {
    /// An all-zero context of `tokens` positions: what the ILLUME+ decoder feeds (it has
    /// no text encoder). Attention over it has an exact closed form, see
    /// [`Attention::forward_cross`].
    Zeros { tokens: usize },
    /// Encoder hidden states `[batch, tokens, cross_attention_dim]`.
    States(Tensor<B, 3>),
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Only in the VAE's attention block (`Attention(..., norm_num_groups=...)`).
    group_norm: Option<GroupNorm<B>>,
    to_q: Linear<B>,
    to_k: Linear<B>,
    to_v: Linear<B>,
    /// `to_out.0` (`to_out.1` is dropout).
    to_out: Vec<Linear<B>>,
    #[module(skip)]
    heads: usize,
}

impl<B: IllumeBackend> Attention<B> {
    /// The UNet's transformer attention: no q/k/v bias, output bias, `heads` heads over
    /// `query_dim` channels; keys and values come from `context_dim`-wide states.
    pub fn transformer(
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            group_norm: None,
            to_q: linear(query_dim, query_dim, false, device),
            to_k: linear(context_dim, query_dim, false, device),
            to_v: linear(context_dim, query_dim, false, device),
            to_out: vec![linear(query_dim, query_dim, true, device)],
            heads,
        }
    }

    /// The VAE mid-block attention: GroupNorm first, one head over all channels, biases,
    /// residual connection.
    pub fn spatial(channels: usize, groups: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            group_norm: Some(group_norm_config(groups, channels, eps).init(device)),
            to_q: linear(channels, channels, true, device),
            to_k: linear(channels, channels, true, device),
            to_v: linear(channels, channels, true, device),
            to_out: vec![linear(channels, channels, true, device)],
            heads: 1,
        }
    }

    fn out_proj(&self) -> &Linear<B> {
        &self.to_out[0]
    }

    /// Attention of `x` `[batch, tokens, query_dim]` over `context` (self-attention when
    /// `None`).
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.to_q.forward(x);
        let k = self.to_k.forward(context.clone());
        let v = self.to_v.forward(context);
        self.out_proj().forward(self.attend(q, k, v, None))
    }

    /// Cross-attention. Over [`CrossAttentionContext::Zeros`] with bias-free `to_k`/`to_v`,
    /// K = V = 0, so every query's softmax is uniform over zero values and the layer
    /// outputs exactly `to_out.0.bias`: that is returned without computing anything else
    /// (the weights stay loaded, the module still mirrors the checkpoint). With biases the
    /// zero context is materialised and attended to normally.
    pub fn forward_cross(
        &self,
        x: Tensor<B, 3>,
        context: &CrossAttentionContext<B>,
    ) -> Tensor<B, 3> {
        match context {
            CrossAttentionContext::States(states) => self.forward(x, Some(states.clone())),
            CrossAttentionContext::Zeros { tokens } => {
                let [b, s, _] = x.dims();
                if self.to_k.bias.is_none() && self.to_v.bias.is_none() {
                    let out = self.out_proj();
                    let [_, d] = out.weight.dims();
                    return match &out.bias {
                        Some(bias) => bias.val().reshape([1, 1, d]).expand([b, s, d]),
                        None => Tensor::zeros([b, s, d], &x.device()),
                    };
                }
                let [context_dim, _] = self.to_k.weight.dims();
                let zeros = Tensor::zeros([b, *tokens, context_dim], &x.device());
                self.forward(x, Some(zeros))
            }
        }
    }

    /// The VAE attention block on a feature map `[batch, channels, h, w]`:
    /// `x + to_out(attention(group_norm(x)))`. `query_chunk` bounds the number of query
    /// positions attended at once (the score matrix is `chunk × h·w`); the result is the
    /// same for any chunk size, since every query row is independent.
    pub fn forward_spatial(&self, x: Tensor<B, 4>, query_chunk: Option<usize>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let normed = match &self.group_norm {
            Some(norm) => group_norm(norm, x.clone(), false),
            None => x.clone(),
        };
        let tokens = normed.reshape([b, c, h * w]).swap_dims(1, 2);
        let q = self.to_q.forward(tokens.clone());
        let k = self.to_k.forward(tokens.clone());
        let v = self.to_v.forward(tokens);
        let attended = self.attend(q, k, v, query_chunk);
        let out = self.out_proj().forward(attended);
        x + out.swap_dims(1, 2).reshape([b, c, h, w])
    }

    /// Multi-head scaled dot-product attention of projected `q` `[b, sq, d]` over `k`/`v`
    /// `[b, sk, d]`, through [`IllumeBackend::attention`].
    fn attend(
        &self,
        q: Tensor<B, 3>,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
        query_chunk: Option<usize>,
    ) -> Tensor<B, 3> {
        let [b, sq, d] = q.dims();
        let head_dim = d / self.heads;
        let scale = (head_dim as f64).powf(-0.5);
        let split = |t: Tensor<B, 3>| {
            let [b, s, _] = t.dims();
            t.reshape([b, s, self.heads, head_dim]).swap_dims(1, 2)
        };
        let (k, v) = (split(k), split(v));
        let q = split(q);
        let out = match query_chunk {
            Some(chunk) if chunk < sq => {
                let parts = (0..sq)
                    .step_by(chunk)
                    .map(|start| {
                        let len = chunk.min(sq - start);
                        <B as IllumeBackend>::attention(
                            q.clone().narrow(2, start, len),
                            k.clone(),
                            v.clone(),
                            scale,
                            false,
                        )
                    })
                    .collect();
                Tensor::cat(parts, 2)
            }
            _ => <B as IllumeBackend>::attention(q, k, v, scale, false),
        };
        out.swap_dims(1, 2).reshape([b, sq, d])
    }
}
