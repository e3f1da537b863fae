//! `illume generate`: text → image tokens with the MLLM → pixels with DualViTok's pixel
//! decoder or the diffusion decoder.

use std::path::PathBuf;

use illume::pipeline::{check_output, Decoder, GenerateRequest};

use super::common::{
    generation_config_help, generation_timing, report_images, DiffusionArgs, ModelArgs,
    SamplingArgs, GENERATION_DEFAULTS,
};
use super::progress::Progress;

#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "Pipeline: the prompt goes through the Qwen chat template (`Generate an image of \
<height_H><width_W>, the content of image is ...`), the MLLM samples the image's semantic and \
pixel token grids under the interleaved logits processor with classifier-free guidance (the \
unconditional prompt is `Generate a random image of <height_H><width_W>`, or with \
--negative-prompt TEXT the conditional wording with TEXT as the content), and DualViTok's \
pixel decoder turns the tokens into an image of --size (WxH; the prompt's tags are height \
first). -o picks the format by its extension (.png, .jpg, .webp); the parameters go into the \
file's metadata (PNG text chunks, XMP in JPEG and WebP).\n\n\
Sampling: --temperature/--top-k/--top-p are the global values; the semantic level defaults \
to them and the pixel level to the semantic values with 3x the top-k, as in the official \
InferenceConfig. The `eval` preset (default) is generation_eval's InterleavedLogitsProcessor \
(CFG inside the image only, <start_of_image> forced; when sampling, transformers' warpers \
apply the global values again, as the official call does); `app` is ILLUME/app.py's chain \
(CFG on every step, text default 0.7/20/0.8). Sampling uses a ChaCha8 RNG seeded by --seed \
(reproducible everywhere, not torch's stream). CFG runs the conditional and unconditional \
rows in one batched forward.\n\n",
    generation_config_help!(),
    "\n\nExamples:\n  illume generate \"a red fox in the snow\" -o fox.png      (demo model)\n  \
illume generate --model ILLUME-MLLM/illume_plus-qwen2_5-3b --tokenizer ILLUME-MLLM/dualvitok \
\"a red fox in the snow\" --size 512x512 --seed 7 -o fox.png"
))]
pub struct Args {
    #[command(flatten)]
    pub models: ModelArgs,
    /// What the image should show.
    pub prompt: String,
    /// Where to write the image: .png, .jpg/.jpeg or .webp (lossless).
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// What the image should not show: the unconditional CFG stream describes this instead
    /// of "a random image", so guidance steers away from it (needs --cfg above 1).
    #[arg(long, value_name = "TEXT")]
    pub negative_prompt: Option<String>,
    /// Image size WxH (width first, as `upscale --size`): multiples of 64 up to 1024.
    /// Trained anchors: 512x512, 384x512, 512x384, 384x768, 768x384, 384x576, 576x384,
    /// 320x960, 960x320, 256x1024, 1024x256, and 256x256.
    #[arg(long, value_name = "WxH", default_value = "512x512", value_parser = parse_size)]
    pub size: HeightWidth,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// How many images (each with the next seed: --seed, --seed + 1, ...); with more than
    /// one, OUT.png becomes OUT-1.png, OUT-2.png, ...
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub count: u8,
    /// With --diffusion, the tokens are rendered at twice the image size by the SDXL
    /// diffusion decoder instead of DualViTok's pixel decoder.
    #[command(flatten)]
    pub diffusion: DiffusionArgs,
}

/// An image size as the MLLM's resolution tags hold it: `(height, width)`.
pub type HeightWidth = (usize, usize);

/// `WxH` (e.g. `768x384`: 768 wide, 384 high) → `(height, width)`, each a size the MLLM
/// has a resolution tag for (checked here so the message keeps the user's WxH order).
fn parse_size(text: &str) -> Result<HeightWidth, String> {
    use illume::mllm::vocab::{is_resolution_side, MAX_RESOLUTION, RESOLUTION_STEP};
    let bad = || format!("`{text}` is not WxH (e.g. 512x512, or 768x384 for a wide image)");
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |s: &str| s.trim().parse::<usize>().map_err(|_| bad());
    let (w, h) = (side(w)?, side(h)?);
    if !(is_resolution_side(w) && is_resolution_side(h)) {
        return Err(format!(
            "{w}x{h}: width and height must be multiples of {RESOLUTION_STEP} from \
             {RESOLUTION_STEP} to {MAX_RESOLUTION}"
        ));
    }
    Ok((h, w))
}

pub fn run(args: Args, compute: super::Compute, json: bool) -> super::CliResult {
    // Every path is checked before the generation, not after it.
    let count = usize::from(args.count);
    let paths: Vec<PathBuf> = (0..count)
        .map(|i| numbered(&args.output, i, count))
        .collect();
    for path in &paths {
        check_output(path)?;
    }
    let (h, w) = args.size;
    let mut builder = args.models.builder();
    let decoder = match &args.diffusion.diffusion {
        Some(dir) => {
            builder = builder.diffusion(super::common::source(Some(dir)));
            Decoder::Diffusion(args.diffusion.settings(args.sampling.seed))
        }
        None => Decoder::Pixel,
    };
    let mut request = GenerateRequest::new(args.prompt.clone(), h, w);
    request.image = args.sampling.request(h, w, &GENERATION_DEFAULTS);
    request.image.negative_prompt = args.negative_prompt.clone();
    request.count = count;
    request.decoder = decoder;
    let pipeline = compute.open(builder)?;
    let images = pipeline.generate(&request, &mut Progress::new(json))?;
    let mut written = Vec::with_capacity(images.len());
    for (path, image) in paths.into_iter().zip(images) {
        image.save(&path)?;
        eprintln!("{}", generation_timing(&image));
        written.push((path, image));
    }
    report_images(json, &written)
}

/// `out.png` for one image; `out-1.png`, `out-2.png`, ... for several.
fn numbered(path: &std::path::Path, index: usize, count: usize) -> PathBuf {
    if count == 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let ext = path.extension().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}-{}.{ext}", index + 1))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn size_is_width_by_height() {
        assert_eq!(parse_size("768x384"), Ok((384, 768)));
        assert_eq!(parse_size("256X1024"), Ok((1024, 256)));
        let err = parse_size("512").unwrap_err();
        assert!(err.contains("WxH"), "{err}");
        assert!(parse_size("ax512").is_err());
        let err = parse_size("513x511").unwrap_err();
        assert!(err.starts_with("513x511:"), "{err}");
        assert!(parse_size("1088x64").is_err());
    }
}
