//! The GPU adapter the wgpu backend runs on, as `illume doctor` reports it.

use std::fmt;

use cubecl::wgpu::{AutoGraphicsApi, GraphicsApi};

use crate::human_bytes;

/// Name, kind, driver and limits of a wgpu adapter.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    pub name: String,
    /// Discrete GPU, integrated GPU, CPU (e.g. Mesa lavapipe), ...
    pub device_type: String,
    /// The graphics API: Vulkan, Metal, Dx12, Gl.
    pub api: String,
    pub driver: String,
    /// Largest buffer the adapter can allocate, in bytes.
    pub max_buffer_size: u64,
    /// Largest buffer one kernel can bind, in bytes: the cap that forces vocabulary sharding.
    pub max_storage_binding_size: u64,
    /// Workgroup (shared) memory, in bytes.
    pub max_workgroup_memory: u32,
    pub max_invocations_per_workgroup: u32,
    /// WGSL `f16` arithmetic (`shader-f16`).
    pub shader_f16: bool,
    /// Subgroup (warp/wave) operations.
    pub subgroups: bool,
}

/// The adapter the wgpu backend picks by default (high-performance preference on the
/// platform's native API), or why there is none.
pub fn wgpu_adapter() -> Result<AdapterReport, String> {
    let api = AutoGraphicsApi::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: api.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter =
        cubecl::future::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
        }))
        .map_err(|e| format!("no {api:?} adapter: {e}"))?;
    let info = adapter.get_info();
    let limits = adapter.limits();
    let features = adapter.features();
    Ok(AdapterReport {
        name: info.name,
        device_type: format!("{:?}", info.device_type),
        api: format!("{:?}", info.backend),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_buffer_size: limits.max_buffer_size,
        max_storage_binding_size: limits.max_storage_buffer_binding_size,
        max_workgroup_memory: limits.max_compute_workgroup_storage_size,
        max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
    })
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        writeln!(
            f,
            "  adapter:               {} ({}, {})",
            self.name, self.device_type, self.api
        )?;
        writeln!(f, "  driver:                {}", self.driver)?;
        writeln!(
            f,
            "  max buffer size:       {}",
            human_bytes(self.max_buffer_size)
        )?;
        writeln!(
            f,
            "  max storage binding:   {}",
            human_bytes(self.max_storage_binding_size)
        )?;
        writeln!(
            f,
            "  workgroup memory:      {} ({} invocations)",
            human_bytes(self.max_workgroup_memory as u64),
            self.max_invocations_per_workgroup
        )?;
        writeln!(f, "  shader f16:            {}", yes_no(self.shader_f16))?;
        write!(f, "  subgroups:             {}", yes_no(self.subgroups))
    }
}
