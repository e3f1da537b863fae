//! Convolution as matrix products (im2col), for CPU backends whose matmul is much faster
//! than their direct convolution: burn-ndarray's direct convolution runs at ~1.6 GFLOP/s,
//! its GEMM at ~100. burn-flex and the CubeCL backends have fast convolutions of their own
//! and use Burn's `conv2d`.

use burn::tensor::ops::{PadMode, PaddedConvOptions};
use burn::tensor::{backend::Backend, Tensor};

/// Upper bound on the values of one im2col band (128 MiB of f32): large enough for big
/// matmuls, small enough that a 512×512×384 convolution never unfolds whole.
const IM2COL_BAND_VALUES: usize = 32 << 20;

/// Whether [`conv2d`] computes `options`: stride 1, no dilation, one group (every MoVQ
/// convolution, most of the SDXL UNet's and VAE's, and the tiled VAE's halo-row strips).
pub fn supports(options: &PaddedConvOptions<2>) -> bool {
    let o = &options.options;
    o.stride == [1, 1] && o.dilation == [1, 1] && o.groups == 1
}

/// A stride-1 convolution (see [`supports`]) as matmuls: 1×1 kernels without padding are
/// one matmul; other kernels are unfolded one band of output rows at a time, each band a
/// single `[out, in·kh·kw] × [in·kh·kw, rows·w]` matmul.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: &PaddedConvOptions<2>,
) -> Tensor<B, 4> {
    let [c_out, c_in, kh, kw] = weight.dims();
    let [batch, _, height, width] = x.dims();
    let [top, left] = options.options.padding;
    let [bottom, right] = options.padding_end.unwrap_or([top, left]);
    let weight = weight.reshape([1, c_out, c_in * kh * kw]);
    let bias = bias.map(|b| b.reshape([1, c_out, 1]));
    let with_bias = |y: Tensor<B, 3>| match &bias {
        Some(b) => y + b.clone(),
        None => y,
    };
    if kh == 1 && kw == 1 && top + left + bottom + right == 0 {
        let y = weight.matmul(x.reshape([batch, c_in, height * width]));
        return with_bias(y).reshape([batch, c_out, height, width]);
    }
    let padded = x.pad(
        [(0, 0), (0, 0), (top, bottom), (left, right)],
        PadMode::Constant(0.0),
    );
    let out_h = height + top + bottom + 1 - kh;
    let out_w = width + left + right + 1 - kw;
    let unfolded_per_row = c_in * kh * kw * out_w * batch;
    let band = (IM2COL_BAND_VALUES / unfolded_per_row).clamp(1, out_h);
    let mut outputs = Vec::with_capacity(out_h.div_ceil(band));
    for row in (0..out_h).step_by(band) {
        let rows = band.min(out_h - row);
        let taps: Vec<Tensor<B, 4>> = (0..kh)
            .flat_map(|dy| (0..kw).map(move |dx| (dy, dx)))
            .map(|(dy, dx)| {
                padded
                    .clone()
                    .slice([0..batch, 0..c_in, row + dy..row + dy + rows, dx..dx + out_w])
            })
            .collect();
        // [b, c_in, kh·kw, rows, w]: column index c·kh·kw + dy·kw + dx, the weight's flattening.
        let columns = Tensor::stack::<5>(taps, 2).reshape([batch, c_in * kh * kw, rows * out_w]);
        let y = with_bias(weight.clone().matmul(columns));
        outputs.push(y.reshape([batch, c_out, rows, out_w]));
    }
    Tensor::cat(outputs, 2)
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type B = crate::NdArray;

    /// The matmul form against Burn's direct convolution: odd sizes, 1×1, and the tiled
    /// VAE's rows-only padding. Tolerance: f32 sums of ≤ 144 products of N(0,1) values
    /// differ by reassociation only (~1e-6 relative); 1e-4 absolute covers outputs ~10.
    #[test]
    fn matmul_convolution_matches_burns_convolution() {
        let device = Default::default();
        let cases = [
            (3, 8, 3, 9, 7, [1, 1], [1, 1]),
            (8, 4, 1, 5, 6, [0, 0], [0, 0]),
            (16, 8, 3, 40, 3, [1, 1], [1, 1]),
            (4, 5, 3, 6, 5, [0, 1], [0, 1]),
            (4, 5, 3, 6, 5, [2, 0], [1, 1]),
        ];
        for (c_in, c_out, k, h, w, start, end) in cases {
            let normal = Distribution::Normal(0.0, 1.0);
            let weight = Tensor::<B, 4>::random([c_out, c_in, k, k], normal, &device);
            let bias = Tensor::<B, 1>::random([c_out], normal, &device);
            let x = Tensor::<B, 4>::random([2, c_in, h, w], normal, &device);
            let options = PaddedConvOptions::asymmetric([1, 1], start, end, [1, 1], 1);
            assert!(supports(&options));
            let expected = burn::tensor::module::conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                options.clone(),
            );
            let actual = conv2d(x, weight, Some(bias), &options);
            assert_eq!(actual.dims(), expected.dims(), "{start:?} {end:?}");
            actual
                .into_data()
                .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-4));
        }
    }

    #[test]
    fn strided_dilated_or_grouped_convolutions_are_not_unfolded() {
        let options = |stride, dilation, groups| {
            PaddedConvOptions::asymmetric(stride, [1, 1], [1, 1], dilation, groups)
        };
        assert!(!supports(&options([2, 2], [1, 1], 1)));
        assert!(!supports(&options([1, 1], [2, 2], 1)));
        assert!(!supports(&options([1, 1], [1, 1], 2)));
    }
}
