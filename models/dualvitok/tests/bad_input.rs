//! Bad input is a clear error, never a panic: unreadable, empty, tiny and oversized images,
//! malformed tensors and tokens, and checkpoints that are not (this) DualViTok.

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::Tensor;
use illume_backends::NdArray;
use illume_dualvitok::{demo, image_io, DualTokens, DualViTok, Error, TokenGrid};
use illume_weights::{Checkpoint, WeightsError};
use image::RgbImage;

type B = NdArray;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("illume-dvt-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The demo DualViTok, written once and loaded like a downloaded checkpoint.
fn demo_tokenizer() -> DualViTok<B> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = scratch("demo");
        demo::write(&dir).expect("demo checkpoint is written");
        dir
    });
    DualViTok::load(dir, &Default::default()).expect("demo checkpoint loads")
}

#[test]
fn unreadable_images_are_reported_with_their_path() {
    let missing = scratch("no-such-image.png");
    let err = image_io::read_rgb(&missing).unwrap_err();
    assert!(matches!(err, Error::ImageRead { .. }), "{err}");
    assert!(err.to_string().contains("no-such-image.png"), "{err}");

    let garbage = scratch("garbage.png");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nthis is not a png at all").unwrap();
    let err = image_io::read_rgb(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("garbage.png") && err.contains("not a readable image"),
        "{err}"
    );

    let text = scratch("notes.jpg");
    std::fs::write(&text, "hello").unwrap();
    assert!(matches!(
        image_io::read_rgb(&text),
        Err(Error::ImageRead { .. })
    ));
}

#[test]
fn empty_tiny_and_oversized_images_are_refused() {
    let tok = demo_tokenizer();
    let device = Default::default();
    let err = tok.encode_rgb(&RgbImage::new(0, 0), &device).unwrap_err();
    assert!(matches!(err, Error::EmptyImage { .. }), "{err}");
    let err = tok.encode_rgb(&RgbImage::new(12, 64), &device).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageTooSmall {
                width: 12,
                height: 64
            }
        ),
        "{err}"
    );

    let small_budget = tok.with_max_pixels(64 * 64);
    let err = small_budget
        .encode_rgb(&RgbImage::new(100, 80), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("100x80") && err.contains("4096 pixels"),
        "{err}"
    );
    assert!(err.contains("64x64"), "says how big is allowed: {err}");
    // The same budget bounds decoding: a 5x5 pixel grid is an 80x80 image.
    let tokens = DualTokens {
        semantic: TokenGrid::new([1, 1], vec![0]).unwrap(),
        pixel: TokenGrid::new([5, 5], vec![0; 25]).unwrap(),
    };
    let err = small_budget.decode(&tokens).unwrap_err();
    assert!(matches!(err, Error::ImageTooLarge { .. }), "{err}");
}

#[test]
fn malformed_tensors_and_tokens_are_refused() {
    let tok = demo_tokenizer();
    let device = Default::default();
    let unaligned = Tensor::<B, 4>::zeros([1, 3, 40, 48], &device);
    let err = tok.encode(&unaligned).unwrap_err().to_string();
    assert!(err.contains("multiples of 16"), "{err}");
    let gray = Tensor::<B, 4>::zeros([1, 1, 32, 32], &device);
    let err = tok.encode(&gray).unwrap_err().to_string();
    assert!(err.contains("[1, 3, H, W]"), "{err}");

    let out_of_range = DualTokens {
        semantic: TokenGrid::new([1, 2], vec![0, 1_000_000]).unwrap(),
        pixel: TokenGrid::new([2, 2], vec![0; 4]).unwrap(),
    };
    let err = tok.decode(&out_of_range).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TokenOutOfRange {
                index: 1_000_000,
                position: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(TokenGrid::new([2, 3], vec![0; 5]).is_err());
    let ragged = DualTokens {
        semantic: TokenGrid {
            shape: [2, 2],
            indices: vec![0; 3],
        },
        pixel: TokenGrid::new([2, 2], vec![0; 4]).unwrap(),
    };
    assert!(matches!(tok.decode(&ragged), Err(Error::Shape(_))));
}

#[test]
fn a_checkpoint_that_is_not_a_dualvitok_is_named_as_such() {
    let dir = scratch("not-dualvitok");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = 0f32.to_le_bytes().repeat(4);
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &bytes).unwrap();
    let file = safetensors::serialize([("model.layers.0.mlp.up_proj.weight", view)], None).unwrap();
    std::fs::write(dir.join("model.safetensors"), file).unwrap();
    let err = DualViTok::<B>::load(&dir, &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::WrongCheckpoint { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("not a DualViTok checkpoint"),
        "{err}"
    );
}

#[test]
fn missing_and_mis_shaped_tensors_are_listed() {
    let dir = scratch("demo-for-mismatch");
    demo::write(&dir).unwrap();
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let without = checkpoint.renamed(|n| (n != "pixel_quant_conv.bias").then(|| n.to_string()));
    let err = DualViTok::<B>::from_checkpoint(&without, demo::config(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("pixel_quant_conv.bias"),
        "{err}"
    );

    let mut other = demo::config();
    other.pixel_quantizer.codebook_size = 1000;
    let err = DualViTok::<B>::from_checkpoint(&checkpoint, other, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("pixel_quantizer.frozen_codebook"), "{err}");
    assert!(
        err.contains("[1000, 16]") && err.contains("[768, 16]"),
        "{err}"
    );
}

#[test]
fn a_corrupt_config_is_an_error_and_a_foreign_one_falls_back() {
    let dir = scratch("corrupt-config");
    demo::write(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = DualViTok::<B>::load(&dir, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("not valid JSON"),
        "{err}"
    );

    // A config in another schema: the built-in release configuration is used, and the tiny
    // demo weights cannot hold its 1.35 G parameters: refused before the release model is
    // built (which took 20 s and 5 GB just to report the mismatch).
    std::fs::write(dir.join("config.json"), r#"{"model_type": "something"}"#).unwrap();
    let started = std::time::Instant::now();
    let err = DualViTok::<B>::load(&dir, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("built-in release DualViTok") && err.contains("does not describe"),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

/// The demo checkpoint with one field of its ViT config replaced.
fn demo_with_vit_field(name: &str, field: &str, value: serde_json::Value) -> PathBuf {
    let dir = scratch(name);
    demo::write(&dir).unwrap();
    let path = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["semantic_encoder_vit_config"][field] = value;
    std::fs::write(&path, json.to_string()).unwrap();
    dir
}

#[test]
fn configs_out_of_range_or_larger_than_the_checkpoint_are_refused_by_field() {
    let cases = [
        ("depth", serde_json::json!(100_000), "depth=100000"),
        ("embed_dim", serde_json::json!(1u64 << 30), "embed_dim"),
        ("mlp_ratio", serde_json::json!(-4.0), "mlp_ratio"),
        ("mlp_ratio", serde_json::json!(0.0), "mlp_ratio"),
    ];
    for (i, (field, value, needle)) in cases.into_iter().enumerate() {
        let dir = demo_with_vit_field(&format!("vit-{i}"), field, value);
        let err = DualViTok::<B>::load(&dir, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.json") && err.contains(needle),
            "{field}: {err}"
        );
    }
}
