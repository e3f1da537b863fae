//! The public API end to end on the fixture: `IllumeMllm::load` of the checkpoint folder,
//! understanding from the raw 8-bit image, text-to-image to token grids, and their decoding
//! with DualViTok; plus the demo model and clear errors for bad input.

use crate::common;

use common::{dualvitok_config, dualvitok_dir};
use illume_backends::{IllumeBackend, NdArray};
use illume_dualvitok::DualViTok;
use illume_mllm::generate::Observer;
use illume_mllm::{
    Chain, Decoding, IllumeMllm, ImageRequest, LevelSampling, MllmError, SamplingParams,
    TextRequest,
};
use illume_test_harness::{announce_case, assert_close_scaled, fixture_sets, to_f32s, FixtureSet};
use image::RgbImage;

#[derive(Default)]
struct Tokens(Vec<u32>);

impl Observer for Tokens {
    fn token(&mut self, _step: usize, token: u32) {
        self.0.push(token);
    }
}

fn fixture_image(set: &FixtureSet) -> RgbImage {
    let shape = set.shape("und.image_uint8");
    RgbImage::from_raw(shape[1] as u32, shape[0] as u32, set.u8s("und.image_uint8")).unwrap()
}

/// The fixture's T2I run through the public API: the evaluation chain as generation_eval
/// ran it (`<start_of_image>` left to the model), greedy.
fn fixture_t2i_request(set: &FixtureSet) -> ImageRequest {
    let meta = set.meta();
    let config = &meta["meta"]["inference_config_t2i"];
    let p = |prefix: &str| {
        SamplingParams::new(
            config[format!("{prefix}temperature")].as_f64().unwrap() as f32,
            config[format!("{prefix}top_k")].as_u64().unwrap() as usize,
            config[format!("{prefix}top_p")].as_f64().unwrap() as f32,
        )
    };
    let hw = &meta["meta"]["t2i"]["resolution_hw"];
    ImageRequest {
        height: hw[0].as_u64().unwrap() as usize,
        width: hw[1].as_u64().unwrap() as usize,
        guidance: config["llm_cfg_scale"].as_f64().unwrap() as f32,
        chain: Chain::Eval {
            force_image_start: false,
        },
        sampling: LevelSampling {
            text: p(""),
            level0: p("image_semantic_"),
            level1: p("image_pixel_"),
        },
        decoding: Decoding::Greedy,
        ..ImageRequest::text_to_image(256, 256)
    }
}

fn pipeline_matches_reference<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("mllm") {
        let mllm = IllumeMllm::<B>::load(&set.dir, &dualvitok_config(&set), device)
            .expect("the fixture loads");

        announce_case(
            &set,
            "und through IllumeMllm::understand (raw image in, greedy ids out)",
        );
        let mut tokens = Tokens::default();
        let meta = set.meta();
        let request = TextRequest {
            max_new_tokens: meta["spec"]["n_new_und"].as_u64().unwrap() as usize,
            decoding: Decoding::Greedy,
            sampling: SamplingParams::new(0.7, 20, 0.8),
        };
        let question = meta["spec"]["question"].as_str().unwrap();
        mllm.understand(&fixture_image(&set), question, &request, &mut tokens)
            .unwrap();
        let expected: Vec<u32> = set
            .i64s("und.generated_ids")
            .into_iter()
            .map(|v| v as u32)
            .collect();
        assert_eq!(
            tokens.0, expected,
            "greedy understanding ids from the raw image"
        );

        announce_case(
            &set,
            "t2i through IllumeMllm::text_to_image, decoded by DualViTok",
        );
        let content = meta["spec"]["content"].as_str().unwrap();
        let image = mllm
            .text_to_image(
                content,
                &fixture_t2i_request(&set),
                &mut illume_mllm::generate::Silent,
            )
            .unwrap();
        let indices = |name: &str| {
            set.i64s(name)
                .into_iter()
                .map(|v| v as u32)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            image.tokens.semantic.indices,
            indices("t2i.semantic_indices")
        );
        assert_eq!(image.tokens.pixel.indices, indices("t2i.pixel_indices"));
        assert_eq!(
            image.tokens.semantic.shape.to_vec(),
            set.shape("t2i.semantic_indices")[1..]
        );
        let decoder = DualViTok::<B>::load(&dualvitok_dir(&set), device).unwrap();
        let decoded = decoder.decode(&image.tokens).unwrap();
        // DualViTok README: ~1e-4 on the reconstruction.
        assert_close_scaled(
            "decoded image",
            &to_f32s(decoded.clone()),
            &set.f32s("t2i.decoded_image"),
            1e-4,
        );
        let rgb = illume_dualvitok::image_io::to_rgb(decoded);
        let reference = set.u8s("t2i.decoded_image_uint8");
        let worst = rgb
            .as_raw()
            .iter()
            .zip(&reference)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        // DualViTok README: uint8 within ±1 (rounding of values at .5 boundaries).
        assert!(worst <= 1, "decoded uint8 image differs by {worst}");
    }
}

// On the CPU backends only: on Mesa's lavapipe this end-to-end run (372 generated tokens with
// CFG) takes ~4 minutes of CI, while each stage it chains already runs on wgpu against the
// same fixture (vision.rs, generation.rs, DualViTok's parity tests) and `illume doctor`
// checks the whole MLLM on a GPU against the CPU.
mod ndarray_backend {
    #[test]
    fn pipeline_matches_reference() {
        super::pipeline_matches_reference::<illume_test_harness::backends::NdArray>(
            &Default::default(),
        );
    }
}

mod flex_backend {
    #[test]
    fn pipeline_matches_reference() {
        super::pipeline_matches_reference::<illume_test_harness::backends::Flex>(
            &Default::default(),
        );
    }
}

#[test]
fn demo_model_runs_every_task() {
    let dir = std::env::temp_dir().join(format!("illume-mllm-demo-{}", std::process::id()));
    illume_mllm::demo::write(&dir).unwrap();
    let device = Default::default();
    let mllm =
        IllumeMllm::<NdArray>::load(&dir, &illume_mllm::demo::vision_config(), &device).unwrap();
    let image = RgbImage::from_fn(90, 70, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let answer = mllm
        .understand(
            &image,
            "What is this?",
            &TextRequest {
                max_new_tokens: 4,
                ..TextRequest::default()
            },
            &mut Tokens::default(),
        )
        .unwrap();
    let _ = answer;
    let mut request = ImageRequest::text_to_image(256, 256);
    request.decoding = Decoding::Sample { seed: 3 };
    let generated = mllm
        .text_to_image("a cat", &request, &mut illume_mllm::generate::Silent)
        .unwrap();
    assert_eq!(generated.tokens.semantic.shape, [9, 9]);
    assert_eq!(generated.tokens.pixel.shape, [16, 16]);
    let again = mllm
        .text_to_image("a cat", &request, &mut illume_mllm::generate::Silent)
        .unwrap();
    assert_eq!(
        generated.ids, again.ids,
        "the same seed gives the same image"
    );
    let edited = mllm
        .edit(
            &image,
            "make it blue",
            &ImageRequest::editing(),
            &mut illume_mllm::generate::Silent,
        )
        .unwrap();
    assert_eq!(
        edited.size,
        (384, 512),
        "90x70 is closest to the 4:3 anchor"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let device = Default::default();
    for set in fixture_sets("mllm") {
        announce_case(&set, "bad inputs");
        let vision = dualvitok_config(&set);
        // A DualViTok folder is not an MLLM.
        let err = IllumeMllm::<NdArray>::load(&dualvitok_dir(&set), &vision, &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("illume_qwen2") || err.contains("ILLUME+ MLLM"),
            "{err}"
        );
        // A missing folder.
        let err = IllumeMllm::<NdArray>::load("/nonexistent/mllm".as_ref(), &vision, &device)
            .unwrap_err();
        assert!(matches!(err, MllmError::Config { .. }), "{err}");
        let mllm = IllumeMllm::<NdArray>::load(&set.dir, &vision, &device).unwrap();
        let err = mllm
            .text_to_image(
                "x",
                &ImageRequest::text_to_image(250, 256),
                &mut illume_mllm::generate::Silent,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("multiples of 64"), "{err}");
        let mut bad = ImageRequest::text_to_image(256, 256);
        bad.guidance = 0.5;
        let err = mllm
            .text_to_image("x", &bad, &mut illume_mllm::generate::Silent)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CFG scale"), "{err}");
        let err = mllm
            .understand(
                &RgbImage::new(0, 0),
                "q",
                &TextRequest::default(),
                &mut Tokens::default(),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
    }
    // Configs edited by an attacker: refused before any model is built, naming the field.
    for set in fixture_sets("mllm") {
        let vision = dualvitok_config(&set);
        let cases = [
            (
                "num_hidden_layers",
                serde_json::json!(100_000),
                "num_hidden_layers=100000",
            ),
            ("hidden_size", serde_json::json!(1u64 << 40), "hidden_size"),
            (
                "intermediate_size",
                serde_json::json!(1u64 << 40),
                "intermediate_size",
            ),
            ("rope_theta", serde_json::json!(0.0), "rope_theta"),
            ("rms_norm_eps", serde_json::json!(-1e-6), "rms_norm_eps"),
        ];
        for (field, value, needle) in cases {
            let dir = edited_copy(&set.dir, field, value);
            let started = std::time::Instant::now();
            let err = IllumeMllm::<NdArray>::load(&dir, &vision, &device)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("config.json") && err.contains(needle),
                "{field}: {err}"
            );
            // Refused from the config alone: well under the seconds building would take.
            assert!(
                started.elapsed().as_secs() < 30,
                "{field}: {:?}",
                started.elapsed()
            );
        }
    }
    // The fixture MLLM paired with the release DualViTok (what `--model` without
    // `--tokenizer` does): the message says which DualViTok to give.
    for set in fixture_sets("mllm") {
        let release = illume_dualvitok::DualViTokConfig::official();
        let err = IllumeMllm::<NdArray>::load(&set.dir, &release, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tokenizer"), "{err}");
    }
    // A vision architecture that does not fit the checkpoint.
    for set in fixture_sets("mllm") {
        let mut vision = dualvitok_config(&set);
        vision.vit.hidden_size += 8;
        let err = IllumeMllm::<NdArray>::load(&set.dir, &vision, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mm_hidden_size"), "{err}");
    }
}

/// A copy of the checkpoint folder `dir` with one `config.json` field replaced.
fn edited_copy(dir: &std::path::Path, field: &str, value: serde_json::Value) -> std::path::PathBuf {
    let copy =
        std::env::temp_dir().join(format!("illume-mllm-edited-{}-{field}", std::process::id()));
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    let config = copy.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json[field] = value;
    std::fs::write(&config, json.to_string()).unwrap();
    copy
}
