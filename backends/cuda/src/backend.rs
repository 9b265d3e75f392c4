//! [`CudaBackend`]: the Backend trait on one GPU. Every kernel is launched on one stream, so
//! work runs in the order it was recorded and nothing waits for the device except a download
//! or a fault check (a training step reads back only its loss).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::sys::cublasMath_t;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig};
use dscl_core::backend::MemoryOps;
use dscl_core::error::check_range;
use dscl_core::{BufferLen, Error, Fault, FaultKind, Result};
use half::bf16;

use crate::conv_cudnn::ConvEngine;
use crate::device::{CudaDevice, InitError};
use crate::kernels::{self, KernelImage};
use crate::ops::bf16::BF16_SLOTS;
use crate::precision::Precision;

/// A buffer of `T` (f32 or u32) in device memory.
pub struct CudaBuffer<T> {
    pub(crate) slice: CudaSlice<T>,
    pub(crate) len: usize,
}

impl<T> BufferLen for CudaBuffer<T> {
    fn len(&self) -> usize {
        self.len
    }
}

impl<T> std::fmt::Debug for CudaBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuffer({} elements)", self.len)
    }
}

/// Words of the fault slot: `FaultSlot` of `kernels/common.cuh` (flag, kind, index, value).
pub(crate) const FAULT_WORDS: usize = 4;

/// Threads per block of every kernel (`ROW_THREADS` in `kernels/common.cuh`).
pub(crate) const THREADS: u32 = 256;
/// Most blocks a grid-stride kernel is launched with: enough to fill any GPU.
const MAX_BLOCKS: usize = 1 << 16;

/// The CUDA backend: one device, one stream, the compiled kernels, cuBLAS, cuDNN when present,
/// and the fault slot.
pub struct CudaBackend {
    device: CudaDevice,
    /// The device, the convolution path and the precision, for logs and benchmark lines.
    description: String,
    pub(crate) precision: Precision,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    pub(crate) convolutions: ConvEngine,
    /// Rounded copies for bf16 products (one-element placeholders until first used).
    pub(crate) bf16_scratch: [RefCell<CudaSlice<bf16>>; BF16_SLOTS],
    /// What the kernels were compiled to (shared by every backend of the process).
    kernel_image: Arc<KernelImage>,
    functions: HashMap<&'static str, CudaFunction>,
    /// `FaultSlot` of `common.cuh` (flag, kind, index, value). Kernels write it through a shared
    /// reference: every launch is on `stream`, which orders them.
    pub(crate) fault: RefCell<CudaSlice<u32>>,
    /// Device staging for a download and the fault slot in one transfer (`readback.rs`):
    /// grow-only, its host twin likewise.
    pub(crate) readback: RefCell<CudaSlice<u32>>,
    pub(crate) readback_host: RefCell<Vec<u32>>,
}

/// Where a new backend's convolutions run.
enum ConvLibrary {
    CudnnIfPresent,
    DirectKernels,
}

/// A driver error as the library's.
pub(crate) fn driver(what: &'static str, e: cudarc::driver::DriverError) -> Error {
    Error::Device {
        what,
        code: e.0 as i64,
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal` at fp32 and loads the kernels for it (compiled once per process).
    pub fn new(ordinal: usize) -> std::result::Result<Self, InitError> {
        Self::with_precision(ordinal, Precision::Fp32)
    }

    /// Opens GPU `ordinal` with GEMM and convolutions at `precision`.
    pub fn with_precision(
        ordinal: usize,
        precision: Precision,
    ) -> std::result::Result<Self, InitError> {
        let device = CudaDevice::open(ordinal)?;
        let context = device.context().clone();
        let (module, image) = kernels::load(&context)?;
        let mut functions = HashMap::new();
        for &name in kernels::ENTRY_POINTS {
            let f = module
                .load_function(name)
                .map_err(|e| InitError(format!("kernel `{name}` is missing: {e}")))?;
            functions.insert(name, f);
        }
        Self::on_stream(
            device,
            image,
            functions,
            context.default_stream(),
            precision,
            ConvLibrary::CudnnIfPresent,
        )
    }

    /// Another backend on the same device, compiled kernels and precision, with its own
    /// stream, library handles and fault slot (no recompilation).
    pub fn fresh(&self) -> std::result::Result<Self, InitError> {
        let library = match self.convolutions {
            ConvEngine::Direct => ConvLibrary::DirectKernels,
            _ => ConvLibrary::CudnnIfPresent,
        };
        self.fresh_with(library)
    }

    /// As [`Self::fresh`], but convolving with the backend's own direct kernels even where
    /// cuDNN is present (the conformance suite checks both paths).
    pub fn fresh_with_direct_convolutions(&self) -> std::result::Result<Self, InitError> {
        self.fresh_with(ConvLibrary::DirectKernels)
    }

    fn fresh_with(&self, library: ConvLibrary) -> std::result::Result<Self, InitError> {
        let stream = self
            .device
            .context()
            .new_stream()
            .map_err(|e| InitError(format!("could not create a CUDA stream: {e}")))?;
        Self::on_stream(
            self.device.clone(),
            self.kernel_image.clone(),
            self.functions.clone(),
            stream,
            self.precision,
            library,
        )
    }

    /// A backend launching `functions` (from `kernel_image`) on `stream`, with its own cuBLAS
    /// and cuDNN handles, bf16 scratch and fault slot.
    fn on_stream(
        device: CudaDevice,
        kernel_image: Arc<KernelImage>,
        functions: HashMap<&'static str, CudaFunction>,
        stream: Arc<CudaStream>,
        precision: Precision,
        library: ConvLibrary,
    ) -> std::result::Result<Self, InitError> {
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| InitError(format!("could not start cuBLAS: {e}")))?;
        if precision == Precision::Tf32 {
            // SAFETY: the handle is live (owned by `blas`); the mode is one of cuBLAS's enum.
            unsafe {
                cudarc::cublas::sys::cublasSetMathMode(
                    *blas.handle(),
                    cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH,
                )
            }
            .result()
            .map_err(|e| InitError(format!("cuBLAS refused the TF32 math mode: {e}")))?;
        }
        let (convolutions, conv_path) = match library {
            ConvLibrary::CudnnIfPresent => ConvEngine::open(&stream, precision),
            ConvLibrary::DirectKernels => (ConvEngine::Direct, "direct convolutions"),
        };
        let alloc_err = |e| InitError(format!("could not allocate the backend's scratch: {e}"));
        let fault = stream.alloc_zeros::<u32>(FAULT_WORDS).map_err(alloc_err)?;
        // A step's read: four loss totals and the slot.
        let readback = stream
            .alloc_zeros::<u32>(4 + FAULT_WORDS)
            .map_err(alloc_err)?;
        let placeholder = || stream.alloc_zeros::<bf16>(1).map(RefCell::new);
        let bf16_scratch = [
            placeholder().map_err(alloc_err)?,
            placeholder().map_err(alloc_err)?,
            placeholder().map_err(alloc_err)?,
        ];
        Ok(CudaBackend {
            description: format!(
                "{} ({conv_path}, {precision}, kernels: {} from NVRTC {}.{})",
                device.name(),
                kernel_image.target,
                kernel_image.nvrtc.0,
                kernel_image.nvrtc.1
            ),
            device,
            kernel_image,
            precision,
            stream,
            blas,
            convolutions,
            bf16_scratch,
            functions,
            fault: RefCell::new(fault),
            readback: RefCell::new(readback),
            readback_host: RefCell::new(Vec::with_capacity(4 + FAULT_WORDS)),
        })
    }

    /// The device, its convolution path and the precision, as `device_name` reports them.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The precision of GEMM and convolutions.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// Waits until every launched kernel has run (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| driver("synchronize", e))
    }

    pub(crate) fn function(&self, name: &'static str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or(Error::InvalidArgument {
            what: name,
            reason: "kernel not compiled (dscl-cuda bug)",
        })
    }

    pub(crate) fn alloc_raw<T>(&self, len: usize) -> Result<CudaBuffer<T>>
    where
        T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits,
    {
        let slice = self
            .stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(|_| Error::OutOfMemory {
                what: "cuda alloc",
                requested: len,
                available: 0,
            })?;
        Ok(CudaBuffer { slice, len })
    }

    pub(crate) fn write<T: cudarc::driver::DeviceRepr>(
        &self,
        what: &'static str,
        dst: &mut CudaBuffer<T>,
        offset: usize,
        src: &[T],
    ) -> Result<()> {
        let end = check_range(what, dst.len, offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        let mut view = dst.slice.slice_mut(offset..end);
        self.stream
            .memcpy_htod(src, &mut view)
            .map_err(|e| driver(what, e))
    }

    pub(crate) fn read<T: cudarc::driver::DeviceRepr>(
        &self,
        what: &'static str,
        src: &CudaBuffer<T>,
        offset: usize,
        dst: &mut [T],
    ) -> Result<()> {
        let end = check_range(what, src.len, offset, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        let view = src.slice.slice(offset..end);
        self.stream
            .memcpy_dtoh(&view, dst)
            .map_err(|e| driver(what, e))
    }

    /// Reads and clears the fault slot (waits for the stream).
    pub(crate) fn take_fault_slot(&self) -> Result<Option<Fault>> {
        let mut words = [0u32; FAULT_WORDS];
        self.stream
            .memcpy_dtoh(&*self.fault.borrow(), &mut words)
            .map_err(|e| driver("take_fault", e))?;
        self.clear_fault_slot(words)
    }

    /// The fault that the slot's `words` record, queueing the slot's clearing when there is
    /// one (the next kernel that faults then finds it clear).
    pub(crate) fn clear_fault_slot(&self, words: [u32; FAULT_WORDS]) -> Result<Option<Fault>> {
        if words[0] == 0 {
            return Ok(None);
        }
        self.stream
            .memset_zeros(&mut *self.fault.borrow_mut())
            .map_err(|e| driver("take_fault", e))?;
        Ok(Some(Fault {
            kind: match words[1] {
                2 => FaultKind::ZeroNormRow,
                3 => FaultKind::LabelOutOfRange,
                _ => FaultKind::NonFinite,
            },
            index: words[2] as usize,
            value: words[3],
        }))
    }
}

pub(crate) fn too_large(what: &'static str) -> Error {
    Error::InvalidArgument {
        what,
        reason: "size exceeds what the CUDA kernels index",
    }
}

/// A grid-stride launch over `n` items.
pub(crate) fn grid_for(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32,
            1,
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The most blocks a grid's x dimension may have (CUDA's limit on every GPU since Kepler).
const MAX_GRID_X: usize = (1 << 31) - 1;

/// One block per item (row, channel, plane) for `n` items; more than a grid holds is an error.
pub(crate) fn block_per(what: &'static str, n: usize) -> Result<LaunchConfig> {
    if n > MAX_GRID_X {
        return Err(too_large(what));
    }
    Ok(LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Launches kernel `$name` on the backend's stream with `$cfg` and the given arguments: borrowed
/// buffer views (and the fault slot) in the kernel's order, then its family's argument struct
/// (`kernel_args.rs`), which carries every scalar.
macro_rules! launch {
    ($be:expr, $name:literal, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        use cudarc::driver::PushKernelArg;
        let function = $be.function($name)?;
        let mut builder = $be.stream.launch_builder(function);
        $( builder.arg($arg); )*
        // SAFETY: the argument list matches the kernel's parameters in `kernels/*.cu` (types and
        // order; the argument struct's layout is asserted against the `.cu` declaration when the
        // kernels compile), and the caller has checked every buffer against the sizes the
        // kernel indexes.
        unsafe { builder.launch($cfg) }
            .map(|_| ())
            .map_err(|e| $crate::backend::driver($name, e))
    }};
}
pub(crate) use launch;

impl MemoryOps for CudaBackend {
    type Elem = f32;

    type Buffer = CudaBuffer<f32>;

    type IndexBuffer = CudaBuffer<u32>;

    fn device_name(&self) -> &str {
        self.description()
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer> {
        self.alloc_raw(len)
    }

    fn alloc_index(&self, len: usize) -> Result<Self::IndexBuffer> {
        self.alloc_raw(len)
    }

    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[f32]) -> Result<()> {
        self.write("upload", dst, offset, src)
    }

    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [f32]) -> Result<()> {
        self.read("download", src, offset, dst)
    }

    fn upload_index(&self, dst: &mut Self::IndexBuffer, offset: usize, src: &[u32]) -> Result<()> {
        self.write("upload_index", dst, offset, src)
    }

    fn download_index(
        &self,
        src: &Self::IndexBuffer,
        offset: usize,
        dst: &mut [u32],
    ) -> Result<()> {
        self.read("download_index", src, offset, dst)
    }

    fn take_fault(&self) -> Result<Option<Fault>> {
        self.take_fault_slot()
    }

    fn download_with_fault(
        &self,
        src: &Self::Buffer,
        offset: usize,
        dst: &mut [f32],
    ) -> Result<Option<Fault>> {
        self.read_with_fault("download", src, offset, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grid's x dimension holds at most 2^31 - 1 blocks: one more is refused on the host, not
    /// left to fail at launch.
    #[test]
    fn one_block_per_item_stops_at_the_grid_limit() {
        let at_limit = block_per("rows", MAX_GRID_X).map(|cfg| cfg.grid_dim.0);
        assert_eq!(at_limit.ok(), Some(0x7fff_ffff));
        assert!(block_per("rows", MAX_GRID_X + 1).is_err());
        assert!(block_per("rows", u32::MAX as usize).is_err());
        assert_eq!(grid_for(usize::MAX).grid_dim.0, MAX_BLOCKS as u32);
    }
}
