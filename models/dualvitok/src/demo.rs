//! The demo DualViTok (the fixtures' tiny configuration with deterministic weights, written
//! in the official names and layout) and fast random weights for benchmarks at real size.

use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use illume_backends::NdArray;

use crate::config::DualViTokConfig;
use crate::error::{Error, Result};
use crate::names;
use crate::tokenizer::DualViTokModel;

/// The demo configuration: the tiny configuration of the reference fixtures.
pub const CONFIG_JSON: &str = include_str!("../demo/config.json");
/// Seed of the demo weights.
pub const SEED: u64 = 0x1111_0003;

pub fn config() -> DualViTokConfig {
    let value: serde_json::Value =
        serde_json::from_str(CONFIG_JSON).expect("the embedded demo config is valid JSON");
    DualViTokConfig::from_json(&value).expect("the embedded demo config is a DualViTok config")
}

/// Write the demo DualViTok to `dir`: `config.json` and `model.safetensors` (official names
/// and layouts, so it loads through [`crate::DualViTok::load`] like a downloaded checkpoint).
pub fn write(dir: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join("config.json"), CONFIG_JSON).map_err(io)?;
    let model = DualViTokModel::<NdArray>::new(&config(), &Default::default());
    illume_weights::demo::write_demo_checkpoint(
        &model,
        &dir.join("model.safetensors"),
        SEED,
        names::to_official_name,
    )?;
    Ok(())
}

/// Values shared by every parameter of [`fill_random`] (a window of this pool per tensor).
const POOL: usize = 1 << 20;

/// Replace every float parameter of `module` with deterministic pseudo-random values without
/// generating one random number per parameter (1.35 G of them at the real size): normal
/// values from a 1 Mi pool, scaled by 1/√fan_in, windows offset per tensor; 1-D scales
/// (`gamma`, `weight`) are ones and 1-D shifts zeros. Meant for timing, not for meaning.
pub fn fill_random<B: Backend, M: Module<B>>(module: M, seed: u64, device: &B::Device) -> M {
    let mut state = seed;
    let pool: Vec<f32> = (0..POOL)
        .map(|_| {
            // Sum of 4 uniforms, centred and scaled: near-normal, unit variance.
            let s: f64 = (0..4)
                .map(|_| splitmix(&mut state) as f64 / u64::MAX as f64)
                .sum();
            ((s - 2.0) * 3f64.sqrt()) as f32
        })
        .collect();
    let pool = Tensor::<B, 1>::from_data(TensorData::new(pool, [POOL]), device);
    let mut filler = Filler {
        pool,
        field: String::new(),
        state: seed ^ 0x5DEE_CE66,
    };
    module.map(&mut filler)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Filler<B: Backend> {
    pool: Tensor<B, 1>,
    field: String,
    state: u64,
}

impl<B: Backend> ModuleMapper<B> for Filler<B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.field = name.to_string();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let shape = param.lazy_shape();
        let device = param.lazy_device();
        let dims: Vec<usize> = shape.iter().copied().collect();
        let numel: usize = dims.iter().product();
        let tensor = if D == 1 {
            let one = matches!(self.field.as_str(), "gamma" | "weight");
            Tensor::<B, 1>::full([numel], if one { 1.0 } else { 0.0 }, &device).reshape(shape)
        } else {
            let fan_in: usize = dims[1..].iter().product::<usize>().max(1);
            let offset = (splitmix(&mut self.state) as usize) % POOL;
            let base = self.pool.clone().to_device(&device);
            let needed = offset + numel;
            let repeated = base.repeat_dim(0, needed.div_ceil(POOL));
            repeated
                .narrow(0, offset, numel)
                .mul_scalar(1.0 / (fan_in as f64).sqrt())
                .reshape(shape)
        };
        Param::initialized(param.id, tensor)
    }
}
