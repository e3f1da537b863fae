//! [`DualViTok`]: the whole tokenizer, loaded from a checkpoint, with the encode / decode /
//! features entry points of the official `DualViTok` class.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::{DeviceLimits, IllumeBackend};
use illume_weights::{Checkpoint, LoadOptions};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigSource, DualViTokConfig};
use crate::error::{Error, Result};
use crate::image_io;
use crate::layers::{contiguous, conv2d, conv_config};
use crate::merge::merge_quants;
use crate::movq::{MoVqDecoder, MoVqEncoder};
use crate::names;
use crate::preprocess;
use crate::semantic::{SemanticDecoder, SemanticEncoder, SemanticEncoding};
use crate::simvq::{indices_to_host, Codebook, SimVq};

/// Default pixel budget of [`DualViTok`]: 1024×1024. The release was trained at up to
/// 512×512 (anchors up to 1024×256); at 1024² the decoder already holds ~2 GB activations.
pub const DEFAULT_MAX_PIXELS: usize = 1024 * 1024;

/// The module tree of the official `DualViTok`, parameter for parameter (the `scaling_layer`
/// has no weights; it is [`preprocess`]).
#[derive(Module, Debug)]
pub struct DualViTokModel<B: Backend> {
    pub semantic_encoder: SemanticEncoder<B>,
    pub semantic_quantizer: SimVq<B>,
    pub semantic_decoder: SemanticDecoder<B>,
    pub pixel_encoder: MoVqEncoder<B>,
    pub pixel_quant_conv: Conv2d<B>,
    pub pixel_quantizer: SimVq<B>,
    pub pixel_post_quant_conv: Conv2d<B>,
    pub pixel_decoder: MoVqDecoder<B>,
}

impl<B: Backend> DualViTokModel<B> {
    /// The tree of `config` with placeholder parameters (initialised lazily, on first use).
    pub fn new(config: &DualViTokConfig, device: &B::Device) -> Self {
        let pe = &config.pixel_encoder;
        let pd = &config.pixel_decoder;
        Self {
            semantic_encoder: SemanticEncoder::new(&config.vit, &config.semantic_encoder, device),
            semantic_quantizer: SimVq::new(&config.semantic_quantizer, device),
            semantic_decoder: SemanticDecoder::new(&config.semantic_decoder, device),
            pixel_encoder: MoVqEncoder::new(pe, device),
            pixel_quant_conv: conv_config(pe.z_channels, pe.embed_dim, 1).init(device),
            pixel_quantizer: SimVq::new(&config.pixel_quantizer, device),
            pixel_post_quant_conv: conv_config(pd.embed_dim, pd.z_channels, 1).init(device),
            pixel_decoder: MoVqDecoder::new(pd, device),
        }
    }
}

/// A grid of codebook indices, row-major.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrid {
    /// `[height, width]` in tokens.
    pub shape: [usize; 2],
    pub indices: Vec<u32>,
}

impl TokenGrid {
    pub fn new(shape: [usize; 2], indices: Vec<u32>) -> Result<Self> {
        if shape[0] == 0 || shape[1] == 0 || shape[0] * shape[1] != indices.len() {
            return Err(Error::Shape(format!(
                "a {}x{} token grid needs {} indices, got {}",
                shape[0],
                shape[1],
                shape[0] * shape[1],
                indices.len()
            )));
        }
        Ok(Self { shape, indices })
    }
}

/// Both token grids of an image: semantic (level 0, 28 px per token) and pixel (level 1,
/// 16 px per token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DualTokens {
    pub semantic: TokenGrid,
    pub pixel: TokenGrid,
}

/// The continuous features the ILLUME+ MLLM's vision tower takes from DualViTok.
#[derive(Debug, Clone)]
pub struct VisionFeatures<B: Backend> {
    /// ViT + patch merger output `[h1·w1, vit_hidden]`, row-major over the semantic grid.
    pub semantic: Tensor<B, 2>,
    pub semantic_grid: [usize; 2],
    /// Pixel encoder output before `pixel_quant_conv`, `[1, z, h2, w2]`.
    pub pixel: Tensor<B, 4>,
}

impl<B: Backend> VisionFeatures<B> {
    /// The pixel features as tokens `[h2·w2, z]`, row-major (the MLLM's layout).
    pub fn pixel_tokens(&self) -> Tensor<B, 2> {
        let [_, z, h, w] = self.pixel.dims();
        contiguous(self.pixel.clone().reshape([z, h * w]).transpose())
    }
}

/// DualViTok, ready to tokenize and detokenize: the loaded module tree, its configuration,
/// and both SimVQ codebooks computed once.
#[derive(Debug)]
pub struct DualViTok<B: Backend> {
    pub model: DualViTokModel<B>,
    pub config: DualViTokConfig,
    semantic_codebook: Codebook<B>,
    pixel_codebook: Codebook<B>,
    max_pixels: usize,
}

impl<B: IllumeBackend> DualViTok<B> {
    /// Load a DualViTok from a checkpoint file or folder (`pytorch_model.bin` or
    /// `model.safetensors`; flat, or nested under `model`/`ema`/`state_dict`). The config is
    /// `config.json` beside it when that is a DualViTok config, else the official release
    /// configuration (said on stderr).
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let (config, source) = DualViTokConfig::for_checkpoint(path)?;
        if let ConfigSource::BuiltIn { reason } = &source {
            eprintln!(
                "note: using the built-in configuration of the released ILLUME-MLLM/dualvitok \
                 ({reason})"
            );
        }
        let checkpoint = Checkpoint::open(path)?;
        let config_file = match &source {
            ConfigSource::File(file) => file.clone(),
            ConfigSource::BuiltIn { .. } => path.join("config.json"),
        };
        let mut size = config.declared_size(&config_file);
        if let ConfigSource::BuiltIn { reason } = &source {
            size.model = format!("built-in release DualViTok ({reason})");
        }
        // After the check that this is a DualViTok at all, before anything is built.
        let state = Self::state_dict(&checkpoint)?;
        size.check(&state, DeviceLimits::host_bytes_per_weight::<B>(device))?;
        Self::from_state_dict(&state, config, device)
    }

    /// Load from an opened checkpoint with an explicit configuration.
    pub fn from_checkpoint(
        checkpoint: &Checkpoint,
        config: DualViTokConfig,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_state_dict(&Self::state_dict(checkpoint)?, config, device)
    }

    /// The DualViTok state dict of a checkpoint, flat or nested under a wrapper key.
    fn state_dict(checkpoint: &Checkpoint) -> Result<Checkpoint> {
        Ok(checkpoint
            .renamed(|name| Some(name.to_string()))
            .unwrap_state_dict("semantic_encoder", "DualViTok")?)
    }

    fn from_state_dict(
        state: &Checkpoint,
        config: DualViTokConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let renamed = state.renamed(|name| Some(names::to_module_path(name)));
        let model = renamed.load_into(
            DualViTokModel::new(&config, device),
            &LoadOptions::named("DualViTok"),
        )?;
        Ok(Self::from_model(model, config))
    }

    /// Wrap an already built model (e.g. random weights for benchmarks).
    pub fn from_model(model: DualViTokModel<B>, config: DualViTokConfig) -> Self {
        Self {
            semantic_codebook: model.semantic_quantizer.codebook(),
            pixel_codebook: model.pixel_quantizer.codebook(),
            model,
            config,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }

    /// Change the largest image (in pixels) [`DualViTok::encode`] and
    /// [`DualViTok::decode`] accept.
    pub fn with_max_pixels(mut self, max_pixels: usize) -> Self {
        self.max_pixels = max_pixels;
        self
    }

    /// [`DualViTok::with_max_pixels`] on a loaded tokenizer.
    pub fn set_max_pixels(&mut self, max_pixels: usize) {
        self.max_pixels = max_pixels;
    }

    pub fn max_pixels(&self) -> usize {
        self.max_pixels
    }

    pub fn semantic_codebook(&self) -> &Codebook<B> {
        &self.semantic_codebook
    }

    pub fn pixel_codebook(&self) -> &Codebook<B> {
        &self.pixel_codebook
    }

    /// Image pixels per pixel token along each axis (16).
    pub fn pixel_patch(&self) -> usize {
        self.config.pixel_patch()
    }

    fn check_budget(&self, height: usize, width: usize) -> Result<()> {
        let pixels = height * width;
        if pixels > self.max_pixels {
            return Err(Error::ImageTooLarge {
                width,
                height,
                pixels,
                max_pixels: self.max_pixels,
                side: (self.max_pixels as f64).sqrt() as usize,
            });
        }
        Ok(())
    }

    /// Check an image tensor: `[1, 3, H, W]`, H and W positive multiples of the pixel patch,
    /// within the pixel budget. Returns `(H, W)`.
    pub fn check_image(&self, image: &Tensor<B, 4>) -> Result<[usize; 2]> {
        let [b, c, h, w] = image.dims();
        if b != 1 || c != 3 {
            return Err(Error::Shape(format!(
                "expected one RGB image [1, 3, H, W], got [{b}, {c}, {h}, {w}]"
            )));
        }
        if h == 0 || w == 0 {
            return Err(Error::EmptyImage {
                width: w,
                height: h,
            });
        }
        let patch = self.pixel_patch();
        if h % patch != 0 || w % patch != 0 {
            return Err(Error::Shape(format!(
                "the image is {w}x{h}: DualViTok's pixel branch needs sides that are multiples \
                 of {patch} (resize with image_io::resize_to_multiple first)"
            )));
        }
        self.check_budget(h, w)?;
        Ok([h, w])
    }

    /// The semantic branch up to z (ViT features, LayerNorm target, pre-quant latent).
    pub fn encode_semantic(&self, image: &Tensor<B, 4>) -> Result<SemanticEncoding<B>> {
        self.check_image(image)?;
        let input = preprocess::scaling_layer(image.clone());
        Ok(self.model.semantic_encoder.forward(&input))
    }

    /// The pixel branch up to z: `pixel_quant_conv(pixel_encoder(image))`.
    pub fn encode_pixel(&self, image: &Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        self.check_image(image)?;
        let features = self.model.pixel_encoder.forward(image.clone());
        Ok(conv2d(&self.model.pixel_quant_conv, features))
    }

    /// `DualViTok.encode_code`: an image `[1, 3, H, W]` in `[-1, 1]` (H, W multiples of 16)
    /// → semantic and pixel token grids.
    pub fn encode(&self, image: &Tensor<B, 4>) -> Result<DualTokens> {
        let semantic = self.encode_semantic(image)?.z;
        let pixel = self.encode_pixel(image)?;
        let grid = |z: &Tensor<B, 4>| {
            let [_, _, h, w] = z.dims();
            [h, w]
        };
        let (sem_grid, pix_grid) = (grid(&semantic), grid(&pixel));
        Ok(DualTokens {
            semantic: TokenGrid {
                shape: sem_grid,
                indices: indices_to_host(self.semantic_codebook.quantize(semantic)),
            },
            pixel: TokenGrid {
                shape: pix_grid,
                indices: indices_to_host(self.pixel_codebook.quantize(pixel)),
            },
        })
    }

    /// Tokenize an 8-bit RGB image the way the tokenizer app does: resize to multiples of 16
    /// (Pillow bicubic), scale to `[-1, 1]`, encode.
    pub fn encode_rgb(&self, image: &RgbImage, device: &B::Device) -> Result<DualTokens> {
        self.check_budget(image.height() as usize, image.width() as usize)?;
        let aligned = image_io::resize_to_multiple(image, self.pixel_patch())?;
        self.encode(&image_io::to_tensor(&aligned, device))
    }

    /// The continuous features of the MLLM's vision tower: ViT + merger output, and the pixel
    /// encoder output before `pixel_quant_conv` and quantisation.
    pub fn vision_features(&self, image: &Tensor<B, 4>) -> Result<VisionFeatures<B>> {
        self.check_image(image)?;
        let input = preprocess::scaling_layer(image.clone());
        Ok(VisionFeatures {
            semantic: self.model.semantic_encoder.model.forward(&input),
            semantic_grid: input.merged_grid(),
            pixel: self.model.pixel_encoder.forward(image.clone()),
        })
    }

    /// Check token grids against the codebooks and the pixel budget.
    pub fn check_tokens(&self, tokens: &DualTokens) -> Result<()> {
        for (grid, level) in [(&tokens.semantic, "semantic"), (&tokens.pixel, "pixel")] {
            TokenGrid::new(grid.shape, grid.indices.clone())
                .map_err(|e| Error::Shape(format!("{level} grid: {e}")))?;
        }
        self.semantic_codebook
            .check_indices(&tokens.semantic.indices, "semantic")?;
        self.pixel_codebook
            .check_indices(&tokens.pixel.indices, "pixel")?;
        let patch = self.pixel_patch();
        let [h2, w2] = tokens.pixel.shape;
        self.check_budget(h2 * patch, w2 * patch)
    }

    /// `DualViTok.indices_to_codes`: semantic codes `[1, c_s, h1, w1]` and pixel codes
    /// `[1, c_p, h2, w2]`.
    pub fn indices_to_codes(&self, tokens: &DualTokens) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        self.check_tokens(tokens)?;
        Ok((
            self.semantic_codebook
                .lookup_host(&tokens.semantic.indices, tokens.semantic.shape),
            self.pixel_codebook
                .lookup_host(&tokens.pixel.indices, tokens.pixel.shape),
        ))
    }

    /// `DualViTok.decode`: merge the code maps, `pixel_post_quant_conv`, pixel decoder →
    /// image `[1, 3, 16·h2, 16·w2]` in about `[-1, 1]`.
    pub fn decode_codes(&self, semantic: Tensor<B, 4>, pixel: Tensor<B, 4>) -> Tensor<B, 4> {
        let zq = merge_quants(semantic, pixel);
        let z = conv2d(&self.model.pixel_post_quant_conv, zq.clone());
        self.model.pixel_decoder.forward(z, &zq)
    }

    /// `DualViTok.decode_code`: tokens → image `[1, 3, 16·h2, 16·w2]` in about `[-1, 1]`.
    pub fn decode(&self, tokens: &DualTokens) -> Result<Tensor<B, 4>> {
        let (semantic, pixel) = self.indices_to_codes(tokens)?;
        Ok(self.decode_codes(semantic, pixel))
    }

    /// Tokens → 8-bit RGB image (`clamp(127.5·x + 128, 0, 255)`, truncated).
    pub fn decode_rgb(&self, tokens: &DualTokens) -> Result<RgbImage> {
        Ok(image_io::to_rgb(self.decode(tokens)?))
    }

    /// `DualViTok.decode_semantic`: the semantic decoder on semantic codes.
    pub fn decode_semantic(&self, semantic_codes: Tensor<B, 4>) -> Tensor<B, 4> {
        self.model.semantic_decoder.forward(semantic_codes)
    }
}
