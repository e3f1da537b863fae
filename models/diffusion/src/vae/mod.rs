//! diffusers `AutoencoderKL`, decoder side: `post_quant_conv`, then the `Decoder`
//! (conv_in, `UNetMidBlock2D` with one attention, `UpDecoderBlock2D`s, GroupNorm, SiLU,
//! conv_out). The encoder's tensors stay in the file unused (only decoding is needed).

pub mod config;
mod tiled;

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::GroupNorm;
use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use illume_backends::{DeviceLimits, IllumeBackend};
use illume_weights::{Checkpoint, LoadOptions};

pub use self::config::VaeConfig;
pub use self::tiled::VaeTiling;
use crate::error::DiffusionError;
use crate::layers::{
    conv2d, group_norm, group_norm_config, Attention, ResnetBlock2D, ResnetSettings, Upsample2D,
};

/// GroupNorm epsilon of every VAE decoder norm (fixed in diffusers' `Decoder`).
const EPS: f64 = 1e-6;

/// The VAE always decodes in f32, whatever the UNet computes in: the SDXL VAE overflows in
/// f16 (its config sets `force_upcast`, and the official pipeline upcasts it).
pub(crate) const VAE_DTYPE: DType = DType::F32;

/// `UNetMidBlock2D`: resnet, then (attention, resnet).
#[derive(Module, Debug)]
pub struct VaeMidBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attentions: Vec<Attention<B>>,
}

/// `UpDecoderBlock2D`: resnets, then an optional ×2 upsampler.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    upsamplers: Vec<Upsample2D<B>>,
}

#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    conv_in: Conv2d<B>,
    mid_block: VaeMidBlock<B>,
    up_blocks: Vec<UpDecoderBlock2D<B>>,
    conv_norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    decoder: Decoder<B>,
    post_quant_conv: Option<Conv2d<B>>,
    #[module(skip)]
    config: VaeConfig,
}

fn resnet<B: IllumeBackend>(
    cin: usize,
    cout: usize,
    groups: usize,
    device: &B::Device,
) -> ResnetBlock2D<B> {
    ResnetBlock2D::new(
        ResnetSettings {
            in_channels: cin,
            out_channels: cout,
            temb_channels: None,
            groups,
            eps: EPS,
            output_scale_factor: 1.0,
        },
        device,
    )
}

impl<B: IllumeBackend> AutoencoderKL<B> {
    pub fn new(config: &VaeConfig, device: &B::Device) -> Self {
        let groups = config.norm_groups;
        let top = *config
            .block_out_channels
            .last()
            .expect("at least one block");
        let levels = config.block_out_channels.len();
        let mut prev = top;
        let up_blocks = config
            .block_out_channels
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &out)| {
                let cin = prev;
                prev = out;
                UpDecoderBlock2D {
                    resnets: (0..=config.layers_per_block)
                        .map(|j| resnet(if j == 0 { cin } else { out }, out, groups, device))
                        .collect(),
                    upsamplers: (i + 1 < levels)
                        .then(|| Upsample2D::new(out, device))
                        .into_iter()
                        .collect(),
                }
            })
            .collect();
        let c0 = config.block_out_channels[0];
        let latent = config.latent_channels;
        Self {
            decoder: Decoder {
                conv_in: conv2d([latent, top], 3, 1, 1, device),
                mid_block: VaeMidBlock {
                    resnets: vec![
                        resnet(top, top, groups, device),
                        resnet(top, top, groups, device),
                    ],
                    attentions: config
                        .mid_block_attention
                        .then(|| Attention::spatial(top, groups, EPS, device))
                        .into_iter()
                        .collect(),
                },
                up_blocks,
                conv_norm_out: group_norm_config(groups, c0, EPS).init(device),
                conv_out: conv2d([c0, config.out_channels], 3, 1, 1, device),
            },
            post_quant_conv: config
                .post_quant_conv
                .then(|| conv2d([latent, latent], 1, 1, 0, device)),
            config: config.clone(),
        }
    }

    /// Build from `vae/config.json` and load `vae/diffusion_pytorch_model.*` (strict on the
    /// decoder; the encoder's `encoder.*` and `quant_conv.*` may be present, unused).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, DiffusionError> {
        let config_path = dir.join("config.json");
        let config = VaeConfig::from_file(&config_path)?;
        let checkpoint = Checkpoint::open(dir)?;
        // Refuse a config too large for this checkpoint before building anything.
        config.declared_size(&config_path).check(
            &checkpoint,
            DeviceLimits::host_bytes_per_weight::<B>(device).map(|_| VAE_DTYPE.size() as u64),
        )?;
        let module = Self::new(&config, device);
        let options = LoadOptions::named("AutoencoderKL decoder")
            .allow_unused("encoder.")
            .allow_unused("quant_conv.")
            .with_float_dtype(VAE_DTYPE);
        Ok(checkpoint.load_into(module, &options)?)
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// What the pipeline feeds the decoder: `latents / scaling_factor`, or
    /// `latents · std / scaling_factor + mean` when the config has latents_mean/std.
    pub fn unscale_latents(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let latents = latents.cast(VAE_DTYPE);
        let scaling = self.config.scaling_factor;
        match &self.config.latents_mean_std {
            None => latents.div_scalar(scaling),
            Some((mean, std)) => {
                let device = latents.device();
                let c = mean.len();
                let column = |v: &[f64]| {
                    let v: Vec<f32> = v.iter().map(|x| *x as f32).collect();
                    Tensor::<B, 4>::from_data(
                        TensorData::new(v, [1, c, 1, 1]),
                        (&device, VAE_DTYPE),
                    )
                };
                (latents * column(std)).div_scalar(scaling) + column(mean)
            }
        }
    }

    /// `vae.decode(z)`: the image `[batch, out_channels, 8h, 8w]` in about [-1, 1].
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.decode_to_mid(z, None);
        let d = &self.decoder;
        let mut x = x;
        for block in &d.up_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x, None);
            }
            for upsampler in &block.upsamplers {
                x = upsampler.forward(x, None);
            }
        }
        illume_backends::conv2d(&d.conv_out, group_norm(&d.conv_norm_out, x, true))
    }

    /// `post_quant_conv`, `conv_in` and the mid block: the latent-resolution part, shared
    /// by the plain and the tiled decoders.
    fn decode_to_mid(&self, z: Tensor<B, 4>, query_chunk: Option<usize>) -> Tensor<B, 4> {
        let z = z.cast(VAE_DTYPE);
        let z = match &self.post_quant_conv {
            Some(conv) => illume_backends::conv2d(conv, z),
            None => z,
        };
        let mid = &self.decoder.mid_block;
        let mut x = mid.resnets[0].forward(illume_backends::conv2d(&self.decoder.conv_in, z), None);
        for (i, resnet) in mid.resnets.iter().enumerate().skip(1) {
            if let Some(attention) = mid.attentions.get(i - 1) {
                x = attention.forward_spatial(x, query_chunk);
            }
            x = resnet.forward(x, None);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use illume_backends::NdArray;

    #[test]
    fn an_inflated_config_is_refused_before_building() {
        let mut config: serde_json::Value =
            serde_json::from_str(include_str!("../../configs/sdxl/vae_config.json")).unwrap();
        config["layers_per_block"] = 100_000.into();
        let dir = crate::config::one_value_folder("vae-size", &config.to_string());
        let err = AutoencoderKL::<NdArray>::load(&dir, &Default::default())
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(err.contains("config.json"), "{err}");
        assert!(err.contains("layers_per_block=100000"), "{err}");
        assert!(err.contains("holds only 1 values"), "{err}");
    }
}
