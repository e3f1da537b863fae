//! The diffusion decoder at the real SDXL decoder shapes (random weights): one UNet step
//! with classifier-free guidance (batch 2, 68 input channels) and one VAE decode, for a
//! 512×512 output (64×64 latents). Official PyTorch on this machine kind: UNet 15.3 s,
//! VAE 9.5 s (research/perf_targets.md). `--quick` runs the tiny demo configuration.

use burn::tensor::{Distribution, Tensor};
use illume_backends::IllumeBackend;
use illume_diffusion::unet::UNet2DConditionModel;
use illume_diffusion::vae::AutoencoderKL;
use illume_diffusion::{demo, CrossAttentionContext, UNetConditioning, TEXT_TOKENS};
use illume_dualvitok::demo::fill_random;

use super::{time_median, with_peak, Row, Sink};

/// Official PyTorch seconds for the same work (perf_targets.md), for the ratio column.
const OFFICIAL_UNET_S: f64 = 15.3;
const OFFICIAL_VAE_S: f64 = 9.5;

const GROUP: &str = "diffusion";

pub fn rows<B: IllumeBackend>(device: &B::Device, sink: &mut Sink) {
    let quick = sink.quick();
    let (unet_config, vae_config, latent, label) = if quick {
        (
            demo::demo_unet_config(),
            demo::demo_vae_config(),
            32,
            "demo",
        )
    } else {
        (
            demo::sdxl_unet_config(),
            demo::sdxl_vae_config(),
            64,
            "SDXL",
        )
    };
    let (warmup, iters) = if quick { (1, 2) } else { (1, 3) };
    // The official timings are for the SDXL shapes only.
    let official = |seconds: f64| (!quick).then_some(seconds);

    let item = format!("UNet step, CFG ({label})");
    if sink.wants(GROUP, &item) {
        let unet = fill_random(
            UNet2DConditionModel::<B>::new(&unet_config, device),
            1,
            device,
        );
        let sample = Tensor::<B, 4>::random(
            [2, unet_config.in_channels, latent, latent],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let cond = UNetConditioning {
            context: CrossAttentionContext::Zeros {
                tokens: TEXT_TOKENS,
            },
            text_embeds: None,
            time_ids: vec![0.0, 0.0, 0.0, 0.0, 0.0, 11.0],
        };
        let (time, peak_rss) = with_peak(|| {
            time_median(warmup, iters, || {
                let out = unet.forward(sample.clone(), 667.0, &cond);
                let _ = out.slice([0..1, 0..1, 0..1, 0..1]).into_data();
            })
        });
        sink.emit(Row {
            group: GROUP,
            item,
            shape: format!("[2,{},{latent},{latent}]", unet_config.in_channels),
            time,
            peak_rss,
            official: official(OFFICIAL_UNET_S),
            ..Row::default()
        });
    }

    let item = format!("VAE decode ({label})");
    if sink.wants(GROUP, &item) {
        let vae = fill_random(AutoencoderKL::<B>::new(&vae_config, device), 2, device);
        let latents = Tensor::<B, 4>::random(
            [1, vae_config.latent_channels, latent, latent],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let (time, peak_rss) = with_peak(|| {
            time_median(warmup, iters, || {
                let image = vae.decode(vae.unscale_latents(latents.clone()));
                let _ = image.slice([0..1, 0..1, 0..1, 0..1]).into_data();
            })
        });
        let side = latent * vae_config.scale_factor();
        sink.emit(Row {
            group: GROUP,
            item,
            shape: format!("[1,4,{latent},{latent}] -> {side}x{side}"),
            time,
            peak_rss,
            official: official(OFFICIAL_VAE_S),
            ..Row::default()
        });
    }
}
