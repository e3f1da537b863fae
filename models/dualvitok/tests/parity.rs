//! Parity with the official PyTorch DualViTok: every intermediate the fixture README lists,
//! for every case of every fixture set under the fixture root, on every compiled backend.
//!
//! Tolerances (README "Tolerances"): the float32 noise floor of the reference itself is
//! ~2e-6 on intermediates and ~7e-6 on reconstructions, so continuous tensors must match to
//! 1e-5 (intermediates) / 1e-4 (reconstruction) times max(1, max|expected|), indices exactly,
//! and uint8 images within ±1.

use burn::tensor::{Int, Tensor};
use illume_backends::IllumeBackend;
use illume_dualvitok::layers::conv2d;
use illume_dualvitok::movq::MoVqEncoder;
use illume_dualvitok::vit::VisionTransformer;
use illume_dualvitok::{image_io, merge_quants, preprocess, simvq};
use illume_dualvitok::{DualTokens, DualViTok, DualViTokConfig, TokenGrid};
use illume_test_harness::{
    announce_case, assert_close_scaled, backend_tests, fixture_sets, to_f32s, FixtureSet,
};
use illume_weights::Checkpoint;

/// Intermediates: the reference's own noise floor is ~2e-6.
const INTERMEDIATE_TOL: f32 = 1e-5;
/// Reconstructions: the reference's own noise floor is ~7e-6 after the deep decoder.
const RECON_TOL: f32 = 1e-4;

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

/// The fixture's DualViTok, through the public loader (folder: config.json + model.safetensors).
fn tokenizer<B: IllumeBackend>(set: &FixtureSet, device: &B::Device) -> DualViTok<B> {
    DualViTok::load(&set.dir, device).expect("the fixture DualViTok loads")
}

/// `[n, c]` rows of a row-major `[h, w]` grid → `[1, c, h, w]`.
fn rows_to_map<B: IllumeBackend>(rows: Tensor<B, 2>, grid: [usize; 2]) -> Tensor<B, 4> {
    let [_, c] = rows.dims();
    rows.reshape([1, grid[0], grid[1], c]).permute([0, 3, 1, 2])
}

fn grid_of<B: IllumeBackend>(map: &Tensor<B, 4>) -> [usize; 2] {
    let [_, _, h, w] = map.dims();
    [h, w]
}

/// A reference index grid `[1, h, w]` as tokens.
fn reference_grid(set: &FixtureSet, key: &str) -> TokenGrid {
    let shape = set.shape(key);
    let indices = set.i64s(key).into_iter().map(|i| i as u32).collect();
    TokenGrid::new([shape[1], shape[2]], indices).expect("reference grid")
}

fn reference_tokens(set: &FixtureSet, case: &str) -> DualTokens {
    DualTokens {
        semantic: reference_grid(set, &format!("{case}.sem.indices")),
        pixel: reference_grid(set, &format!("{case}.pix.indices")),
    }
}

fn semantic_encoder_head<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("dualvitok") {
        let tok = tokenizer::<B>(&set, device);
        let encoder = &tok.model.semantic_encoder;
        for case in cases(&set) {
            announce_case(&set, &case);
            let features = set.tensor::<B, 2>(&format!("{case}.sem.vit_features"), device);
            let reference_z = set.tensor::<B, 4>(&format!("{case}.sem.z"), device);
            let grid = grid_of(&reference_z);
            let target = encoder.target(features.clone());
            check(
                &set,
                &case,
                "sem.target",
                rows_to_map(target.clone(), grid),
                INTERMEDIATE_TOL,
            );
            let blocks_in = encoder.project_in(target);
            check(&set, &case, "sem.blocks_in", blocks_in, INTERMEDIATE_TOL);
            let encoding = encoder.head(features, grid);
            check(&set, &case, "sem.z", encoding.z, INTERMEDIATE_TOL);
        }
    }
}

fn quantizers<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("dualvitok") {
        let tok = tokenizer::<B>(&set, device);
        for case in cases(&set) {
            announce_case(&set, &case);
            // Semantic level, from the reference z.
            let z = set.tensor::<B, 4>(&format!("{case}.sem.z"), device);
            let grid = grid_of(&z);
            let indices = tok.semantic_codebook().quantize(z);
            let expected = set.i64s(&format!("{case}.sem.indices"));
            assert_eq!(to_i64s(indices.clone()), expected, "{case}.sem.indices");
            let codes = tok.semantic_codebook().lookup(indices, grid);
            check(&set, &case, "sem.codes", codes.clone(), INTERMEDIATE_TOL);
            // quant_st = (q - z) + z differs from the codes by float rounding only.
            check(&set, &case, "sem.quant_st", codes, INTERMEDIATE_TOL);

            // Pixel level, from the reference encoder output.
            let out = set.tensor::<B, 4>(&format!("{case}.pix.encoder_out"), device);
            let z = conv2d(&tok.model.pixel_quant_conv, out);
            check(&set, &case, "pix.z", z.clone(), INTERMEDIATE_TOL);
            let grid = grid_of(&z);
            let z = set.tensor::<B, 4>(&format!("{case}.pix.z"), device);
            let indices = tok.pixel_codebook().quantize(z);
            let expected = set.i64s(&format!("{case}.pix.indices"));
            assert_eq!(to_i64s(indices.clone()), expected, "{case}.pix.indices");
            let codes = tok.pixel_codebook().lookup(indices, grid);
            check(&set, &case, "pix.codes", codes.clone(), INTERMEDIATE_TOL);
            check(&set, &case, "pix.quant_st", codes, INTERMEDIATE_TOL);

            // indices_to_codes from host tokens.
            let (sem, pix) = tok
                .indices_to_codes(&reference_tokens(&set, &case))
                .unwrap();
            check(&set, &case, "sem.codes", sem, INTERMEDIATE_TOL);
            check(&set, &case, "pix.codes", pix, INTERMEDIATE_TOL);
        }
    }
}

fn semantic_decoder<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("dualvitok") {
        let tok = tokenizer::<B>(&set, device);
        for case in cases(&set) {
            announce_case(&set, &case);
            for (input, output) in [
                ("sem.codes", "sem.decoded"),
                ("sem.quant_st", "sem.decoded_from_quant_st"),
            ] {
                let codes = set.tensor::<B, 4>(&format!("{case}.{input}"), device);
                check(
                    &set,
                    &case,
                    output,
                    tok.decode_semantic(codes),
                    INTERMEDIATE_TOL,
                );
            }
        }
    }
}

fn pixel_decoder<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("dualvitok") {
        let tok = tokenizer::<B>(&set, device);
        let decoder = &tok.model.pixel_decoder;
        for case in cases(&set) {
            announce_case(&set, &case);
            let sem = set.tensor::<B, 4>(&format!("{case}.sem.codes"), device);
            let pix = set.tensor::<B, 4>(&format!("{case}.pix.codes"), device);
            let merged = merge_quants(sem, pix);
            check(&set, &case, "dec.merged", merged, INTERMEDIATE_TOL);
            let merged = set.tensor::<B, 4>(&format!("{case}.dec.merged"), device);
            let post_quant = conv2d(&tok.model.pixel_post_quant_conv, merged.clone());
            check(&set, &case, "dec.post_quant", post_quant, INTERMEDIATE_TOL);
            let post_quant = set.tensor::<B, 4>(&format!("{case}.dec.post_quant"), device);
            let conv_in = conv2d(&decoder.conv_in, post_quant.clone());
            check(&set, &case, "dec.conv_in", conv_in, INTERMEDIATE_TOL);
            let mid = decoder.middle(decoder.stem(post_quant), &merged);
            check(&set, &case, "dec.mid", mid, INTERMEDIATE_TOL);

            // Whole decode from the reference indices, and the uint8 image.
            let recon = tok.decode(&reference_tokens(&set, &case)).unwrap();
            check(&set, &case, "recon", recon.clone(), RECON_TOL);
            let rgb = image_io::to_rgb(recon);
            let expected = set.u8s(&format!("{case}.recon_uint8"));
            let [_, _, h, w] = set.shape(&format!("{case}.recon_uint8"))[..] else {
                panic!("recon_uint8 is NCHW")
            };
            let mut worst = 0i32;
            for (i, &e) in expected.iter().enumerate() {
                let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
                let got = rgb.get_pixel(x as u32, y as u32).0[c];
                worst = worst.max((got as i32 - e as i32).abs());
            }
            println!("    {case}.recon_uint8: max |diff| {worst}");
            // uint8 within ±1: truncation of values within 1e-4 of an integer can flip.
            assert!(worst <= 1, "{case}.recon_uint8 differs by {worst}");

            let sem_st = set.tensor::<B, 4>(&format!("{case}.sem.quant_st"), device);
            let pix_st = set.tensor::<B, 4>(&format!("{case}.pix.quant_st"), device);
            let recon_st = tok.decode_codes(sem_st, pix_st);
            check(&set, &case, "recon_from_quant_st", recon_st, RECON_TOL);
        }
    }
}

fn end_to_end<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("dualvitok") {
        let tok = tokenizer::<B>(&set, device);
        for case in cases(&set) {
            announce_case(&set, &case);
            // The app's 8-bit → [-1, 1] conversion is exact.
            let key = format!("{case}.image_uint8");
            let [h, w, _] = set.shape(&key)[..] else {
                panic!("image_uint8 is HWC")
            };
            let rgb = image::RgbImage::from_raw(w as u32, h as u32, set.u8s(&key)).unwrap();
            let image = image_io::to_tensor::<B>(&rgb, device);
            check(&set, &case, "pixel_values", image.clone(), 0.0);

            let tokens = tok.encode(&image).unwrap();
            let expected = reference_tokens(&set, &case);
            assert_eq!(
                tokens.semantic, expected.semantic,
                "{case}: semantic tokens"
            );
            assert_eq!(tokens.pixel, expected.pixel, "{case}: pixel tokens");
            println!(
                "    {case}: tokens identical (semantic {:?}, pixel {:?})",
                tokens.semantic.shape, tokens.pixel.shape
            );
            let same = tok.encode_rgb(&rgb, device).unwrap();
            assert_eq!(same, tokens, "{case}: encode_rgb of an aligned image");

            let features = tok.vision_features(&image).unwrap();
            check(
                &set,
                &case,
                "sem.vit_features",
                features.semantic,
                INTERMEDIATE_TOL,
            );
            check(
                &set,
                &case,
                "pix.encoder_out",
                features.pixel,
                INTERMEDIATE_TOL,
            );
        }
    }
}

fn to_i64s<B: IllumeBackend>(indices: Tensor<B, 1, Int>) -> Vec<i64> {
    simvq::indices_to_host(indices)
        .into_iter()
        .map(i64::from)
        .collect()
}

backend_tests!(
    semantic_preprocessing,
    vision_transformer,
    pixel_encoder,
    semantic_encoder_head,
    quantizers,
    semantic_decoder,
    pixel_decoder,
    end_to_end
);

/// Every top-level layout the official loaders accept gives the same model: `.bin` and
/// `.safetensors`, flat or nested under `model` / `ema` / `state_dict`.
#[test]
fn checkpoint_layouts_load_identically() {
    type B = illume_backends::NdArray;
    let device = Default::default();
    for set in fixture_sets("dualvitok") {
        let config = config(&set);
        let case = &cases(&set)[0];
        let image = set.tensor::<B, 4>(&format!("{case}.pixel_values"), &device);
        let expected = reference_tokens(&set, case);
        let st = weights(&set);
        let bin = Checkpoint::open(set.dir.join("pytorch_model.bin")).unwrap();
        let mut layouts = vec![("pytorch_model.bin", bin.renamed(|n| Some(n.to_string())))];
        for wrapper in ["model", "ema", "state_dict"] {
            layouts.push((wrapper, st.renamed(move |n| Some(format!("{wrapper}.{n}")))));
        }
        for (what, checkpoint) in layouts {
            let tok = DualViTok::<B>::from_checkpoint(&checkpoint, config.clone(), &device)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(tok.encode(&image).unwrap(), expected, "{what}");
            println!("  {what}: loads, same tokens");
        }
    }
}
