//! What a device allows: the sizes models must respect and the float types it computes in.

use burn::tensor::FloatDType;

use crate::{
    float_dtype, run_on, BackendError, BackendKind, BackendTask, IllumeBackend, Precision,
};

/// Limits of one device, as reported by its runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Largest buffer one kernel can bind, in bytes (WebGPU/Vulkan storage bindings are often
    /// 128 MiB–4 GiB); `None` where only memory bounds it (CPU).
    pub max_storage_binding_size: Option<u64>,
    /// Shared (workgroup) memory per cube, in bytes; `None` on the CPU.
    pub max_shared_memory_size: Option<usize>,
    /// Whether kernels can compute in f16 / bf16 on this device.
    pub f16: bool,
    pub bf16: bool,
    /// Whether tensors live in this process's memory (the CPU backends), so that a model's
    /// weights must fit in the machine's RAM. GPU backends hold them in device memory,
    /// which their runtime does not report.
    pub host_memory: bool,
}

impl DeviceLimits {
    /// A device bounded only by memory (the CPU backend).
    pub const fn unbounded() -> Self {
        Self {
            max_storage_binding_size: None,
            max_shared_memory_size: None,
            f16: false,
            bf16: false,
            host_memory: true,
        }
    }

    /// Bytes per weight of backend `B` when its weights live in host memory, for the
    /// memory check done before a model is built; `None` on GPU backends.
    pub fn host_bytes_per_weight<B: IllumeBackend>(device: &B::Device) -> Option<u64> {
        B::limits(device)
            .host_memory
            .then_some(std::mem::size_of::<B::FloatElem>() as u64)
    }

    /// Rows of `row_bytes` bytes that fit in one storage binding (`usize::MAX` when unbounded):
    /// what a vocabulary-sharded embedding or LM head uses as its shard size.
    pub fn rows_per_binding(&self, row_bytes: usize) -> usize {
        match self.max_storage_binding_size {
            Some(max) => usize::try_from(max / row_bytes.max(1) as u64)
                .unwrap_or(usize::MAX)
                .max(1),
            None => usize::MAX,
        }
    }
}

/// Start `kind`'s default device at `precision` and read its limits and the float type it
/// computes in.
pub fn limits(
    kind: BackendKind,
    precision: Precision,
) -> Result<(DeviceLimits, FloatDType), BackendError> {
    struct Read;
    impl BackendTask for Read {
        type Output = (DeviceLimits, FloatDType);
        fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output {
            (B::limits(&device), float_dtype::<B>(&device))
        }
    }
    run_on(kind, precision, Read)
}

/// Bytes in binary units, e.g. `2.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
