//! The understanding input path against the fixture: image preprocessing, vision tower
//! (ViT + merger, pixel encoder) with the MLLM's own weights, MixedProjector, the image
//! embedding layout and its splicing into the prompt.

use crate::common;

use burn::tensor::Tensor;
use common::{dualvitok_config, load_lm};
use illume_backends::IllumeBackend;
use illume_mllm::projector::{self, MixedProjector};
use illume_mllm::vision::{preprocess_rgb, DualVisionTower};
use illume_mllm::{splice, MllmConfig, Prompt, TextTokenizer, VocabLayout};
use illume_test_harness::{
    announce_case, assert_close_scaled, backend_tests, fixture_sets, to_f32s,
};
use illume_weights::{Checkpoint, LoadOptions};
use image::RgbImage;

fn understanding_inputs_match_reference<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("mllm") {
        announce_case(
            &set,
            "und: preprocessing, vision tower, projector, layout, splicing",
        );
        let config = MllmConfig::from_dir(&set.dir).unwrap();
        let checkpoint = Checkpoint::open(&set.dir).unwrap();
        let vq = dualvitok_config(&set);

        let shape = set.shape("und.image_uint8");
        let image =
            RgbImage::from_raw(shape[1] as u32, shape[0] as u32, set.u8s("und.image_uint8"))
                .unwrap();
        let pixels: Tensor<B, 4> = preprocess_rgb(&image, &config.vision_tower, device).unwrap();
        assert_eq!(
            pixels.dims().to_vec(),
            set.shape("und.pixel_values"),
            "smart-resized size"
        );
        // Pillow-exact 8-bit resize; the rest is (v/255-0.5)/0.5 in f32.
        assert_close_scaled(
            "pixel_values",
            &to_f32s(pixels.clone()),
            &set.f32s("und.pixel_values"),
            1e-6,
        );

        let tower = DualVisionTower::<B>::load(&checkpoint, &vq, device).unwrap();
        let features = tower.forward(set.tensor("und.pixel_values", device));
        // DualViTok README: ~1e-5 on intermediates.
        assert_close_scaled(
            "vt_semantic",
            &to_f32s(features.semantic.clone()),
            &set.f32s("und.vt_semantic"),
            1e-5,
        );
        assert_close_scaled(
            "vt_pixel",
            &to_f32s(features.pixel.clone()),
            &set.f32s("und.vt_pixel"),
            1e-5,
        );

        let projector = checkpoint
            .subtree("model.mm_projector")
            .renamed(|n| Some(projector::to_module_path(n)))
            .load_into(
                MixedProjector::<B>::new(config.mm_hidden_size, config.decoder.hidden_size, device),
                &LoadOptions::named("MixedProjector"),
            )
            .unwrap();
        let (sem, pix) = projector.forward(
            set.tensor::<B, 3>("und.vt_semantic", device)
                .squeeze_dim::<2>(0),
            set.tensor::<B, 3>("und.vt_pixel", device)
                .squeeze_dim::<2>(0),
        );
        let projected = Tensor::cat(vec![sem.clone(), pix.clone()], 0);
        assert_close_scaled(
            "projected",
            &to_f32s(projected),
            &set.f32s("und.projected"),
            1e-5,
        );

        let lm = load_lm::<B>(&set, device);
        let tokenizer = TextTokenizer::from_dir(&set.dir).unwrap();
        let layout = VocabLayout::derive(
            &config,
            tokenizer.inner(),
            Some([
                vq.semantic_quantizer.codebook_size,
                vq.pixel_quantizer.codebook_size,
            ]),
        )
        .unwrap();
        let sequence = splice::image_sequence(
            &lm,
            &layout.structure,
            sem,
            features.semantic_grid,
            pix,
            features.pixel_grid,
        )
        .unwrap();
        // Copies of the projected rows and of embedding rows: exact up to the projector's rounding.
        assert_close_scaled(
            "image_sequence",
            &to_f32s(sequence.clone()),
            &set.f32s("und.image_sequence"),
            1e-5,
        );

        let question = set.meta()["spec"]["question"].as_str().unwrap().to_string();
        let prompt = tokenizer.encode(&Prompt::understanding(&question)).unwrap();
        let embeds =
            splice::splice(&lm, &prompt, &[sequence], config.tokenizer_model_max_length).unwrap();
        assert_close_scaled(
            "inputs_embeds",
            &to_f32s(embeds),
            &set.f32s("und.inputs_embeds"),
            1e-5,
        );
    }
}

backend_tests!(understanding_inputs_match_reference);
