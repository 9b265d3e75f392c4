//! dscl-wgpu: the wgpu backend of dscl.
//!
//! [`WgpuBackend`] implements every kernel of [`dscl_core::Backend`] for `f32` as WGSL compute
//! shaders, so the same loss and training code runs on Vulkan, Metal and DX12 devices (and on
//! Mesa's lavapipe, a software Vulkan driver, where there is no GPU).
//!
//! - One open compute pass collects every dispatch; it is submitted only when the host needs a
//!   value (a download or a fault check), before an upload (queue writes run ahead of recorded
//!   work), or after many dispatches. A training step therefore reads back only its loss.
//! - Pipelines are compiled once per [`GpuContext`] and shared by every backend made from it;
//!   bind groups are cached by the exact buffer ranges they bind.
//! - Kernel parameters are WebGPU immediates (push constants): no uniform buffer per call.
//! - Work whose buffers exceed the adapter's storage-binding limit is split into windows:
//!   element ranges, GEMM operand spans, runs of whole images (convolution, batch norm, pooling,
//!   ROI-align) or whole rows (the row kernels). Only a layer's weights and per-sample vectors
//!   are bound whole, and a kernel returns an error when one is larger than a binding.
//! - Value faults go to a device-side slot (first one wins), read by [`MemoryOps::take_fault`](dscl_core::backend::MemoryOps::take_fault).

mod buffer;
mod context;
mod kernel;
mod ops;
mod recorder;

use std::cell::{Ref, RefCell};
use std::rc::Rc;

use dscl_core::{Error, Result};

pub use buffer::WgpuBuffer;
pub use context::{GpuContext, InitError};
use recorder::Recorder;

/// The wgpu backend: a recorder over one shared [`GpuContext`].
pub struct WgpuBackend {
    rec: Recorder,
    /// Intermediate per-channel totals of kernels split over several dispatches, grown on
    /// first need and kept (a training step then allocates nothing).
    scratch: RefCell<Option<WgpuBuffer<f32>>>,
}

impl WgpuBackend {
    /// Opens the default adapter (see [`GpuContext::new`]).
    pub fn new() -> std::result::Result<Self, InitError> {
        Ok(Self::with_context(GpuContext::new()?))
    }

    /// A backend on an already opened device: it shares the compiled pipelines, and has its
    /// own fault slot and command stream.
    pub fn with_context(ctx: Rc<GpuContext>) -> Self {
        WgpuBackend {
            rec: Recorder::new(ctx),
            scratch: RefCell::new(None),
        }
    }

    pub(crate) fn rec(&self) -> &Recorder {
        &self.rec
    }

    /// Waits until every recorded kernel has run (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.rec.wait()
    }

    /// The scratch buffer, at least `len` elements long.
    pub(crate) fn scratch(&self, len: usize) -> Result<Ref<'_, WgpuBuffer<f32>>> {
        let short = self.scratch.borrow().as_ref().is_none_or(|b| b.len < len);
        if short {
            *self.scratch.borrow_mut() = Some(self.alloc_raw(len)?);
        }
        Ref::filter_map(self.scratch.borrow(), Option::as_ref).map_err(|_| Error::InvalidArgument {
            what: "wgpu scratch",
            reason: "scratch buffer missing after allocation (dscl-wgpu bug)",
        })
    }

    fn alloc_raw<T>(&self, len: usize) -> Result<WgpuBuffer<T>> {
        let ctx = self.rec.ctx();
        // Rounded up to whole vec4s, so vector loads near a buffer's end stay in bounds (the
        // GEMM's fast path binds operands as vec4 arrays).
        let bytes = (len.max(1).next_multiple_of(4) as u64)
            .checked_mul(4)
            .ok_or(Error::OutOfMemory {
                what: "wgpu alloc",
                requested: len,
                available: (ctx.limits.max_buffer_size / 4) as usize,
            })?;
        if bytes > ctx.limits.max_buffer_size || len > u32::MAX as usize {
            return Err(Error::OutOfMemory {
                what: "wgpu alloc",
                requested: len,
                available: (ctx.limits.max_buffer_size / 4).min(u32::MAX as u64) as usize,
            });
        }
        // wgpu zero-initialises every new buffer before its first use.
        let raw = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.rec
            .check_device("wgpu alloc")
            .map_err(|_| Error::OutOfMemory {
                what: "wgpu alloc",
                requested: len,
                available: 0,
            })?;
        Ok(WgpuBuffer::new(raw, len))
    }
}
