//! The `illume` binary end to end: what users see on good and bad input.

use std::process::{Command, Output};

use illume_test_harness::fixture_sets;

fn illume(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_illume"))
        .args(args)
        .env_remove("ILLUME_BACKEND")
        .output()
        .expect("the illume binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn inspect_names_each_official_checkpoint_kind() {
    let cases = [
        ("dualvitok", "pytorch_model.bin", "DualViTok"),
        ("dualvitok", "model.safetensors", "DualViTok"),
        ("mllm", "", "ILLUME+ MLLM"),
        ("sdxl_decoder", "", "SDXL diffusion decoder"),
    ];
    for (component, file, kind) in cases {
        for set in fixture_sets(component) {
            let path = set.dir.join(file);
            let out = illume(&["inspect", path.to_str().unwrap()]);
            let stdout = text(&out.stdout);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                text(&out.stderr)
            );
            assert!(stdout.contains(&format!("kind:       {kind}")), "{stdout}");
            assert!(stdout.contains("tensors:"), "{stdout}");
            assert!(
                stdout.contains("parameters by top-level prefix:"),
                "{stdout}"
            );
        }
    }
}

#[test]
fn inspect_of_a_missing_path_is_an_error_not_a_panic() {
    let out = illume(&["inspect", "/nonexistent/checkpoint.bin"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("/nonexistent/checkpoint.bin"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_repo_id_says_where_it_looked() {
    let out = illume(&["inspect", "Nobody/no-such-model"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Hugging Face cache"), "{stderr}");
    assert!(stderr.contains("huggingface-cli download"), "{stderr}");
}

#[test]
fn unknown_backend_lists_the_choices() {
    let out = illume(&["--backend", "tpu", "bench"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ndarray, wgpu, cuda"), "{stderr}");
}

#[test]
fn precision_the_device_lacks_is_a_clear_error() {
    let out = illume(&["--precision", "f8", "bench"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("auto, f32, f16, bf16"), "{stderr}");

    let out = illume(&[
        "--precision",
        "f16",
        "bench",
        "--backends",
        "ndarray",
        "--quick",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot compute in f16") && stderr.contains("--precision auto"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn backend_not_compiled_in_names_the_feature() {
    let out = illume(&["bench", "--backends", "cuda", "--quick"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--features cuda"), "{stderr}");
}

#[test]
fn bench_prints_a_table_per_backend() {
    let dir = scratch("bench-ops");
    let json = dir.join("rows.jsonl");
    // --item is case-insensitive, and skips the rows it does not match.
    let stdout = run_ok(&[
        "bench",
        "--backends",
        "ndarray",
        "--group",
        "ops",
        "--item",
        "MATMUL",
        "--quick",
        "--jsonl",
        json.to_str().unwrap(),
    ]);
    assert!(stdout.contains("backend: ndarray (f32)"), "{stdout}");
    assert!(stdout.contains("matmul f32"), "{stdout}");
    assert!(stdout.contains("GFLOP/s"), "{stdout}");
    assert!(!stdout.contains("conv2d"), "{stdout}");
    // One JSON object per printed row, with the documented schema.
    let printed = stdout.lines().filter(|l| l.starts_with("ops ")).count();
    let lines = std::fs::read_to_string(&json).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(printed > 0 && records.len() == printed, "{stdout}\n{lines}");
    for record in &records {
        let mut keys: Vec<&str> = record
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        let mut expected = [
            "group",
            "item",
            "shape",
            "backend",
            "precision",
            "seconds",
            "throughput",
            "unit",
            "peak_rss_bytes",
            "note",
            "official_seconds",
            "ratio",
        ];
        expected.sort();
        assert_eq!(keys, expected, "{record}");
        assert_eq!(record["group"], "ops", "{record}");
        assert_eq!(record["item"], "matmul f32", "{record}");
        assert_eq!(record["backend"], "ndarray", "{record}");
        assert_eq!(record["precision"], "f32", "{record}");
        assert_eq!(record["unit"], "GFLOP/s", "{record}");
        assert!(record["seconds"].as_f64().unwrap() > 0.0, "{record}");
        assert!(record["throughput"].as_f64().unwrap() > 0.0, "{record}");
        assert!(record["official_seconds"].is_null() && record["ratio"].is_null());
        if cfg!(target_os = "linux") {
            assert!(record["peak_rss_bytes"].as_u64().unwrap() > 0, "{record}");
        }
    }

    // An --item that matches nothing lists the names, before measuring anything.
    let out = illume(&[
        "bench",
        "--backends",
        "ndarray",
        "--group",
        "ops",
        "--item",
        "no-such-row",
        "--quick",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for needle in ["--item", "no-such-row", "matmul f32", "conv2d 3x3 f32"] {
        assert!(
            stderr.contains(needle),
            "`{needle}` missing from:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!text(&out.stdout).contains("backend: ndarray"));

    // An unwritable --jsonl fails before measuring, naming the flag and the path.
    let bad = dir.join("no-such-dir").join("rows.jsonl");
    let out = illume(&[
        "bench",
        "--backends",
        "ndarray",
        "--group",
        "ops",
        "--quick",
        "--jsonl",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--jsonl") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("backend: ndarray"));

    // The global --json: the rows as JSON lines on stdout, nothing else there.
    let stdout = run_ok(&[
        "bench",
        "--backends",
        "ndarray",
        "--group",
        "ops",
        "--item",
        "matmul",
        "--quick",
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["item"] == "matmul f32"),
        "{stdout}"
    );
}

/// A fresh scratch folder for one test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("illume-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 96×64 test picture (gradients, so every code path sees varied pixels).
fn test_image(dir: &std::path::Path) -> std::path::PathBuf {
    let image = image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 4) as u8, ((x + y) * 3 % 256) as u8])
    });
    let path = dir.join("input.png");
    image.save(&path).unwrap();
    path
}

fn run_ok(args: &[&str]) -> String {
    let out = illume(args);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "illume {args:?} failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    text(&out.stdout)
}

fn png_size(path: &std::path::Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The README's main job: text-to-image on the embedded demo model, with the demo notice.
#[test]
fn generate_on_the_demo_model_writes_the_requested_size() {
    let dir = scratch("generate");
    let output = dir.join("out.png");
    let out = illume(&[
        "generate",
        "a red circle above a blue square",
        "--size",
        "256x256",
        "-o",
        output.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("DEMO model"), "{stderr}");
    assert!(stderr.contains("tokens/s"), "{stderr}");
    assert_eq!(png_size(&output), (256, 256));
}

#[test]
fn tokenize_json_gives_both_grids() {
    let dir = scratch("tokenize");
    let image = test_image(&dir);
    let stdout = run_ok(&["tokenize", image.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("tokenize --json is JSON");
    for level in ["semantic", "pixel"] {
        let shape: Vec<u64> = json[level]["shape"]
            .as_array()
            .unwrap_or_else(|| panic!("{level}.shape in {stdout}"))
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let indices = json[level]["indices"].as_array().unwrap();
        assert_eq!(shape.len(), 2, "{level}");
        assert_eq!(indices.len() as u64, shape[0] * shape[1], "{level}");
    }
    // The pixel branch downsamples 16x: a 96×64 (W×H) image gives a 4×6 (h×w) grid.
    let pixel = &json["pixel"]["shape"];
    assert_eq!((pixel[0].as_u64(), pixel[1].as_u64()), (Some(4), Some(6)));
}

#[test]
fn reconstruct_understand_and_edit_run_on_the_demo_models() {
    let dir = scratch("verbs");
    let image = test_image(&dir);
    let image = image.to_str().unwrap();

    let reconstructed = dir.join("reconstructed.png");
    run_ok(&["reconstruct", image, "-o", reconstructed.to_str().unwrap()]);
    assert_eq!(png_size(&reconstructed), (96, 64));

    let out = illume(&["understand", image, "What is in the picture?"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("tokens/s"), "{stderr}");

    let edited = dir.join("edited.png");
    run_ok(&["edit", image, "make it red", "-o", edited.to_str().unwrap()]);
    assert_eq!(
        png_size(&edited),
        (96, 64),
        "edits come back at the input size"
    );
}

#[test]
fn upscale_renders_twice_the_token_size_and_records_parameters() {
    let dir = scratch("upscale");
    let image = test_image(&dir);
    let output = dir.join("up.png");
    let stdout = run_ok(&[
        "upscale",
        image.to_str().unwrap(),
        "--size",
        "512x512",
        "--steps",
        "1",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(stdout.contains("tokenized at 256x256"), "{stdout}");
    assert_eq!(png_size(&output), (512, 512));
    let bytes = std::fs::read(&output).unwrap();
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has("illume.steps"), "the PNG records its parameters");
    assert!(has("illume.scheduler"), "the PNG records its parameters");
}

#[test]
fn bad_images_and_sizes_are_clear_errors() {
    let dir = scratch("bad");
    let corrupt = dir.join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really a png").unwrap();
    let out_png = dir.join("never.png");
    let out = out_png.to_str().unwrap();
    let image = test_image(&dir);
    let image = image.to_str().unwrap();
    let truncated = dir.join("truncated.jpg");
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
        .encode_image(&image::RgbImage::from_pixel(
            64,
            64,
            image::Rgb([200, 10, 10]),
        ))
        .unwrap();
    std::fs::write(&truncated, &jpeg[..jpeg.len() / 2]).unwrap();
    let gif_out = dir.join("out.gif");
    let missing_dir = dir.join("no-such-dir").join("out.png");
    let not_a_decoder = dir.join("empty-decoder");
    std::fs::create_dir_all(&not_a_decoder).unwrap();
    // Numeric flags that used to turn guidance off, or produce white images, silently;
    // outputs that used to be checked only after the whole generation.
    let numeric_and_path_cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["generate", "x", "--cfg", "NaN", "-o", out], "--cfg"),
        (
            vec!["generate", "x", "--temperature", "inf", "-o", out],
            "--temperature",
        ),
        (vec!["generate", "x", "--top-p", "0", "-o", out], "--top-p"),
        (
            vec!["generate", "x", "--size", "513x511", "-o", out],
            "513x511: width",
        ),
        (
            vec!["upscale", image, "--steps", "1000000000", "-o", out],
            "--steps",
        ),
        (
            vec!["upscale", image, "--diffusion-cfg", "0", "-o", out],
            "--diffusion-cfg",
        ),
        (
            vec!["upscale", image, "--diffusion-cfg", "inf", "-o", out],
            "--diffusion-cfg",
        ),
        (
            vec!["understand", image, "q", "--temperature", "-1"],
            "--temperature",
        ),
        (
            vec!["generate", "x", "-o", gif_out.to_str().unwrap()],
            ".webp",
        ),
        (
            vec![
                "generate",
                "x",
                "--negative-prompt",
                "y",
                "--cfg",
                "1",
                "-o",
                out,
            ],
            "negative_prompt",
        ),
        (
            vec!["reconstruct", image, "-o", missing_dir.to_str().unwrap()],
            "no-such-dir",
        ),
        (vec!["tokenize", truncated.to_str().unwrap()], "truncated"),
        (
            vec![
                "generate",
                "x",
                "--diffusion",
                not_a_decoder.to_str().unwrap(),
                "-o",
                out,
            ],
            "model_index.json",
        ),
    ];
    for (args, needle) in &numeric_and_path_cases {
        let run = illume(args);
        let stderr = text(&run.stderr);
        assert!(!run.status.success(), "illume {args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(!gif_out.exists(), "nothing is written on error");
    let cases: [(&[&str], &str); 4] = [
        (&["tokenize", corrupt.to_str().unwrap()], "corrupt.png"),
        (
            &[
                "generate",
                "x",
                "--size",
                "100000x100000",
                "-o",
                out_png.to_str().unwrap(),
            ],
            "100000",
        ),
        (
            &[
                "generate",
                "x",
                "--size",
                "big",
                "-o",
                out_png.to_str().unwrap(),
            ],
            "WxH",
        ),
        (
            &[
                "upscale",
                corrupt.to_str().unwrap(),
                "--size",
                "640x480",
                "-o",
                out_png.to_str().unwrap(),
            ],
            "640x480",
        ),
    ];
    for (args, needle) in cases {
        let out = illume(args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "illume {args:?} should fail");
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(!out_png.exists(), "nothing is written on error");
}

/// Every model benchmark group runs to its table (tiny shapes; a smoke run, not a measurement).
#[test]
fn bench_model_groups_run_quick() {
    let json = scratch("bench-models").join("rows.jsonl");
    let stdout = run_ok(&[
        "bench",
        "--backends",
        "ndarray",
        "--group",
        "dualvitok",
        "--group",
        "mllm",
        "--group",
        "diffusion",
        "--quick",
        "--jsonl",
        json.to_str().unwrap(),
    ]);
    for needle in [
        "encode",
        "UNet step",
        "VAE decode",
        "decode",
        "sequential/batched",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` missing from:\n{stdout}"
        );
    }
    // Every printed row is also a JSON line, in the same order.
    let printed: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            ["dualvitok ", "mllm ", "diffusion "]
                .iter()
                .any(|g| l.starts_with(g))
        })
        .collect();
    let lines = std::fs::read_to_string(&json).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), printed.len(), "{stdout}\n{lines}");
    for (record, row) in records.iter().zip(&printed) {
        let item = record["item"].as_str().unwrap();
        assert!(row.contains(item.trim()), "{row} / {record}");
    }
}

/// `decode` renders `tokenize --json` output as `reconstruct` does; `generate -n 2` writes
/// numbered files.
#[test]
fn decode_of_tokenize_json_equals_reconstruct_and_generate_writes_n_images() {
    let dir = scratch("decode");
    let image = test_image(&dir);
    let image = image.to_str().unwrap();
    let tokens = dir.join("tokens.json");
    std::fs::write(&tokens, run_ok(&["tokenize", image, "--json"])).unwrap();
    let decoded = dir.join("decoded.png");
    let reconstructed = dir.join("reconstructed.png");
    run_ok(&[
        "decode",
        tokens.to_str().unwrap(),
        "-o",
        decoded.to_str().unwrap(),
    ]);
    run_ok(&["reconstruct", image, "-o", reconstructed.to_str().unwrap()]);
    let pixels = |p: &std::path::Path| image::open(p).unwrap().to_rgb8();
    assert_eq!(pixels(&decoded), pixels(&reconstructed));

    let not_tokens = dir.join("not-tokens.json");
    std::fs::write(&not_tokens, b"{\"semantic\": 3}").unwrap();
    let out = illume(&["decode", not_tokens.to_str().unwrap(), "-o", "x.png"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not-tokens.json") && stderr.contains("tokenize --json"),
        "{stderr}"
    );

    let output = dir.join("many.png");
    run_ok(&[
        "generate",
        "x",
        "--size",
        "64x64",
        "-n",
        "2",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(png_size(&dir.join("many-1.png")), (64, 64));
    assert_eq!(png_size(&dir.join("many-2.png")), (64, 64));
}

/// `chat`: one message with two images; an interactive session on stdin with /image,
/// /reset, a bad image that does not end the session, and --json lines per answer.
#[test]
fn chat_answers_one_message_and_a_session_on_stdin() {
    use std::io::Write;
    let dir = scratch("chat");
    let image = test_image(&dir);
    let image = image.to_str().unwrap();
    let out = illume(&[
        "chat",
        "--image",
        image,
        "--image",
        image,
        "What differs?",
        "--max-new-tokens",
        "4",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("tokens/s"), "{stderr}");

    let session = format!(
        "/image {image}\nWhat is it?\n/image {}/missing.png\nAnd the colour?\n/reset\n/nope\nHello\n/quit\nnever read\n",
        dir.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_illume"))
        .args(["chat", "--json", "--max-new-tokens", "4"])
        .env_remove("ILLUME_BACKEND")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the illume binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(session.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    // Three messages: turns 1 and 2 of the first conversation, turn 1 after /reset.
    let turns: Vec<u64> = answers
        .iter()
        .map(|a| a["turn"].as_u64().unwrap())
        .collect();
    assert_eq!(turns, vec![1, 2, 1], "{stdout}");
    assert!(
        answers.iter().all(|a| a["tokens"].as_u64() > Some(0)),
        "{stdout}"
    );
    for needle in [
        "image 1 attached",
        "missing.png",
        "new conversation",
        "/nope",
    ] {
        assert!(
            stderr.contains(needle),
            "`{needle}` missing from:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `understand` with several images; `--json` documents of understand, generate (with a
/// negative prompt, written as WebP with XMP), tokenize and inspect; errors as JSON too.
#[test]
fn understand_several_images_and_json_output() {
    let dir = scratch("json");
    let image = test_image(&dir);
    let image = image.to_str().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let stdout = run_ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}\n{stdout}"))
    };
    let answer = json(&[
        "understand",
        image,
        "Which is brighter?",
        "--image",
        image,
        "--json",
        "--max-new-tokens",
        "3",
    ]);
    assert!(answer["answer"].is_string(), "{answer}");
    assert!(answer["tokens"].as_u64() > Some(0), "{answer}");

    let webp = dir.join("negative.webp");
    let generated = json(&[
        "generate",
        "a red circle",
        "--negative-prompt",
        "a blue square",
        "--size",
        "64x64",
        "-o",
        webp.to_str().unwrap(),
        "--json",
    ]);
    let first = &generated["images"][0];
    assert_eq!(first["path"], webp.to_str().unwrap(), "{generated}");
    assert_eq!(
        (first["width"].as_u64(), first["height"].as_u64()),
        (Some(64), Some(64))
    );
    assert_eq!(first["metadata"]["illume.negative_prompt"], "a blue square");
    assert_eq!(png_size(&webp), (64, 64));
    let bytes = std::fs::read(&webp).unwrap();
    let xmp = String::from_utf8_lossy(&bytes);
    assert!(
        xmp.contains("illume:negative_prompt=\"a blue square\""),
        "no XMP parameters"
    );

    let tokens = json(&["tokenize", image, "--json"]);
    assert!(tokens["pixel"]["indices"].is_array(), "{tokens}");
    for set in fixture_sets("dualvitok") {
        let inspected = json(&[
            "inspect",
            set.dir.join("model.safetensors").to_str().unwrap(),
            "--json",
        ]);
        assert!(
            inspected["kind"].as_str().unwrap().starts_with("DualViTok"),
            "{inspected}"
        );
        assert!(inspected["parameters"].as_u64() > Some(0), "{inspected}");
    }

    let out = illume(&["inspect", "/nonexistent/x.bin", "--json"]);
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).expect("an error document");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/x.bin"),
        "{error}"
    );
}
