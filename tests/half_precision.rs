//! Half precision: the fused kernels in f16 on wgpu (lavapipe has `shader-f16`) and in bf16
//! on cuda against ndarray in f32 through `illume::parity`, and the models in f16 on wgpu
//! against the official f32 fixtures. Floats agree within `parity::half_tolerance` of their
//! scale, and at most one id in eight may differ (`parity::HALF_ID_FLIPS`). The demo-model
//! comparisons in half precision are `illume doctor --precision f16|bf16` (see
//! tests/backend_parity.rs for why they are not run here on wgpu).
//!
//! This is its own test binary because Burn fixes a device's float type once per process:
//! the other test binaries run the same devices in f32.

#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod common;

use illume::backends::{BackendKind, Precision};
use illume::parity::Component;

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_backend_f16_kernels() {
    common::assert_parity(BackendKind::Wgpu, Precision::F16, Component::Kernels);
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_backend_bf16_kernels() {
    common::assert_parity(BackendKind::Cuda, Precision::Bf16, Component::Kernels);
}

/// The official fixtures (f32 PyTorch) against the models computing in f16 on wgpu.
#[cfg(feature = "wgpu")]
mod wgpu_backend_f16_fixtures {
    use burn::backend::wgpu::WgpuDevice;
    use burn::tensor::Tensor;
    use illume::backends::{BackendKind, Precision, Wgpu};
    use illume::dualvitok::{image_io, DualTokens, DualViTok, TokenGrid};
    use illume::mllm::decoder::LanguageModel;
    use illume::mllm::vocab_shards::default_rows_per_shard;
    use illume::mllm::MllmConfig;
    use illume::parity::{half_tolerance, HALF_ID_FLIPS};
    use illume::weights::Checkpoint;
    use illume_test_harness::{
        announce_case, assert_close_scaled, available, fixture_sets, to_f32s,
    };

    /// Float tolerance relative to the output's scale (the parity suite's, 3e-2).
    fn tolerance() -> f32 {
        half_tolerance(burn::tensor::FloatDType::F16)
    }

    /// The default wgpu device, set to compute in f16 before its first tensor; `None`
    /// (the reason printed) where no wgpu adapter answers.
    fn device() -> Option<WgpuDevice> {
        available(BackendKind::Wgpu, Precision::F16).then(WgpuDevice::default)
    }

    fn agreement(what: &str, actual: &TokenGrid, expected: &TokenGrid) {
        assert_eq!(actual.shape, expected.shape, "{what}: grid shape");
        let total = expected.indices.len();
        let differing = actual
            .indices
            .iter()
            .zip(&expected.indices)
            .filter(|(a, e)| a != e)
            .count();
        println!("    {what}: {} of {total} identical", total - differing);
        let allowed = (total as f32 * HALF_ID_FLIPS).floor() as usize;
        assert!(
            differing <= allowed,
            "{what}: {differing} of {total} indices differ in f16 (at most {allowed} may)"
        );
    }

    fn reference_grid(set: &illume_test_harness::FixtureSet, key: &str) -> TokenGrid {
        let shape = set.shape(key);
        let indices = set.i64s(key).into_iter().map(|i| i as u32).collect();
        TokenGrid::new([shape[1], shape[2]], indices).expect("reference grid")
    }

    #[test]
    fn mllm_decoder_logits_match_the_official_fixture() {
        let Some(device) = device() else { return };
        for set in fixture_sets("mllm") {
            announce_case(&set, "und (decoder on the spliced inputs_embeds), f16");
            let config = MllmConfig::from_dir(&set.dir).expect("fixture config");
            let checkpoint = Checkpoint::open(&set.dir).expect("fixture checkpoint");
            let lm = LanguageModel::<Wgpu>::load(
                &checkpoint,
                &config.decoder,
                default_rows_per_shard(64),
                &["vision_tower.", "mm_projector."],
                &device,
            )
            .expect("decoder loads");
            let embeds: Tensor<Wgpu, 3> = set.tensor("und.inputs_embeds", &device);
            let [_, n, hidden] = embeds.dims();
            let mut cache = lm.new_cache(1, n);
            let out = lm.forward(embeds, &mut cache, &[0], true).expect("forward");
            let logits = lm.logits(out.hidden.reshape([n, hidden]));
            // f16 against the official f32 (measured 8.2e-3 of the logits' scale).
            let expected = set.f32s("und.logits");
            assert_close_scaled("logits (f16)", &to_f32s(logits), &expected, tolerance());
        }
    }

    #[test]
    fn dualvitok_matches_the_official_fixture() {
        let Some(device) = device() else { return };
        for set in fixture_sets("dualvitok") {
            let tokenizer = DualViTok::<Wgpu>::load(&set.dir, &device).expect("loads");
            for case in set.prefixes() {
                announce_case(&set, &format!("{case}, f16"));
                let key = format!("{case}.image_uint8");
                let [h, w, _] = set.shape(&key)[..] else {
                    panic!("image_uint8 is HWC")
                };
                let rgb = image::RgbImage::from_raw(w as u32, h as u32, set.u8s(&key)).unwrap();
                let tokens = tokenizer
                    .encode(&image_io::to_tensor::<Wgpu>(&rgb, &device))
                    .expect("encodes");
                let expected = DualTokens {
                    semantic: reference_grid(&set, &format!("{case}.sem.indices")),
                    pixel: reference_grid(&set, &format!("{case}.pix.indices")),
                };
                agreement("semantic indices", &tokens.semantic, &expected.semantic);
                agreement("pixel indices", &tokens.pixel, &expected.pixel);
                // Decoding the reference indices (measured up to 1.5e-2 of the image's scale).
                let recon = tokenizer.decode(&expected).expect("decodes");
                assert_close_scaled(
                    "recon (f16)",
                    &to_f32s(recon),
                    &set.f32s(&format!("{case}.recon")),
                    tolerance(),
                );
            }
        }
    }
}
