//! Parity with the official PyTorch DualViTok: every intermediate the fixture README lists,
//! for every case of every fixture set under the fixture root, on every compiled backend.
//!
//! Tolerances (README "Tolerances"): the float32 noise floor of the reference itself is
//! ~2e-6 on intermediates and ~7e-6 on reconstructions, so continuous tensors must match to
//! 1e-5 (intermediates) / 1e-4 (reconstruction) times max(1, max|expected|), indices exactly,
//! and uint8 images within ±1.

use burn::tensor::Tensor;
use illume_backends::IllumeBackend;
use illume_dualvitok::movq::MoVqEncoder;
use illume_dualvitok::preprocess;
use illume_dualvitok::vit::VisionTransformer;
use illume_dualvitok::DualViTokConfig;
use illume_test_harness::{
    announce_case, assert_close_scaled, backend_tests, fixture_sets, to_f32s, FixtureSet,
};
use illume_weights::Checkpoint;

/// Intermediates: the reference's own noise floor is ~2e-6.
const INTERMEDIATE_TOL: f32 = 1e-5;

fn config(set: &FixtureSet) -> DualViTokConfig {
    DualViTokConfig::from_file(&set.dir.join("config.json")).expect("fixture config")
}

fn weights(set: &FixtureSet) -> Checkpoint {
    Checkpoint::open(set.dir.join("model.safetensors")).expect("fixture weights")
}

/// Case prefixes of a set (`case0`, `case1`, ...), each announced.
fn cases(set: &FixtureSet) -> Vec<String> {
    let cases = set.prefixes();
    assert!(
        !cases.is_empty(),
        "{}: no case in io.safetensors",
        set.dir.display()
    );
    cases
}

fn check<B: IllumeBackend, const D: usize>(
    set: &FixtureSet,
    case: &str,
    name: &str,
    actual: Tensor<B, D>,
    tol: f32,
) {
    let key = format!("{case}.{name}");
    assert_eq!(
        actual.dims().to_vec(),
        set.shape(&key),
        "{key}: shape differs from the reference"
    );
    assert_close_scaled(&key, &to_f32s(actual), &set.f32s(&key), tol);
}

fn semantic_preprocessing<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("dualvitok") {
        for case in cases(&set) {
            announce_case(&set, &case);
            let image = set.tensor::<B, 4>(&format!("{case}.pixel_values"), device);
            let resized = preprocess::resize01(image);
            check(
                &set,
                &case,
                "sem.resized01",
                resized.clone(),
                INTERMEDIATE_TOL,
            );
            let normalized = preprocess::normalize(resized);
            check(
                &set,
                &case,
                "sem.normalized",
                normalized.clone(),
                INTERMEDIATE_TOL,
            );
            let input = preprocess::patchify(normalized);
            check(&set, &case, "sem.patches", input.patches, INTERMEDIATE_TOL);
            let thw = set.i64s(&format!("{case}.sem.grid_thw"));
            assert_eq!(
                thw,
                vec![1, input.grid[0] as i64, input.grid[1] as i64],
                "grid_thw"
            );
        }
    }
}

fn vision_transformer<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("dualvitok") {
        let config = config(&set);
        let vit = VisionTransformer::<B>::load(
            &weights(&set).subtree("semantic_encoder.model"),
            &config.vit,
            device,
        )
        .expect("ViT loads from the fixture");
        for case in cases(&set) {
            announce_case(&set, &case);
            // Start from the reference patches, so each stage is checked on its own.
            let patches = set.tensor::<B, 2>(&format!("{case}.sem.patches"), device);
            let grid = set.i64s(&format!("{case}.sem.grid_thw"));
            let grid = [grid[1] as usize, grid[2] as usize];
            let embedded = vit.embed_patches(patches);
            check(
                &set,
                &case,
                "sem.vit_patch_embed",
                embedded.clone(),
                INTERMEDIATE_TOL,
            );
            let blocks = vit.run_blocks(embedded, grid);
            check(
                &set,
                &case,
                "sem.vit_last_block",
                blocks.clone(),
                INTERMEDIATE_TOL,
            );
            let features = vit.merger.forward(blocks);
            check(&set, &case, "sem.vit_features", features, INTERMEDIATE_TOL);
            // And end to end from the image.
            let image = set.tensor::<B, 4>(&format!("{case}.pixel_values"), device);
            let features = vit.forward(&preprocess::scaling_layer(image));
            check(&set, &case, "sem.vit_features", features, INTERMEDIATE_TOL);
        }
    }
}

fn pixel_encoder<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("dualvitok") {
        let config = config(&set);
        let encoder = MoVqEncoder::<B>::load(
            &weights(&set).subtree("pixel_encoder"),
            &config.pixel_encoder,
            device,
        )
        .expect("pixel encoder loads from the fixture");
        for case in cases(&set) {
            announce_case(&set, &case);
            let image = set.tensor::<B, 4>(&format!("{case}.pixel_values"), device);
            let features = encoder.features(image);
            check(
                &set,
                &case,
                "pix.enc_mid",
                features.clone(),
                INTERMEDIATE_TOL,
            );
            let out = encoder.head(features);
            check(&set, &case, "pix.encoder_out", out, INTERMEDIATE_TOL);
        }
    }
}

backend_tests!(semantic_preprocessing, vision_transformer, pixel_encoder);
