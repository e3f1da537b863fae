use std::path::PathBuf;

use illume_weights::WeightsError;

/// Everything that can go wrong between a path or an image and DualViTok tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or loading the checkpoint failed (missing file, wrong kind, shape mismatch...).
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid DualViTok config: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("{}: cannot read the image: {reason}", path.display())]
    ImageRead { path: PathBuf, reason: String },
    #[error("{}: cannot write the image: {reason}", path.display())]
    ImageWrite { path: PathBuf, reason: String },
    #[error("the image is empty ({width}x{height} pixels)")]
    EmptyImage { width: usize, height: usize },
    #[error("cannot resize an image to {width}x{height}: both sides must be at least 1 pixel")]
    EmptyResizeTarget { width: usize, height: usize },
    #[error(
        "the image is {width}x{height}: DualViTok needs at least 16x16 pixels (its pixel \
         branch works on 16x16 patches)"
    )]
    ImageTooSmall { width: usize, height: usize },
    #[error(
        "the image is {width}x{height} = {pixels} pixels, over the pixel budget of {max_pixels} \
         pixels (about {side}x{side}); resize it first or raise the budget (`--max-pixels`)"
    )]
    ImageTooLarge {
        width: usize,
        height: usize,
        pixels: usize,
        max_pixels: usize,
        side: usize,
    },
    /// A tensor handed to the model has the wrong shape (the message says which and why).
    #[error("{0}")]
    Shape(String),
    #[error(
        "{level} token {index} at position {position} is out of range: the {level} codebook \
         has {codebook_size} codes"
    )]
    TokenOutOfRange {
        level: &'static str,
        index: u32,
        position: usize,
        codebook_size: usize,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
