//! The pixel branch: MoVQ encoder and decoder (`movqgan/modeling_movqgan.py`) with the "DC"
//! down/up blocks and their parameter-free shortcuts, as configured for DualViTok.

mod blocks;
mod decoder;
mod encoder;

pub use blocks::{
    AttnBlock, DcDownBlock, DcUpBlock, MoVqNorm, ResnetBlock, SpatialNorm, GROUPS, NORM_EPS,
};
pub use decoder::{DecoderLevel, DecoderMid, MoVqDecoder};
pub use encoder::{EncoderLevel, EncoderMid, MoVqEncoder};
