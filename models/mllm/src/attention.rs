//! Qwen2 self-attention: q/k/v projections with bias, o_proj without, grouped-query
//! attention over the KV cache, rotary positions.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;

use crate::config::DecoderConfig;
use crate::kv_cache::KvCache;

/// Rotary tables of one sequence (cache row) for the positions of one forward call.
pub(crate) struct RowPositions<B: Backend> {
    pub row: usize,
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
}

#[derive(Module, Debug)]
pub struct Qwen2Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl<B: Backend> Qwen2Attention<B> {
    pub fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        let (h, d) = (config.hidden_size, config.head_dim());
        let kv = config.num_key_value_heads * d;
        Self {
            q_proj: LinearConfig::new(h, h).init(device),
            k_proj: LinearConfig::new(h, kv).init(device),
            v_proj: LinearConfig::new(h, kv).init(device),
            o_proj: LinearConfig::new(h, h).with_bias(false).init(device),
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: d,
        }
    }
}

/// `[rows, n, hidden]` → `[rows·n, hidden]`. The projections run as 2-D matmuls: burn-fusion
/// 0.21 computes a batched matmul whose weight operand is broadcast over a batch of 2
/// (`[2, 1, k] × [1, k, m]`, the batched CFG step) wrongly on wgpu when it fuses it with
/// the neighbouring element-wise ops; the 2-D form is also what the weights are.
pub(crate) fn flat<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 2> {
    let [rows, n, hidden] = x.dims();
    x.reshape([rows * n, hidden])
}

impl<B: IllumeBackend> Qwen2Attention<B> {
    /// `x` is `[rows, n, hidden]`: `n` new positions for each sequence of `positions`
    /// (batch row `i` is cache row `positions[i].row`). Sequences may have different
    /// lengths, so rotary, cache writes and attention run per row; the projections, which
    /// read the weights, run once for all rows.
    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        layer: usize,
        positions: &[RowPositions<B>],
    ) -> Tensor<B, 3> {
        let [rows, n, hidden] = x.dims();
        let (heads, kv_heads, dim) = (self.heads, self.kv_heads, self.head_dim);
        let x = flat(x);
        let split = |t: Tensor<B, 2>, h: usize| t.reshape([rows, n, h, dim]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()), heads);
        let k = split(self.k_proj.forward(x.clone()), kv_heads);
        let v = split(self.v_proj.forward(x), kv_heads);
        let scale = 1.0 / (dim as f64).sqrt();
        let outputs: Vec<Tensor<B, 4>> = positions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let take =
                    |t: &Tensor<B, 4>, h: usize| t.clone().slice([i..i + 1, 0..h, 0..n, 0..dim]);
                let q = B::rotary(take(&q, heads), p.cos.clone(), p.sin.clone());
                let k = B::rotary(take(&k, kv_heads), p.cos.clone(), p.sin.clone());
                let (k, v) = cache.append(layer, p.row, k, take(&v, kv_heads));
                self.attend(q, k, v, scale)
            })
            .collect();
        let out = Tensor::cat(outputs, 0)
            .swap_dims(1, 2)
            .reshape([rows * n, hidden]);
        self.o_proj.forward(out).reshape([rows, n, hidden])
    }

    /// Grouped-query attention of one row: `q` `[1, heads, n, d]`, `k`/`v`
    /// `[1, kv_heads, len, d]` (all cached positions, the new ones last).
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        scale: f64,
    ) -> Tensor<B, 4> {
        let [_, heads, n, dim] = q.dims();
        let [_, kv_heads, len, _] = k.dims();
        let group = heads / kv_heads;
        if n == 1 {
            // One query per head sees every key: fold each group's queries into the query
            // axis of its shared KV head instead of copying K/V `group` times.
            let q = q.reshape([1, kv_heads, group, dim]);
            return <B as IllumeBackend>::attention(q, k, v, scale, false)
                .reshape([1, heads, 1, dim]);
        }
        let expand = |t: Tensor<B, 4>| {
            t.unsqueeze_dim::<5>(2)
                .expand([1, kv_heads, group, len, dim])
                .reshape([1, heads, len, dim])
        };
        <B as IllumeBackend>::attention(q, expand(k), expand(v), scale, true)
    }
}
