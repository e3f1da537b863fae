//! diffusers `Downsample2D` / `Upsample2D` (with convolution) and PyTorch's default
//! (`mode="nearest"`) resize.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use illume_backends::IllumeBackend;

use super::conv2d;

/// A 3×3 stride-2 convolution. With `padding = 0`, diffusers pads one row/column at the
/// bottom/right first (asymmetric), otherwise the convolution pads `padding` on every side.
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    conv: Conv2d<B>,
    #[module(skip)]
    pad_bottom_right: bool,
}

impl<B: Backend> Downsample2D<B> {
    pub fn new(channels: usize, padding: usize, device: &B::Device) -> Self {
        Self {
            conv: conv2d([channels, channels], 3, 2, padding, device),
            pad_bottom_right: padding == 0,
        }
    }
}

impl<B: IllumeBackend> Downsample2D<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if self.pad_bottom_right {
            x.pad((0, 1, 0, 1), burn::tensor::ops::PadMode::Constant(0.0))
        } else {
            x
        };
        illume_backends::conv2d(&self.conv, x)
    }
}

/// Nearest-neighbour upsampling (×2, or to the size of the matching skip connection when
/// the UNet input is not a multiple of its total downsampling), then a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    pub(crate) conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            conv: conv2d([channels, channels], 3, 1, 1, device),
        }
    }
}

impl<B: IllumeBackend> Upsample2D<B> {
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let size = size.unwrap_or([2 * h, 2 * w]);
        illume_backends::conv2d(&self.conv, nearest_resize(x, size))
    }
}

/// `F.interpolate(x, size, mode="nearest")`: output pixel `i` reads input pixel
/// `min(floor(i · in/out), in − 1)` (PyTorch's legacy nearest, scale computed in f32).
/// Exact integer factors take a broadcast path; other sizes gather rows and columns.
pub fn nearest_resize<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let [oh, ow] = size;
    if [h, w] == size {
        return x;
    }
    if oh.is_multiple_of(h) && ow.is_multiple_of(w) {
        let (fy, fx) = (oh / h, ow / w);
        return x
            .reshape([n, c, h, 1, w, 1])
            .expand([n, c, h, fy, w, fx])
            .reshape([n, c, oh, ow]);
    }
    let device = x.device();
    let rows = source_indices(h, oh);
    let cols = source_indices(w, ow);
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [oh]), &device);
    let cols = Tensor::<B, 1, Int>::from_data(TensorData::new(cols, [ow]), &device);
    x.select(2, rows).select(3, cols)
}

fn source_indices(input: usize, output: usize) -> Vec<i64> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| ((i as f32 * scale).floor() as usize).min(input - 1) as i64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_indices_follow_pytorch() {
        // torch: F.interpolate(arange(5), size=8, mode="nearest") reads 0,0,1,1,2,3,3,4.
        assert_eq!(source_indices(5, 8), vec![0, 0, 1, 1, 2, 3, 3, 4]);
        // Downscaling 8 -> 3 reads 0, 2, 5.
        assert_eq!(source_indices(8, 3), vec![0, 2, 5]);
    }
}
