//! The Qwen2 decoder against the official fixture (per-layer hidden states and logits of
//! the spliced understanding prompt), and the KV cache / batching / vocabulary sharding
//! against the plain full-sequence forward.

use burn::tensor::{Tensor, TensorData};
use illume_backends::IllumeBackend;
use illume_mllm::decoder::LanguageModel;
use illume_mllm::vocab_shards::{default_rows_per_shard, VocabShards};
use illume_mllm::MllmConfig;
use illume_test_harness::{
    announce_case, assert_close_scaled, backend_tests, fixture_sets, reduction_noise_floor,
    to_f32s, NOISE_MARGIN,
};
use illume_weights::Checkpoint;

fn load<B: IllumeBackend>(
    dir: &std::path::Path,
    rows_per_shard: usize,
    device: &B::Device,
) -> LanguageModel<B> {
    let config = MllmConfig::from_dir(dir).expect("fixture config");
    let checkpoint = Checkpoint::open(dir).expect("fixture checkpoint");
    LanguageModel::load(
        &checkpoint,
        &config.decoder,
        rows_per_shard,
        &["vision_tower.", "mm_projector."],
        device,
    )
    .expect("decoder loads")
}

fn decoder_matches_reference<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("mllm") {
        announce_case(&set, "und (decoder on the spliced inputs_embeds)");
        let lm = load::<B>(&set.dir, default_rows_per_shard(64), device);
        let embeds: Tensor<B, 3> = set.tensor("und.inputs_embeds", device);
        let [_, n, hidden] = embeds.dims();
        let mut cache = lm.new_cache(1, n);
        let out = lm.forward(embeds, &mut cache, &[0], true).expect("forward");
        // README: float32 re-implementations agree to ~1e-5 relative on hidden states
        // (the official code itself moves by 6e-5 on values up to ~50 between thread counts).
        assert_close_scaled(
            "hidden after layer 0",
            &to_f32s(out.layer_outputs[0].clone()),
            &set.f32s("und.hidden_layer0"),
            1e-5,
        );
        assert_close_scaled(
            "final-norm hidden",
            &to_f32s(out.hidden.clone()),
            &set.f32s("und.hidden_final_norm"),
            1e-5,
        );
        let logits = lm.logits(out.hidden.reshape([n, hidden]));
        // README: ~1e-4 on logits.
        assert_close_scaled("logits", &to_f32s(logits), &set.f32s("und.logits"), 1e-4);
    }
}

/// Prefill of a prefix then token-by-token decoding through the KV cache gives the logits
/// of the full-sequence forward; two sequences of different lengths decoded in one batched
/// call give what each gives alone.
fn cached_decoding_matches_full_forward<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("mllm") {
        announce_case(&set, "und (KV cache, batched rows)");
        let lm = load::<B>(&set.dir, default_rows_per_shard(64), device);
        let embeds: Tensor<B, 3> = set.tensor("und.inputs_embeds", device);
        let [_, n, hidden] = embeds.dims();
        let full = {
            let mut cache = lm.new_cache(1, n);
            let out = lm.forward(embeds.clone(), &mut cache, &[0], false).unwrap();
            to_f32s(lm.logits(out.hidden.reshape([n, hidden])))
        };
        let vocab = full.len() / n;
        let row = |i: usize| &full[i * vocab..(i + 1) * vocab];
        let step = |i: usize| embeds.clone().slice([0..1, i..i + 1, 0..hidden]);

        // Row 0 holds the whole prompt prefix up to `split`, row 1 a shorter prefix; both
        // continue together, one position per call.
        let (split, short) = (n - 4, n - 9);
        let mut cache = lm.new_cache(2, n);
        lm.forward(
            embeds.clone().slice([0..1, 0..split, 0..hidden]),
            &mut cache,
            &[0],
            false,
        )
        .unwrap();
        lm.forward(
            embeds.clone().slice([0..1, 0..short, 0..hidden]),
            &mut cache,
            &[1],
            false,
        )
        .unwrap();
        // Same computation in a different association order: reduction-order noise only,
        // NOISE_MARGIN x the backend's floor (CPU 1e-5, GPU 1e-4).
        let tol = NOISE_MARGIN * reduction_noise_floor::<B>();
        for k in 0..4 {
            let batch = Tensor::cat(vec![step(split + k), step(short + k)], 0);
            let logits = to_f32s(lm.forward_last_logits(batch, &mut cache, &[0, 1]).unwrap());
            assert_close_scaled(
                &format!("cached row 0, position {}", split + k),
                &logits[..vocab],
                row(split + k),
                tol,
            );
            assert_close_scaled(
                &format!("cached row 1, position {}", short + k),
                &logits[vocab..],
                row(short + k),
                tol,
            );
        }
        // Rewinding a row replays the same positions.
        cache.truncate(1, short);
        let again = to_f32s(
            lm.forward_last_logits(step(short), &mut cache, &[1])
                .unwrap(),
        );
        assert_close_scaled("rewound row 1", &again, row(short), tol);
    }
}

/// The vocabulary split into 100-row shards gives the same embeddings and logits as one
/// shard.
fn vocabulary_shards_match_one_matrix<B: IllumeBackend>(device: &B::Device) {
    for set in fixture_sets("mllm") {
        announce_case(&set, "embedding and LM head in 100-row shards");
        let checkpoint = Checkpoint::open(&set.dir).unwrap();
        let config = MllmConfig::from_dir(&set.dir).unwrap().decoder;
        let shape = [config.vocab_size, config.hidden_size];
        let one = VocabShards::<B>::from_checkpoint(
            &checkpoint,
            "model.embed_tokens.weight",
            shape,
            usize::MAX,
            device,
        )
        .unwrap();
        let many = VocabShards::<B>::from_checkpoint(
            &checkpoint,
            "model.embed_tokens.weight",
            shape,
            100,
            device,
        )
        .unwrap();
        assert_eq!(one.shard_count(), 1);
        assert_eq!(many.shard_count(), config.vocab_size.div_ceil(100));
        // Ids from several shards, out of order and repeated.
        let ids: Vec<u32> = vec![1318, 5, 240, 99, 100, 1318, 777, 0, 1200];
        let matrix: Vec<f32> = set_matrix(&checkpoint);
        let expected: Vec<f32> = ids
            .iter()
            .flat_map(|&id| matrix[id as usize * shape[1]..(id as usize + 1) * shape[1]].to_vec())
            .collect();
        assert_eq!(
            to_f32s(many.embed(&ids)),
            expected,
            "sharded lookup returns the file's rows"
        );
        assert_eq!(
            to_f32s(one.embed(&ids)),
            expected,
            "single-shard lookup returns the file's rows"
        );
        let hidden: Tensor<B, 2> = Tensor::from_data(
            TensorData::new(
                (0..3 * shape[1])
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                    .collect::<Vec<_>>(),
                [3, shape[1]],
            ),
            device,
        );
        // Identical dot products split over shards: f32 rounding only.
        assert_close_scaled(
            "logits from 100-row shards",
            &to_f32s(many.logits(hidden.clone())),
            &to_f32s(one.logits(hidden)),
            1e-6,
        );
    }
}

fn set_matrix(checkpoint: &Checkpoint) -> Vec<f32> {
    checkpoint
        .data("model.embed_tokens.weight")
        .unwrap()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap()
}

backend_tests!(
    decoder_matches_reference,
    cached_decoding_matches_full_forward,
    vocabulary_shards_match_one_matrix
);
