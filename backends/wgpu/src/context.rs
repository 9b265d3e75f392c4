//! The device: adapter choice, limits, error capture, and the compiled-pipeline cache shared by
//! every backend made from one context.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::kernel::Kernel;

/// Why no device could be opened.
#[derive(Debug, Clone)]
pub struct InitError(pub String);

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InitError {}

/// Bytes of per-dispatch parameters (WebGPU immediates): every kernel's parameter block fits.
pub(crate) const IMMEDIATE_BYTES: u32 = 128;

/// One opened device and its queue, with the pipelines compiled for it so far.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) name: String,
    pub(crate) limits: wgpu::Limits,
    /// The first validation or out-of-memory error wgpu reported, taken at the next sync.
    pub(crate) device_error: Arc<Mutex<Option<String>>>,
    pipelines: RefCell<HashMap<usize, Rc<Pipeline>>>,
    fault_layout: wgpu::BindGroupLayout,
    /// A lower storage-binding limit than the adapter's, when one was set.
    binding_cap: Cell<Option<u64>>,
}

pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

impl GpuContext {
    /// Opens the first adapter wgpu offers (high-performance preference; `WGPU_ADAPTER_NAME`
    /// and `WGPU_BACKEND` narrow the choice, as in wgpu's own tools).
    pub fn new() -> Result<Rc<Self>, InitError> {
        pollster::block_on(Self::open())
    }

    async fn open() -> Result<Rc<Self>, InitError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = match wgpu::util::initialize_adapter_from_env(&instance, None).await {
            Ok(a) => a,
            Err(_) => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    apply_limit_buckets: false,
                })
                .await
                .map_err(|e| {
                    InitError(format!(
                        "no Vulkan, Metal or DX12 adapter found ({e}); on Linux without a GPU, \
                         install Mesa's software Vulkan driver (Debian: mesa-vulkan-drivers)"
                    ))
                })?,
        };
        let info = adapter.get_info();
        let features = adapter.features();
        if !features.contains(wgpu::Features::IMMEDIATES) {
            return Err(InitError(format!(
                "adapter `{}` lacks immediate data (push constants), which every dscl kernel uses",
                info.name
            )));
        }
        let adapter_limits = adapter.limits();
        if adapter_limits.max_immediate_size < IMMEDIATE_BYTES {
            return Err(InitError(format!(
                "adapter `{}` offers {} bytes of immediate data; dscl needs {IMMEDIATE_BYTES}",
                info.name, adapter_limits.max_immediate_size
            )));
        }
        // Ask for everything the adapter has: the binding size limit decides how large a
        // buffer one dispatch can address.
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("dscl"),
                required_features: wgpu::Features::IMMEDIATES,
                required_limits: adapter_limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| InitError(format!("could not open `{}`: {e}", info.name)))?;
        let device_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let slot = device_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut s) = slot.lock() {
                if s.is_none() {
                    *s = Some(e.to_string());
                }
            }
        }));
        let fault_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("dscl fault slot"),
            entries: &[storage_entry(0, false)],
        });
        let name = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        Ok(Rc::new(GpuContext {
            device,
            queue,
            name,
            limits: adapter_limits,
            device_error,
            pipelines: RefCell::new(HashMap::new()),
            fault_layout,
            binding_cap: Cell::new(None),
        }))
    }

    /// The adapter's name, API and kind, as reported by the driver.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Largest byte range one storage binding may address on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        let adapter = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        self.binding_cap
            .get()
            .map_or(adapter, |cap| cap.min(adapter))
    }

    /// Treats `bytes` (at least 1 KiB) as the storage-binding limit when it is below the
    /// adapter's: for a driver that reports more than it can bind, and to exercise the paths
    /// that split large tensors on a device whose limit is never reached. Affects every backend
    /// made from this context, from their next dispatch on.
    pub fn limit_binding_bytes(&self, bytes: u64) {
        self.binding_cap.set(Some(bytes.max(1024)));
    }

    pub(crate) fn fault_layout(&self) -> &wgpu::BindGroupLayout {
        &self.fault_layout
    }

    /// The compiled pipeline of `kernel`, built on first use.
    pub(crate) fn pipeline(&self, kernel: &'static Kernel) -> Rc<Pipeline> {
        let key = kernel as *const Kernel as usize;
        if let Some(p) = self.pipelines.borrow().get(&key) {
            return p.clone();
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
            .bindings
            .iter()
            .enumerate()
            .map(|(i, access)| storage_entry(i as u32, access.read_only()))
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.entry),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.entry),
                bind_group_layouts: &[Some(&layout), Some(&self.fault_layout)],
                immediate_size: IMMEDIATE_BYTES,
            });
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.entry),
                source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        let p = Rc::new(Pipeline { pipeline, layout });
        self.pipelines.borrow_mut().insert(key, p.clone());
        p
    }

    /// The first device error since the last call, cleared.
    pub(crate) fn take_device_error(&self) -> Option<String> {
        self.device_error.lock().ok().and_then(|mut s| s.take())
    }
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}
