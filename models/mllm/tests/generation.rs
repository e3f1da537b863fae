//! Generation against the official fixture: the processor state machine replayed on the
//! recorded logits, then end to end on every backend — greedy understanding ids, the
//! text-to-image sequence of both official processor chains with their raw, unconditional
//! and processed scores, and batched CFG against the sequential form.

use crate::common;

use burn::tensor::Tensor;
use common::{assert_scores_match, layout, load_lm, row};
use illume_backends::IllumeBackend;
use illume_mllm::generate::{Observer, StepScores};
use illume_mllm::{
    generate, CfgMode, Chain, Decoding, GenerateOptions, ImageGrid, LevelSampling, LogitsProcessor,
    MllmConfig, Prompt, PromptToken, SamplingParams, TextTokenizer,
};
use illume_test_harness::{
    announce_case, backend_tests, fixture_sets, reduction_noise_floor, FixtureSet, NOISE_MARGIN,
};

fn params(config: &serde_json::Value, prefix: &str) -> SamplingParams {
    let key = |k: &str| format!("{prefix}{k}");
    SamplingParams::new(
        config[key("temperature")].as_f64().unwrap() as f32,
        config[key("top_k")].as_u64().unwrap() as usize,
        config[key("top_p")].as_f64().unwrap() as f32,
    )
}

/// `ILLUME/app.py`'s chat processor: guidance 1, no grid, level values 1.0/2048/6144/1.0,
/// default values from the understanding `InferenceConfig`.
fn understanding_processor(set: &FixtureSet) -> LogitsProcessor {
    let config = &set.meta()["meta"]["inference_config_understanding"];
    let sampling = LevelSampling {
        text: params(config, ""),
        level0: SamplingParams::new(1.0, 2048, 1.0),
        level1: SamplingParams::new(1.0, 2048 * 3, 1.0),
    };
    LogitsProcessor::new(
        Chain::Eval {
            force_image_start: false,
        },
        layout(set),
        None,
        1.0,
        sampling,
    )
}

fn t2i_grid(set: &FixtureSet) -> ImageGrid {
    let meta = set.meta();
    let t2i = &meta["meta"]["t2i"];
    let hw = |v: &serde_json::Value| {
        [
            v[0].as_u64().unwrap() as usize,
            v[1].as_u64().unwrap() as usize,
        ]
    };
    let [h, w] = hw(&t2i["resolution_hw"]);
    let grid = ImageGrid::for_size(h, w);
    assert_eq!(
        grid.semantic,
        hw(&t2i["grid_semantic_hw"]),
        "semantic grid of {h}x{w}"
    );
    assert_eq!(
        grid.pixel,
        hw(&t2i["grid_pixel_hw"]),
        "pixel grid of {h}x{w}"
    );
    assert_eq!(
        grid.max_new_tokens(),
        t2i["max_new_tokens"].as_u64().unwrap() as usize
    );
    grid
}

fn t2i_sampling(set: &FixtureSet) -> (f32, LevelSampling) {
    let config = &set.meta()["meta"]["inference_config_t2i"];
    let sampling = LevelSampling {
        text: params(config, ""),
        level0: params(config, "image_semantic_"),
        level1: params(config, "image_pixel_"),
    };
    (config["llm_cfg_scale"].as_f64().unwrap() as f32, sampling)
}

/// `generation_eval`'s `InterleavedLogitsProcessor` for the fixture's T2I run.
fn t2i_eval_processor(set: &FixtureSet) -> LogitsProcessor {
    let (guidance, sampling) = t2i_sampling(set);
    LogitsProcessor::new(
        Chain::Eval {
            force_image_start: false,
        },
        layout(set),
        Some(t2i_grid(set)),
        guidance,
        sampling,
    )
}

/// `ILLUME/app.py`'s chain: `DynamicSamplingProcessor(default 0.7/20/0.8, both levels
/// from the UI's temperature/top-k/top-p, level-1 top-k ×3)`; the fixture's UI values are
/// the T2I `InferenceConfig`'s global ones.
fn t2i_app_processor(set: &FixtureSet) -> LogitsProcessor {
    let (guidance, _) = t2i_sampling(set);
    let ui = params(&set.meta()["meta"]["inference_config_t2i"], "");
    let sampling = LevelSampling::with_semantic(SamplingParams::new(0.7, 20, 0.8), ui);
    LogitsProcessor::new(
        Chain::App,
        layout(set),
        Some(t2i_grid(set)),
        guidance,
        sampling,
    )
}

fn ids_u32(values: Vec<i64>) -> Vec<u32> {
    values.into_iter().map(|v| v as u32).collect()
}

/// The processor alone, fed the official tokens and logits, reproduces the official
/// processed scores at every recorded step and chooses the official token.
#[test]
fn processor_replays_the_official_scores() {
    let mut worst = 0.0f32;
    for set in fixture_sets("mllm") {
        let vocab = MllmConfig::from_dir(&set.dir).unwrap().decoder.vocab_size;

        announce_case(&set, "und: text-mode processing of every step");
        let mut processor = understanding_processor(&set);
        let generated = ids_u32(set.i64s("und.generated_ids"));
        let (raw, processed) = (
            set.f32s("und.step_raw_logits"),
            set.f32s("und.step_processed_scores"),
        );
        for (step, &token) in generated.iter().enumerate() {
            let plan = processor.plan(step.checked_sub(1).map(|s| generated[s]));
            let mut scores = row(&raw, vocab, step).to_vec();
            processor.process(&plan, &mut scores, None);
            // Same f32 operations on the same logits: only the -inf pattern and rounding.
            worst = worst.max(assert_scores_match(
                &format!("und step {step}"),
                &scores,
                row(&processed, vocab, step),
                1e-6,
            ));
            assert_eq!(
                illume_mllm::sampling::argmax(&scores),
                token,
                "und step {step}"
            );
        }

        announce_case(
            &set,
            "t2i: eval chain at the recorded steps (CFG, masks, levels)",
        );
        let mut processor = t2i_eval_processor(&set);
        let generated = ids_u32(set.i64s("t2i.generated_ids"));
        let recorded: Vec<usize> = set
            .i64s("t2i.recorded_steps")
            .into_iter()
            .map(|s| s as usize)
            .collect();
        let raw = set.f32s("t2i.step_raw_logits");
        let uncond = set.f32s("t2i.step_uncond_logits");
        let processed = set.f32s("t2i.step_processed_scores");
        for (step, &token) in generated.iter().enumerate() {
            let plan = processor.plan(step.checked_sub(1).map(|s| generated[s]));
            if let Some(forced) = plan.forced() {
                assert_eq!(forced, token, "step {step} is forced to another token");
            }
            let Some(j) = recorded.iter().position(|&r| r == step) else {
                continue;
            };
            let uncond_row = row(&uncond, vocab, j);
            assert_eq!(
                plan.uses_uncond(),
                !uncond_row[0].is_nan(),
                "step {step}: CFG active here and in the reference must agree"
            );
            let mut scores = row(&raw, vocab, j).to_vec();
            processor.process(&plan, &mut scores, plan.uses_uncond().then_some(uncond_row));
            // log-softmax and the guidance mix in f32 (torch's reduction order differs).
            worst = worst.max(assert_scores_match(
                &format!("t2i step {step}"),
                &scores,
                row(&processed, vocab, j),
                1e-5,
            ));
            assert_eq!(
                illume_mllm::sampling::argmax(&scores),
                token,
                "t2i step {step}"
            );
        }
    }
    println!("    processor_replays_the_official_scores: largest |diff| / max(1, max|reference|) = {worst:.2e}");
}

/// Records the scores of chosen steps.
struct Recorder {
    steps: Vec<usize>,
    raw: Vec<Vec<f32>>,
    uncond: Vec<Option<Vec<f32>>>,
    processed: Vec<Vec<f32>>,
}

impl Recorder {
    fn new(steps: Vec<usize>) -> Self {
        Self {
            steps,
            raw: Vec::new(),
            uncond: Vec::new(),
            processed: Vec::new(),
        }
    }
}

impl Observer for Recorder {
    fn records_scores(&self) -> bool {
        true
    }

    fn scores(&mut self, s: &StepScores<'_>) {
        if self.steps.contains(&s.step) {
            self.raw.push(s.raw.to_vec());
            self.uncond.push(s.uncond.map(<[f32]>::to_vec));
            self.processed.push(s.processed.to_vec());
        }
    }
}

fn greedy(max_new_tokens: usize, stop_tokens: Vec<u32>, cfg_mode: CfgMode) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        decoding: Decoding::Greedy,
        stop_tokens,
        cfg_mode,
        ..GenerateOptions::default()
    }
}

/// What the official `generate` stops on: generation_config's eos (the chat code passes
/// `<|im_end|>` too).
fn stop_tokens(set: &FixtureSet) -> Vec<u32> {
    let mut stop = illume_mllm::GenerationConfig::from_dir(&set.dir)
        .unwrap()
        .eos_token_ids;
    stop.push(layout(set).end_of_text);
    stop
}

fn text_embeds<B: IllumeBackend>(
    lm: &illume_mllm::LanguageModel<B>,
    tokenizer: &TextTokenizer,
    prompt: &Prompt,
) -> Tensor<B, 3> {
    let ids: Vec<u32> = tokenizer
        .encode(prompt)
        .unwrap()
        .into_iter()
        .map(|t| match t {
            PromptToken::Text(id) => id,
            PromptToken::Image => panic!("a text-only prompt"),
        })
        .collect();
    lm.embed(&ids).unwrap()
}

fn t2i_prompts<B: IllumeBackend>(
    set: &FixtureSet,
    lm: &illume_mllm::LanguageModel<B>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let meta = set.meta();
    let t2i = &meta["meta"]["t2i"];
    let (h, w) = (
        t2i["resolution_hw"][0].as_u64().unwrap() as usize,
        t2i["resolution_hw"][1].as_u64().unwrap() as usize,
    );
    let tokenizer = TextTokenizer::from_dir(&set.dir).unwrap();
    let content = meta["spec"]["content"].as_str().unwrap();
    (
        text_embeds(lm, &tokenizer, &Prompt::text_to_image(content, h, w)),
        text_embeds(lm, &tokenizer, &Prompt::text_to_image_unconditional(h, w)),
    )
}

fn understanding_greedy_ids<B: IllumeBackend>(device: &B::Device) {
    let mut worst = 0.0f32;
    for set in fixture_sets("mllm") {
        announce_case(
            &set,
            "und: greedy generation from the spliced inputs_embeds",
        );
        let lm = load_lm::<B>(&set, device);
        let vocab = lm.config.vocab_size;
        let expected = ids_u32(set.i64s("und.generated_ids"));
        let steps: Vec<usize> = (0..expected.len()).collect();
        let mut recorder = Recorder::new(steps);
        let mut processor = understanding_processor(&set);
        let ids = generate(
            &lm,
            set.tensor("und.inputs_embeds", device),
            None,
            &mut processor,
            &greedy(
                set.meta()["spec"]["n_new_und"].as_u64().unwrap() as usize,
                stop_tokens(&set),
                CfgMode::Batched,
            ),
            &mut recorder,
        )
        .unwrap();
        assert_eq!(ids, expected, "greedy understanding ids");
        let (raw, processed) = (
            set.f32s("und.step_raw_logits"),
            set.f32s("und.step_processed_scores"),
        );
        for step in 0..ids.len() {
            // README: ~1e-4 on logits.
            worst = worst.max(assert_scores_match(
                &format!("und raw logits step {step}"),
                &recorder.raw[step],
                row(&raw, vocab, step),
                1e-4,
            ));
            worst = worst.max(assert_scores_match(
                &format!("und processed step {step}"),
                &recorder.processed[step],
                row(&processed, vocab, step),
                1e-4,
            ));
        }
    }
    println!("    understanding_greedy_ids: largest |diff| / max(1, max|reference|) = {worst:.2e}");
}

fn text_to_image_eval_chain<B: IllumeBackend>(device: &B::Device) {
    let mut worst = 0.0f32;
    for set in fixture_sets("mllm") {
        announce_case(
            &set,
            "t2i: eval chain, batched CFG, greedy, every recorded step",
        );
        let lm = load_lm::<B>(&set, device);
        let vocab = lm.config.vocab_size;
        let (prompt, uncond) = t2i_prompts(&set, &lm);
        let recorded: Vec<usize> = set
            .i64s("t2i.recorded_steps")
            .into_iter()
            .map(|s| s as usize)
            .collect();
        let mut recorder = Recorder::new(recorded.clone());
        let mut processor = t2i_eval_processor(&set);
        let max_new = t2i_grid(&set).max_new_tokens();
        let ids = generate(
            &lm,
            prompt,
            Some(uncond),
            &mut processor,
            &greedy(max_new, stop_tokens(&set), CfgMode::Batched),
            &mut recorder,
        )
        .unwrap();
        let expected = ids_u32(set.i64s("t2i.generated_ids"));
        assert_eq!(ids.len(), expected.len(), "number of generated tokens");
        if let Some(step) = (0..ids.len()).find(|&i| ids[i] != expected[i]) {
            panic!(
                "t2i: first different token at step {step}: {} vs {}",
                ids[step], expected[step]
            );
        }
        let (raw, uncond, processed) = (
            set.f32s("t2i.step_raw_logits"),
            set.f32s("t2i.step_uncond_logits"),
            set.f32s("t2i.step_processed_scores"),
        );
        for (j, step) in recorded.iter().enumerate() {
            // README: ~1e-4 on step logits and processed scores (f32 noise floor ~5e-5).
            worst = worst.max(assert_scores_match(
                &format!("t2i raw step {step}"),
                &recorder.raw[j],
                row(&raw, vocab, j),
                1e-4,
            ));
            match &recorder.uncond[j] {
                Some(u) => {
                    worst = worst.max(assert_scores_match(
                        &format!("t2i uncond step {step}"),
                        u,
                        row(&uncond, vocab, j),
                        1e-4,
                    ));
                }
                None => assert!(
                    row(&uncond, vocab, j)[0].is_nan(),
                    "step {step}: the reference used CFG here"
                ),
            }
            worst = worst.max(assert_scores_match(
                &format!("t2i processed step {step}"),
                &recorder.processed[j],
                row(&processed, vocab, j),
                1e-4,
            ));
        }
    }
    println!("    text_to_image_eval_chain: largest |diff| / max(1, max|reference|) = {worst:.2e}");
}

fn text_to_image_app_chain<B: IllumeBackend>(device: &B::Device) {
    let mut worst = 0.0f32;
    for set in fixture_sets("mllm") {
        announce_case(
            &set,
            "t2i_app: app.py chain (CFG every step, forced structure), greedy",
        );
        let lm = load_lm::<B>(&set, device);
        let vocab = lm.config.vocab_size;
        let (prompt, uncond) = t2i_prompts(&set, &lm);
        let recorded: Vec<usize> = set
            .i64s("t2i_app.recorded_steps")
            .into_iter()
            .map(|s| s as usize)
            .collect();
        let mut recorder = Recorder::new(recorded.clone());
        let mut processor = t2i_app_processor(&set);
        let max_new = t2i_grid(&set).max_new_tokens();
        let ids = generate(
            &lm,
            prompt,
            Some(uncond),
            &mut processor,
            &greedy(max_new, stop_tokens(&set), CfgMode::Batched),
            &mut recorder,
        )
        .unwrap();
        let expected = ids_u32(set.i64s("t2i_app.generated_ids"));
        if let Some(step) = (0..ids.len().min(expected.len())).find(|&i| ids[i] != expected[i]) {
            panic!(
                "t2i_app: first different token at step {step}: {} vs {}",
                ids[step], expected[step]
            );
        }
        assert_eq!(ids.len(), expected.len(), "number of generated tokens");
        let processed = set.f32s("t2i_app.step_processed_scores");
        for (j, step) in recorded.iter().enumerate() {
            // README: ~1e-4 on processed scores.
            worst = worst.max(assert_scores_match(
                &format!("t2i_app processed step {step}"),
                &recorder.processed[j],
                row(&processed, vocab, j),
                1e-4,
            ));
        }
    }
    println!("    text_to_image_app_chain: largest |diff| / max(1, max|reference|) = {worst:.2e}");
}

/// One batched forward for the conditional and unconditional rows gives the processed
/// scores of the official two sequential calls, at every step.
fn batched_cfg_equals_sequential<B: IllumeBackend>(device: &B::Device) {
    let mut worst = 0.0f32;
    for set in fixture_sets("mllm") {
        announce_case(
            &set,
            "batched vs sequential CFG (first 48 steps of the eval chain)",
        );
        let lm = load_lm::<B>(&set, device);
        let steps = 48;
        let run = |mode| {
            let (prompt, uncond) = t2i_prompts(&set, &lm);
            let mut recorder = Recorder::new((0..steps).collect());
            let mut processor = t2i_eval_processor(&set);
            let ids = generate(
                &lm,
                prompt,
                Some(uncond),
                &mut processor,
                &greedy(steps, vec![], mode),
                &mut recorder,
            )
            .unwrap();
            (ids, recorder)
        };
        let (batched_ids, batched) = run(CfgMode::Batched);
        let (sequential_ids, sequential) = run(CfgMode::Sequential);
        assert_eq!(batched_ids, sequential_ids);
        assert!(
            batched.uncond.iter().filter(|u| u.is_some()).count() > 40,
            "CFG was active"
        );
        for step in 0..steps {
            // The same rows through the same weights, batched or not: reduction-order noise
            // only, NOISE_MARGIN x the backend's floor (CPU 1e-5, GPU 1e-4).
            worst = worst.max(assert_scores_match(
                &format!("step {step}"),
                &batched.processed[step],
                &sequential.processed[step],
                NOISE_MARGIN * reduction_noise_floor::<B>(),
            ));
        }
    }
    println!(
        "    batched_cfg_equals_sequential: largest |diff| / max(1, max|reference|) = {worst:.2e}"
    );
}

backend_tests!(
    understanding_greedy_ids,
    text_to_image_eval_chain,
    text_to_image_app_chain,
    batched_cfg_equals_sequential
);
