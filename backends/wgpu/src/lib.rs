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
//! - Value faults go to a device-side slot (first one wins), read by [`Backend::take_fault`].

mod buffer;
mod context;
mod kernel;
mod ops;
mod recorder;

use std::cell::{Ref, RefCell};
use std::rc::Rc;

use dscl_core::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, GemmDesc, PoolShape, RoiAlignShape, RowsDesc,
    SgdParams,
};
use dscl_core::error::check_range;
use dscl_core::{Backend, Error, Fault, FaultKind, Result};

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

fn write<T: bytemuck::Pod>(
    be: &WgpuBackend,
    what: &'static str,
    dst: &mut WgpuBuffer<T>,
    offset: usize,
    src: &[T],
) -> Result<()> {
    check_range(what, dst.len, offset, src.len())?;
    be.rec
        .write_bytes(&dst.raw, (offset * 4) as u64, bytemuck::cast_slice(src));
    Ok(())
}

fn read<T: bytemuck::Pod>(
    be: &WgpuBackend,
    what: &'static str,
    src: &WgpuBuffer<T>,
    offset: usize,
    dst: &mut [T],
) -> Result<()> {
    check_range(what, src.len, offset, dst.len())?;
    let byte_len = (dst.len() * 4) as u64;
    be.rec.read_bytes(
        &src.raw,
        (offset * 4) as u64,
        byte_len,
        bytemuck::cast_slice_mut(dst),
    )
}

/// The fault slot's (kind, index, value) words as the library's fault.
fn fault_from_words([kind, index, value]: [u32; 3]) -> Fault {
    Fault {
        kind: match kind {
            2 => FaultKind::ZeroNormRow,
            3 => FaultKind::LabelOutOfRange,
            _ => FaultKind::NonFinite,
        },
        index: index as usize,
        value,
    }
}

impl Backend for WgpuBackend {
    type Elem = f32;
    type Buffer = WgpuBuffer<f32>;
    type IndexBuffer = WgpuBuffer<u32>;

    fn device_name(&self) -> &str {
        self.rec.ctx().name()
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer> {
        self.alloc_raw(len)
    }

    fn alloc_index(&self, len: usize) -> Result<Self::IndexBuffer> {
        self.alloc_raw(len)
    }

    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[f32]) -> Result<()> {
        write(self, "upload", dst, offset, src)
    }

    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [f32]) -> Result<()> {
        read(self, "download", src, offset, dst)
    }

    fn upload_index(&self, dst: &mut Self::IndexBuffer, offset: usize, src: &[u32]) -> Result<()> {
        write(self, "upload_index", dst, offset, src)
    }

    fn download_index(
        &self,
        src: &Self::IndexBuffer,
        offset: usize,
        dst: &mut [u32],
    ) -> Result<()> {
        read(self, "download_index", src, offset, dst)
    }

    fn take_fault(&self) -> Result<Option<Fault>> {
        let raw = self.rec.take_fault()?;
        self.rec.check_device("take_fault")?;
        Ok(raw.map(fault_from_words))
    }

    /// One map and one wait: the fault slot is copied into the staging buffer right after the
    /// data (as every download does), and taken from that copy.
    fn download_with_fault(
        &self,
        src: &Self::Buffer,
        offset: usize,
        dst: &mut [f32],
    ) -> Result<Option<Fault>> {
        check_range("download_with_fault", src.len, offset, dst.len())?;
        let raw = self.rec.read_bytes_and_take_fault(
            &src.raw,
            (offset * 4) as u64,
            (dst.len() * 4) as u64,
            bytemuck::cast_slice_mut(dst),
        )?;
        self.rec.check_device("download_with_fault")?;
        Ok(raw.map(fault_from_words))
    }

    // ---- elementwise -----------------------------------------------------------------------

    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()> {
        ops::elementwise::fill(self, x, offset, len, value)
    }

    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        ops::elementwise::copy(self, src, src_offset, dst, dst_offset, len)
    }

    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        ops::elementwise::copy(self, src, src_offset, dst, dst_offset, len)
    }

    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()> {
        ops::elementwise::scale(self, x, len, alpha)
    }

    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        ops::elementwise::axpy(self, alpha, x, y, len)
    }

    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        ops::elementwise::add(self, a, b, out, len)
    }

    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()> {
        ops::elementwise::sum(self, x, len, scale, out, offset)
    }

    // ---- dense -----------------------------------------------------------------------------

    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()> {
        ops::gemm::gemm(self, desc, a, b, c)
    }

    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        ops::gemm::bias_add(self, x, bias, rows, cols)
    }

    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        ops::gemm::bias_backward(self, grad_out, grad_bias, rows, cols)
    }

    // ---- convolution -----------------------------------------------------------------------

    fn conv2d_workspace_len(&self, shape: &Conv2dShape) -> usize {
        ops::conv::workspace_len(self, shape)
    }

    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        ops::conv::forward(self, shape, input, weight, output, workspace)
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        ops::conv::backward_data(self, shape, grad_output, weight, grad_input, workspace)
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        ops::conv::backward_filter(self, shape, input, grad_output, grad_weight, workspace)
    }

    // ---- batch normalisation ---------------------------------------------------------------

    fn batch_norm_forward_train(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        y: &mut Self::Buffer,
        save_mean: &mut Self::Buffer,
        save_invstd: &mut Self::Buffer,
        running_mean: &mut Self::Buffer,
        running_var: &mut Self::Buffer,
    ) -> Result<()> {
        ops::batch_norm::forward_train(
            self,
            shape,
            x,
            gamma,
            beta,
            y,
            save_mean,
            save_invstd,
            running_mean,
            running_var,
        )
    }

    fn batch_norm_forward_inference(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        running_mean: &Self::Buffer,
        running_var: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()> {
        ops::batch_norm::forward_inference(
            self,
            shape,
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            y,
        )
    }

    fn batch_norm_backward(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        grad_y: &Self::Buffer,
        gamma: &Self::Buffer,
        save_mean: &Self::Buffer,
        save_invstd: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        grad_gamma: &mut Self::Buffer,
        grad_beta: &mut Self::Buffer,
    ) -> Result<()> {
        ops::batch_norm::backward(
            self,
            shape,
            x,
            grad_y,
            gamma,
            save_mean,
            save_invstd,
            grad_x,
            grad_gamma,
            grad_beta,
        )
    }

    // ---- activations and pooling -----------------------------------------------------------

    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        ops::elementwise::relu_forward(self, x, y, len)
    }

    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        ops::elementwise::relu_backward(self, y, grad_y, grad_x, len)
    }

    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()> {
        ops::pool::max_forward(self, shape, x, y, argmax)
    }

    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()> {
        ops::pool::max_backward(self, shape, grad_y, argmax, grad_x)
    }

    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        ops::pool::global_avg_forward(self, x, y, batch, channels, spatial)
    }

    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        ops::pool::global_avg_backward(self, grad_y, grad_x, batch, channels, spatial)
    }

    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()> {
        ops::roi_align::forward(self, shape, features, boxes, output)
    }

    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()> {
        ops::roi_align::backward(self, shape, grad_output, boxes, grad_features)
    }

    // ---- normalisation and the loss reductions ---------------------------------------------

    fn l2_normalize_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        norms: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        ops::rows::l2_normalize_forward(self, x, y, norms, rows, cols)
    }

    fn l2_normalize_backward(
        &self,
        y: &Self::Buffer,
        norms: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        ops::rows::l2_normalize_backward(self, y, norms, grad_y, grad_x, rows, cols)
    }

    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()> {
        ops::rows::row_softmax(self, desc, x, y)
    }

    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        ops::rows::row_logsumexp(self, desc, x, out)
    }

    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        ops::rows::contrastive_rows(self, desc, logits, labels, loss)
    }

    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        ops::rows::soft_cross_entropy(self, desc, grad_scale, logits, targets, loss)
    }

    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        ops::rows::softmax_cross_entropy(self, desc, grad_scale, logits, labels, loss)
    }

    // ---- optimisation ----------------------------------------------------------------------

    fn sgd_momentum_update(
        &self,
        params: &SgdParams,
        weights: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        ops::optim::sgd_momentum_update(self, params, weights, grads, velocity, len)
    }

    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        ops::optim::ema_update(self, momentum, source, target, len)
    }
}
