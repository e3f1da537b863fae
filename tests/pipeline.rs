//! The library facade on the demo models (flex, f32): events in stage order, cancellation
//! within one step with the pipeline still usable and deterministic, two threads on one
//! pipeline, requests refused before any model loads, the memory policy, and decode of
//! tokenize's grids equal to reconstruct.

use illume::backends::{BackendChoice, BackendKind};
use illume::pipeline::{
    Component, DecodeRequest, Decoder, DiffusionSettings, Event, Flow, GenerateRequest,
    MemoryPolicy, ModelSource, NoEvents, Pipeline, PipelineError, TokenKind, DEFAULT_MAX_PIXELS,
};

fn demo(policy: MemoryPolicy) -> Pipeline {
    Pipeline::builder()
        .backend(BackendChoice::Kind(BackendKind::Flex))
        .memory_policy(policy)
        .build()
        .expect("the demo pipeline starts on flex")
}

/// 64x64: the smallest image, 2x2 semantic + 4x4 pixel tokens.
fn small_request() -> GenerateRequest {
    GenerateRequest::new("a red circle above a blue square", 64, 64)
}

fn test_image() -> image::RgbImage {
    image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 4) as u8, ((x + y) * 3 % 256) as u8])
    })
}

#[test]
fn events_cover_every_stage_in_order() {
    let pipeline = demo(MemoryPolicy::OneLargeModel);
    let mut events = Vec::new();
    let images = pipeline
        .generate(&small_request(), &mut |e: &Event| {
            events.push(e.clone());
            Flow::Continue
        })
        .expect("generates");
    assert_eq!(images.len(), 1);
    let position = |what: &str, f: &dyn Fn(&Event) -> bool| {
        events
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} event in {events:#?}"))
    };
    let load_mllm = position(
        "load MLLM",
        &|e| matches!(e, Event::Loading { component: Component::Mllm, demo: true, bytes, .. } if *bytes > 0),
    );
    let loaded_mllm = position("MLLM loaded", &|e| {
        matches!(
            e,
            Event::Loaded {
                component: Component::Mllm,
                ..
            }
        )
    });
    let prefill = position("prefill", &|e| matches!(e, Event::Prefill));
    let first_token = position("token", &|e| matches!(e, Event::Token { .. }));
    let load_tokenizer = position("load DualViTok", &|e| {
        matches!(
            e,
            Event::Loading {
                component: Component::Tokenizer,
                ..
            }
        )
    });
    let decoding = position("decoding", &|e| matches!(e, Event::Decoding { .. }));
    assert!(load_mllm < loaded_mllm && loaded_mllm < prefill && prefill < first_token);
    assert!(first_token < load_tokenizer && load_tokenizer < decoding);

    // Image tokens carry their grid positions: every cell of both levels once.
    let mut cells: Vec<(usize, usize, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Token {
                kind:
                    TokenKind::Image {
                        level,
                        row,
                        col,
                        grid,
                    },
                ..
            } => {
                assert!(row < &grid[0] && col < &grid[1], "{e:?}");
                Some((*level, *row, *col))
            }
            _ => None,
        })
        .collect();
    cells.sort();
    let expected: Vec<(usize, usize, usize)> = (0..2)
        .flat_map(|r| (0..2).map(move |c| (0, r, c)))
        .chain((0..4).flat_map(|r| (0..4).map(move |c| (1, r, c))))
        .collect();
    assert_eq!(cells, expected, "2x2 semantic then 4x4 pixel cells");
    let metadata = &images[0].metadata;
    let value = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{key} in {metadata:?}"))
    };
    assert_eq!(value("illume.task"), "generate");
    assert_eq!(value("illume.prompt"), "a red circle above a blue square");
    assert_eq!(value("illume.decoding"), "sample, seed 42");
    assert_eq!(value("illume.decoder"), "pixel");
}

#[test]
fn cancel_stops_within_one_step_and_the_pipeline_stays_usable() {
    let pipeline = demo(MemoryPolicy::OneLargeModel);
    let request = small_request();
    let mut tokens_seen = 0;
    let result = pipeline.generate(&request, &mut |e: &Event| {
        if let Event::Token { .. } = e {
            tokens_seen += 1;
            if tokens_seen == 3 {
                return Flow::Cancel;
            }
        }
        Flow::Continue
    });
    assert!(
        matches!(result, Err(PipelineError::Cancelled)),
        "{result:?}"
    );
    assert_eq!(tokens_seen, 3, "no token after the one that cancelled");

    // The same pipeline serves the next request, and it is deterministic.
    let first = pipeline
        .generate(&request, &mut NoEvents)
        .expect("after a cancel");
    let second = pipeline.generate(&request, &mut NoEvents).expect("again");
    assert_eq!(first[0].tokens, second[0].tokens);
    assert_eq!(first[0].image, second[0].image);

    // Cancelling the diffusion decoder between steps (it renders trained sizes only:
    // 256x256 tokens at 512x512).
    let mut diffusion = GenerateRequest::new("a red circle above a blue square", 256, 256);
    let mut settings = DiffusionSettings::default();
    settings.options.steps = 3;
    diffusion.decoder = Decoder::Diffusion(settings);
    let mut steps = 0;
    let result = pipeline.generate(&diffusion, &mut |e: &Event| {
        if let Event::DiffusionStep { .. } = e {
            steps += 1;
            return Flow::Cancel;
        }
        Flow::Continue
    });
    assert!(
        matches!(result, Err(PipelineError::Cancelled)),
        "{result:?}"
    );
    assert_eq!(steps, 1);
}

#[test]
fn two_threads_share_one_pipeline() {
    let pipeline = demo(MemoryPolicy::OneLargeModel);
    let request = small_request();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| pipeline.generate(&request, &mut NoEvents));
        let b = s.spawn(|| pipeline.generate(&request, &mut NoEvents));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (a.expect("thread a"), b.expect("thread b"));
    assert_eq!(a[0].tokens, b[0].tokens, "same request, same seed");
}

#[test]
fn bad_requests_are_refused_before_any_model_loads() {
    // An MLLM folder that fails the moment anything reads it.
    let dir = std::env::temp_dir().join(format!("illume-pipeline-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{ not json").unwrap();
    let pipeline = Pipeline::builder()
        .backend(BackendChoice::Kind(BackendKind::Flex))
        .mllm(ModelSource::Path(dir.clone()))
        .tokenizer(ModelSource::Path(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dualvitok"),
        ))
        .build()
        .expect("paths resolve; nothing is read yet");
    let loads = std::cell::Cell::new(0);
    let mut count_loads = |e: &Event| {
        if let Event::Loading { .. } = e {
            loads.set(loads.get() + 1);
        }
        Flow::Continue
    };
    let cases: Vec<(GenerateRequest, &str)> = vec![
        (
            {
                let mut r = small_request();
                r.image.sampling.level0.temperature = f32::NAN;
                r
            },
            "sampling",
        ),
        (
            {
                let mut r = small_request();
                r.image.guidance = f32::NAN;
                r
            },
            "sampling",
        ),
        (GenerateRequest::new("x", 100, 64), "size"),
        (
            {
                // The diffusion decoder renders 2x = 128x128, not a trained size.
                let mut r = small_request();
                r.decoder = Decoder::Diffusion(DiffusionSettings::default());
                r
            },
            "size",
        ),
        (
            {
                let mut r = small_request();
                r.count = 0;
                r
            },
            "count",
        ),
        (
            {
                let mut r = small_request();
                let mut s = DiffusionSettings::default();
                s.options.steps = 0;
                r.decoder = Decoder::Diffusion(s);
                r
            },
            "diffusion.steps",
        ),
    ];
    for (request, field) in cases {
        match pipeline.generate(&request, &mut count_loads) {
            Err(PipelineError::InvalidRequest { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected an invalid request, got {other:?}"),
        }
    }
    assert_eq!(loads.get(), 0, "no model was opened");
    assert!(pipeline.loaded().is_empty());
    // A valid request does reach the broken folder: the refusals above came first.
    let err = pipeline
        .generate(&small_request(), &mut count_loads)
        .unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    assert_eq!(loads.get(), 1);
    std::fs::remove_dir_all(&dir).ok();

    // A real MLLM with the demo tokenizer is refused at build time, naming the field.
    let err = Pipeline::builder()
        .backend(BackendChoice::Kind(BackendKind::Flex))
        .mllm(ModelSource::Path(std::env::temp_dir()))
        .tokenizer(ModelSource::Demo)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("`tokenizer`"), "{err}");
}

#[test]
fn the_default_policy_never_holds_the_mllm_and_the_diffusion_decoder_together() {
    let mut request = GenerateRequest::new("a red circle above a blue square", 256, 256);
    let mut settings = DiffusionSettings::default();
    settings.options.steps = 1;
    request.decoder = Decoder::Diffusion(settings);

    let lean = demo(MemoryPolicy::OneLargeModel);
    let mut unloaded = Vec::new();
    let images = lean
        .generate(&request, &mut |e: &Event| {
            if let Event::Unloaded { component } = e {
                unloaded.push(*component);
            }
            Flow::Continue
        })
        .expect("generates with the diffusion decoder");
    // 256x256 tokens render at 2x.
    assert_eq!(images[0].image.dimensions(), (512, 512));
    assert_eq!(unloaded, vec![Component::Mllm]);
    assert_eq!(
        lean.loaded(),
        vec![Component::Tokenizer, Component::Diffusion]
    );

    let all = demo(MemoryPolicy::KeepAll);
    all.generate(&request, &mut NoEvents).expect("generates");
    assert_eq!(
        all.loaded(),
        vec![Component::Mllm, Component::Tokenizer, Component::Diffusion]
    );
}

#[test]
fn decode_of_tokenize_equals_reconstruct() {
    let pipeline = demo(MemoryPolicy::OneLargeModel);
    let image = test_image();
    let tokens = pipeline
        .tokenize(&image, DEFAULT_MAX_PIXELS, &mut NoEvents)
        .expect("tokenizes");
    let decoded = pipeline
        .decode(
            &DecodeRequest::new(tokens.clone(), Decoder::Pixel),
            &mut NoEvents,
        )
        .expect("decodes");
    let reconstructed = pipeline
        .reconstruct(&image, DEFAULT_MAX_PIXELS, &mut NoEvents)
        .expect("reconstructs");
    assert_eq!(reconstructed.tokens, tokens);
    assert_eq!(decoded.image, reconstructed.image);
    assert_eq!(decoded.image.dimensions(), (96, 64));
}

#[test]
fn a_conversation_with_two_images_and_a_text_turn_answers() {
    use illume::pipeline::{ChatRequest, Turn};
    let pipeline = demo(MemoryPolicy::OneLargeModel);
    let turns = vec![
        Turn::user("What differs between these?", 2),
        Turn::assistant("The colours."),
        Turn::user("Which is brighter?", 0),
    ];
    let mut request = ChatRequest::new(turns.clone(), vec![test_image(), test_image()]);
    request.text.max_new_tokens = 4;
    let mut encoded = 0;
    let answer = pipeline
        .chat(&request, &mut |e: &Event| {
            if let Event::Encoding { images } = e {
                encoded = *images;
            }
            Flow::Continue
        })
        .expect("answers");
    assert_eq!(encoded, 2);
    assert!(answer.tokens >= 1 && answer.tokens <= 4, "{answer:?}");

    // Images and image places must agree, before anything loads.
    let fresh = demo(MemoryPolicy::OneLargeModel);
    let wrong = ChatRequest::new(turns, vec![test_image()]);
    match fresh.chat(&wrong, &mut NoEvents) {
        Err(PipelineError::InvalidRequest { field, .. }) => assert_eq!(field, "images"),
        other => panic!("expected an invalid request, got {other:?}"),
    }
    assert!(fresh.loaded().is_empty());
}

/// The negative prompt replaces the unconditional prompt: with the prompt itself as the
/// negative, both CFG rows hold the same logits, so `g·(c − u) + u = c` exactly and greedy
/// decoding picks what it picks without CFG (sequential CFG: each row runs alone, as the
/// cfg-off run does, so the logits are bit-identical). Another negative prompt changes the
/// image. Validation refuses what would silently do nothing.
#[test]
fn negative_prompt_replaces_the_unconditional_stream() {
    use illume::mllm::{CfgMode, Decoding};
    let pipeline = demo(MemoryPolicy::OneLargeModel);
    let mut base = small_request();
    base.image.decoding = Decoding::Greedy;
    base.image.cfg_mode = CfgMode::Sequential;
    base.image.guidance = 3.0;
    let generate = |request: &GenerateRequest| {
        pipeline
            .generate(request, &mut NoEvents)
            .expect("generates")
            .remove(0)
    };
    let default_uncond = generate(&base);

    let mut same_as_prompt = base.clone();
    same_as_prompt.image.negative_prompt = Some(base.prompt.clone());
    let mut no_cfg = base.clone();
    no_cfg.image.guidance = 1.0;
    let cancelled_out = generate(&same_as_prompt);
    assert_eq!(cancelled_out.tokens, generate(&no_cfg).tokens);
    assert!(cancelled_out
        .metadata
        .contains(&("illume.negative_prompt".into(), base.prompt.clone())));

    let mut other = base.clone();
    other.image.negative_prompt = Some("green triangles".into());
    let steered = generate(&other);
    assert_ne!(steered.tokens, default_uncond.tokens);
    assert_ne!(steered.tokens, cancelled_out.tokens);

    // Without CFG there is no unconditional stream to replace; editing keeps the official one.
    let mut silent = base.clone();
    silent.image.guidance = 1.0;
    silent.image.negative_prompt = Some("anything".into());
    let refused = pipeline.generate(&silent, &mut NoEvents).map(|_| ());
    assert_refused_field(refused, "negative_prompt");
    let mut edit = illume::pipeline::EditRequest::new(test_image(), "make it blue");
    edit.sampling.negative_prompt = Some("red".into());
    assert_refused_field(
        pipeline.edit(&edit, &mut NoEvents).map(|_| ()),
        "negative_prompt",
    );
}

fn assert_refused_field(result: Result<(), PipelineError>, expected: &str) {
    match result {
        Err(PipelineError::InvalidRequest { field, .. }) if field == expected => {}
        other => panic!("expected `{expected}` refused, got {other:?}"),
    }
}

/// Previews arrive as each grid row completes (here without throttling), each of the
/// output's size, and the last one (every row of both grids) is the final image.
#[test]
fn previews_show_the_grid_forming_and_end_at_the_result() {
    let pipeline = demo(MemoryPolicy::OneLargeModel);
    let mut request = small_request();
    request.preview_every = Some(std::time::Duration::ZERO);
    let mut previews = Vec::new();
    let images = pipeline
        .generate(&request, &mut |e: &Event| {
            if let Event::Preview { picture, rows, .. } = e {
                previews.push((picture.clone(), *rows));
            }
            Flow::Continue
        })
        .expect("generates with previews");
    // 64x64: 2 semantic rows, then 4 pixel rows.
    let rows: Vec<[usize; 2]> = previews.iter().map(|(_, r)| *r).collect();
    assert_eq!(rows, vec![[1, 0], [2, 0], [2, 1], [2, 2], [2, 3], [2, 4]]);
    assert!(previews.iter().all(|(p, _)| p.dimensions() == (64, 64)));
    assert_eq!(previews.last().unwrap().0, images[0].image);

    // Throttled to an hour: only the first row's preview.
    request.preview_every = Some(std::time::Duration::from_secs(3600));
    let mut count = 0;
    pipeline
        .generate(&request, &mut |e: &Event| {
            count += matches!(e, Event::Preview { .. }) as usize;
            Flow::Continue
        })
        .expect("generates");
    assert_eq!(count, 1);
}

/// With `latent_preview`, every diffusion step carries a picture of the latents at 1/8 the
/// output size; without it, none.
#[test]
fn diffusion_steps_carry_latent_previews_when_asked() {
    let pipeline = demo(MemoryPolicy::OneLargeModel);
    let tokens = pipeline
        .tokenize(&test_image(), DEFAULT_MAX_PIXELS, &mut NoEvents)
        .expect("tokenizes");
    for asked in [true, false] {
        let mut settings = DiffusionSettings::default();
        settings.options.steps = 2;
        settings.options.size = Some(illume::diffusion::ImageSize::new(512, 512));
        settings.latent_preview = asked;
        let mut sizes = Vec::new();
        let image = pipeline
            .decode(
                &DecodeRequest::new(tokens.clone(), Decoder::Diffusion(settings)),
                &mut |e: &Event| {
                    if let Event::DiffusionStep { preview, .. } = e {
                        sizes.push(preview.as_ref().map(|p| p.dimensions()));
                    }
                    Flow::Continue
                },
            )
            .expect("decodes");
        assert_eq!(image.image.dimensions(), (512, 512));
        let expected = if asked { Some((64, 64)) } else { None };
        assert_eq!(sizes, vec![expected; 2], "latent_preview {asked}");
    }
}

/// Understanding with two images is the one-turn conversation holding both.
#[test]
fn understanding_several_images_is_a_one_turn_conversation() {
    use illume::pipeline::{ChatRequest, Turn, UnderstandRequest};
    let pipeline = demo(MemoryPolicy::OneLargeModel);
    let images = vec![test_image(), image::imageops::flip_vertical(&test_image())];
    let mut understand = UnderstandRequest::with_images(images.clone(), "Which is brighter?");
    understand.text.max_new_tokens = 6;
    let mut chat = ChatRequest::new(vec![Turn::user("Which is brighter?", 2)], images);
    chat.text.max_new_tokens = 6;
    let a = pipeline
        .understand(&understand, &mut NoEvents)
        .expect("understands");
    let b = pipeline.chat(&chat, &mut NoEvents).expect("chats");
    assert_eq!(a.text, b.text);
    assert_eq!(a.tokens, b.tokens);
    let empty = UnderstandRequest::with_images(Vec::new(), "what?");
    assert!(matches!(
        pipeline.understand(&empty, &mut NoEvents),
        Err(PipelineError::InvalidRequest {
            field: "images",
            ..
        })
    ));
}
