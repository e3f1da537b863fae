//! Shared helpers of the MLLM parity tests.
#![allow(dead_code)]

use std::path::PathBuf;

use illume_backends::IllumeBackend;
use illume_dualvitok::DualViTokConfig;
use illume_mllm::decoder::LanguageModel;
use illume_mllm::vocab_shards::default_rows_per_shard;
use illume_mllm::{MllmConfig, TextTokenizer, VocabLayout};
use illume_test_harness::{fixture_root, FixtureSet};
use illume_weights::Checkpoint;

/// The DualViTok fixture the MLLM fixture names (`dualvitok_fixture_for_decoding`): the
/// same sub-folder under that component when the MLLM set is in one, else the component.
pub fn dualvitok_dir(set: &FixtureSet) -> PathBuf {
    let component = set.meta()["dualvitok_fixture_for_decoding"]
        .as_str()
        .unwrap_or("dualvitok")
        .to_string();
    let root = fixture_root().join(&component);
    let sub = set
        .dir
        .file_name()
        .map(|n| root.join(n))
        .filter(|p| p.join("config.json").is_file());
    sub.unwrap_or(root)
}

pub fn dualvitok_config(set: &FixtureSet) -> DualViTokConfig {
    DualViTokConfig::from_file(&dualvitok_dir(set).join("config.json"))
        .expect("DualViTok fixture config")
}

/// The vocabulary layout from config + tokenizer, image codes sized by the DualViTok
/// codebooks.
pub fn layout(set: &FixtureSet) -> VocabLayout {
    let config = MllmConfig::from_dir(&set.dir).unwrap();
    let tokenizer = TextTokenizer::from_dir(&set.dir).unwrap();
    let vq = dualvitok_config(set);
    let sizes = [
        vq.semantic_quantizer.codebook_size,
        vq.pixel_quantizer.codebook_size,
    ];
    VocabLayout::derive(&config, tokenizer.inner(), Some(sizes)).unwrap()
}

pub fn load_lm<B: IllumeBackend>(set: &FixtureSet, device: &B::Device) -> LanguageModel<B> {
    let config = MllmConfig::from_dir(&set.dir).unwrap();
    let checkpoint = Checkpoint::open(&set.dir).unwrap();
    LanguageModel::load(
        &checkpoint,
        &config.decoder,
        default_rows_per_shard(config.decoder.hidden_size),
        &["vision_tower.", "mm_projector."],
        device,
    )
    .unwrap()
}

/// Processed scores agree: the same entries are -inf, the finite ones within
/// `tol · max(1, max|expected|)`. Returns the largest difference relative to that scale.
pub fn assert_scores_match(what: &str, actual: &[f32], expected: &[f32], tol: f32) -> f32 {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let masked = |v: &f32| *v == f32::NEG_INFINITY;
    if let Some(i) = (0..actual.len()).find(|&i| masked(&actual[i]) != masked(&expected[i])) {
        panic!(
            "{what}: token {i} is {} here but {} in the reference",
            actual[i], expected[i]
        );
    }
    let finite: Vec<(f32, f32)> = actual
        .iter()
        .zip(expected)
        .filter(|(_, e)| !masked(e))
        .map(|(a, e)| (*a, *e))
        .collect();
    let scale = finite.iter().fold(1.0f32, |m, (_, e)| m.max(e.abs()));
    let (diff, at) = finite
        .iter()
        .enumerate()
        .map(|(i, (a, e))| ((a - e).abs(), i))
        .fold(
            (0.0f32, 0),
            |b, x| if x.0 > b.0 || x.0.is_nan() { x } else { b },
        );
    assert!(
        diff <= tol * scale,
        "{what}: max |diff| {diff:e} at finite entry {at} exceeds {tol:e} x {scale} ({} allowed tokens)",
        finite.len()
    );
    diff / scale
}

/// Row `i` of a `[rows, vocab]` fixture tensor.
pub fn row(values: &[f32], vocab: usize, i: usize) -> &[f32] {
    &values[i * vocab..(i + 1) * vocab]
}
