//! Qwen2's SwiGLU MLP: `down(silu(gate(x)) · up(x))`, no biases.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;

use crate::config::DecoderConfig;

#[derive(Module, Debug)]
pub struct Qwen2Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Qwen2Mlp<B> {
    pub fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let linear = |a, b| LinearConfig::new(a, b).with_bias(false).init(device);
        Self {
            gate_proj: linear(h, i),
            up_proj: linear(h, i),
            down_proj: linear(i, h),
        }
    }
}

impl<B: IllumeBackend> Qwen2Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [rows, n, hidden] = x.dims();
        // 2-D matmuls: see `attention::flat`.
        let x = crate::attention::flat(x);
        let gated = B::silu_mul(self.gate_proj.forward(x.clone()), self.up_proj.forward(x));
        self.down_proj.forward(gated).reshape([rows, n, hidden])
    }
}
