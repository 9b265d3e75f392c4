//! dscl-cpu: the CPU backend of dscl.
//!
//! [`CpuBackend`] implements every kernel of [`dscl_core::Backend`] for `f32`.
//!
//! - Feature `std` (default): heap buffers, rayon threads (every kernel that pays is split over
//!   rows, channels, images or element chunks), runtime SIMD dispatch (AVX2 / AVX-512), and the
//!   `gemm` crate's packed GEMM with its own rayon parallelism.
//! - Feature `alloc` (no `std`): heap buffers and the `gemm` crate, single-threaded.
//! - Neither: no global allocator is needed. Every buffer is carved out of caller-supplied
//!   arenas ([`CpuBackend::from_arena`]) and GEMM runs on a portable blocked kernel (the `gemm`
//!   crate allocates its packing buffers on the heap, so it is not linked in this build).
//!
//! Value faults (NaN, zero-norm rows, labels out of range) go to a fault slot, first fault
//! wins, read and cleared with [`Backend::take_fault`]. Shapes are checked with the
//! descriptors' `check` methods; no input makes a kernel panic.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod batch_norm;
mod conv;
mod elementwise;
mod gemm;
mod optim;
mod parallel;
mod pool;
mod roi_align;
mod rows;
mod simd;

#[cfg(feature = "alloc")]
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt::{self, Write as _};
use core::ops::{Deref, DerefMut};

use dscl_core::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, GemmDesc, PoolShape, RoiAlignShape, RowsDesc,
    SgdParams,
};
use dscl_core::error::check_range;
use dscl_core::{Backend, BufferLen, Error, Fault, Result};

use parallel::Par;

/// A buffer of the CPU backend: a slice of an arena, or (with `alloc`) a heap vector.
/// Dereferences to a slice, so host code can read and write it without copies.
pub struct CpuBuffer<'a, T> {
    storage: Storage<'a, T>,
}

enum Storage<'a, T> {
    Arena(&'a mut [T]),
    #[cfg(feature = "alloc")]
    Heap(Vec<T>),
}

impl<'a, T> CpuBuffer<'a, T> {
    /// Wraps a slice the caller owns as a buffer (no copy).
    pub fn from_slice(slice: &'a mut [T]) -> Self {
        CpuBuffer {
            storage: Storage::Arena(slice),
        }
    }

    /// Wraps a heap vector as a buffer (no copy).
    #[cfg(feature = "alloc")]
    pub fn from_vec(v: Vec<T>) -> Self {
        CpuBuffer {
            storage: Storage::Heap(v),
        }
    }

    pub fn as_slice(&self) -> &[T] {
        match &self.storage {
            Storage::Arena(s) => s,
            #[cfg(feature = "alloc")]
            Storage::Heap(v) => v,
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Arena(s) => s,
            #[cfg(feature = "alloc")]
            Storage::Heap(v) => v,
        }
    }

    /// True when the buffer lives in an arena (false: on the heap).
    pub fn is_arena(&self) -> bool {
        matches!(self.storage, Storage::Arena(_))
    }
}

impl<T> Deref for CpuBuffer<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> DerefMut for CpuBuffer<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T> BufferLen for CpuBuffer<'_, T> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

impl<T> fmt::Debug for CpuBuffer<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuBuffer")
            .field("len", &self.as_slice().len())
            .field("arena", &self.is_arena())
            .finish()
    }
}

/// The CPU backend. Not `Sync` (the arenas and the fault slot are cells); kernels share work
/// with the backend's own threads internally.
pub struct CpuBackend<'a> {
    arena: Cell<&'a mut [f32]>,
    index_arena: Cell<&'a mut [u32]>,
    arena_capacity: usize,
    index_arena_capacity: usize,
    /// Allocations go to the heap (constructors without an arena).
    heap: bool,
    fault: Cell<Option<Fault>>,
    threads: usize,
    #[cfg(feature = "std")]
    pool: Option<rayon::ThreadPool>,
    name: heapless::String<48>,
}

impl fmt::Debug for CpuBackend<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuBackend")
            .field("name", &self.name.as_str())
            .field("heap", &self.heap)
            .field("arena_used", &self.arena_used())
            .field("arena_capacity", &self.arena_capacity)
            .field("index_arena_used", &self.index_arena_used())
            .field("index_arena_capacity", &self.index_arena_capacity)
            .finish()
    }
}

#[cfg(feature = "std")]
fn build_pool(threads: usize) -> Result<Option<rayon::ThreadPool>> {
    if threads <= 1 {
        return Ok(None);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("dscl-cpu-{i}"))
        .build()
        .map(Some)
        .map_err(|_| Error::Device {
            what: "cpu thread pool",
            code: -1,
        })
}

#[cfg(feature = "std")]
fn default_threads() -> usize {
    rayon::current_num_threads().max(1)
}

impl<'a> CpuBackend<'a> {
    fn build(
        arena: &'a mut [f32],
        index_arena: &'a mut [u32],
        heap: bool,
        threads: usize,
        #[cfg(feature = "std")] pool: Option<rayon::ThreadPool>,
    ) -> Self {
        let mut name = heapless::String::new();
        let _ = write!(
            name,
            "cpu ({} thread{})",
            threads,
            if threads == 1 { "" } else { "s" }
        );
        CpuBackend {
            arena_capacity: arena.len(),
            index_arena_capacity: index_arena.len(),
            arena: Cell::new(arena),
            index_arena: Cell::new(index_arena),
            heap,
            fault: Cell::new(None),
            threads,
            #[cfg(feature = "std")]
            pool,
            name,
        }
    }

    /// A backend whose buffers are carved out of `arena` (elements) and `index_arena` (labels,
    /// argmax), in order, never freed; `alloc` past the end returns `Error::OutOfMemory`.
    /// Needs no allocator. With `std` kernels use rayon's global pool (all cores).
    pub fn from_arena(arena: &'a mut [f32], index_arena: &'a mut [u32]) -> Self {
        #[cfg(feature = "std")]
        {
            Self::build(arena, index_arena, false, default_threads(), None)
        }
        #[cfg(not(feature = "std"))]
        {
            Self::build(arena, index_arena, false, 1)
        }
    }

    /// An arena backend on a dedicated pool of `threads` threads (1 = single-threaded).
    #[cfg(feature = "std")]
    pub fn from_arena_with_threads(
        arena: &'a mut [f32],
        index_arena: &'a mut [u32],
        threads: usize,
    ) -> Result<Self> {
        dscl_core::error::ensure(threads >= 1, "cpu threads", "must be at least 1")?;
        let pool = build_pool(threads)?;
        Ok(Self::build(arena, index_arena, false, threads, pool))
    }

    /// Worker threads the kernels use (1 without `std`).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// True when buffers come from the heap, false when from an arena.
    pub fn is_heap(&self) -> bool {
        self.heap
    }

    /// Elements of the `f32` arena handed out so far (0 for a heap backend).
    pub fn arena_used(&self) -> usize {
        self.arena_capacity - self.arena_remaining()
    }

    /// Elements of the `f32` arena still free.
    pub fn arena_remaining(&self) -> usize {
        let s = self.arena.take();
        let n = s.len();
        self.arena.set(s);
        n
    }

    /// Size of the `f32` arena given at construction.
    pub fn arena_capacity(&self) -> usize {
        self.arena_capacity
    }

    /// Elements of the `u32` arena handed out so far.
    pub fn index_arena_used(&self) -> usize {
        self.index_arena_capacity - self.index_arena_remaining()
    }

    /// Elements of the `u32` arena still free.
    pub fn index_arena_remaining(&self) -> usize {
        let s = self.index_arena.take();
        let n = s.len();
        self.index_arena.set(s);
        n
    }

    /// Size of the `u32` arena given at construction.
    pub fn index_arena_capacity(&self) -> usize {
        self.index_arena_capacity
    }

    /// The threading context of a kernel call.
    fn par(&self) -> Par<'_> {
        Par {
            threads: self.threads,
            #[cfg(feature = "std")]
            pool: self.pool.as_ref(),
            #[cfg(not(feature = "std"))]
            _pool: core::marker::PhantomData,
        }
    }

    /// Keeps the first fault recorded since the last `take_fault`.
    fn record(&self, fault: Option<Fault>) {
        if let Some(f) = fault {
            if self.fault.get().is_none() {
                self.fault.set(Some(f));
            }
        }
    }
}

#[cfg(feature = "alloc")]
impl CpuBackend<'static> {
    /// A heap backend; with `std` its kernels use rayon's global pool (all cores).
    pub fn new() -> Self {
        #[cfg(feature = "std")]
        {
            Self::build(&mut [], &mut [], true, default_threads(), None)
        }
        #[cfg(not(feature = "std"))]
        {
            Self::build(&mut [], &mut [], true, 1)
        }
    }

    /// A heap backend on a dedicated pool of `threads` threads (1 = single-threaded).
    #[cfg(feature = "std")]
    pub fn with_threads(threads: usize) -> Result<Self> {
        dscl_core::error::ensure(threads >= 1, "cpu threads", "must be at least 1")?;
        let pool = build_pool(threads)?;
        Ok(Self::build(&mut [], &mut [], true, threads, pool))
    }
}

#[cfg(feature = "alloc")]
impl Default for CpuBackend<'static> {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes `len` zeroed elements from the front of an arena.
fn carve<'a, T: Copy + Default>(
    cell: &Cell<&'a mut [T]>,
    len: usize,
    what: &'static str,
) -> Result<&'a mut [T]> {
    let free = cell.take();
    if len > free.len() {
        let available = free.len();
        cell.set(free);
        return Err(Error::OutOfMemory {
            what,
            requested: len,
            available,
        });
    }
    let (head, tail) = free.split_at_mut(len);
    cell.set(tail);
    head.fill(T::default());
    Ok(head)
}

#[cfg(feature = "alloc")]
fn heap_vec<T: Copy + Default>(len: usize, what: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
        what,
        requested: len,
        available: 0,
    })?;
    v.resize(len, T::default());
    Ok(v)
}

impl<'a> Backend for CpuBackend<'a> {
    type Elem = f32;
    type Buffer = CpuBuffer<'a, f32>;
    type IndexBuffer = CpuBuffer<'a, u32>;

    fn device_name(&self) -> &str {
        self.name.as_str()
    }

    // ---- memory ----------------------------------------------------------------------------

    fn alloc(&self, len: usize) -> Result<Self::Buffer> {
        #[cfg(feature = "alloc")]
        if self.heap {
            return Ok(CpuBuffer::from_vec(heap_vec(len, "alloc")?));
        }
        Ok(CpuBuffer::from_slice(carve(&self.arena, len, "alloc")?))
    }

    fn alloc_index(&self, len: usize) -> Result<Self::IndexBuffer> {
        #[cfg(feature = "alloc")]
        if self.heap {
            return Ok(CpuBuffer::from_vec(heap_vec(len, "alloc_index")?));
        }
        Ok(CpuBuffer::from_slice(carve(
            &self.index_arena,
            len,
            "alloc_index",
        )?))
    }

    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[f32]) -> Result<()> {
        let end = check_range("upload", dst.len(), offset, src.len())?;
        dst[offset..end].copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [f32]) -> Result<()> {
        let end = check_range("download", src.len(), offset, dst.len())?;
        dst.copy_from_slice(&src[offset..end]);
        Ok(())
    }

    fn upload_index(&self, dst: &mut Self::IndexBuffer, offset: usize, src: &[u32]) -> Result<()> {
        let end = check_range("upload_index", dst.len(), offset, src.len())?;
        dst[offset..end].copy_from_slice(src);
        Ok(())
    }

    fn download_index(
        &self,
        src: &Self::IndexBuffer,
        offset: usize,
        dst: &mut [u32],
    ) -> Result<()> {
        let end = check_range("download_index", src.len(), offset, dst.len())?;
        dst.copy_from_slice(&src[offset..end]);
        Ok(())
    }

    fn take_fault(&self) -> Result<Option<Fault>> {
        Ok(self.fault.take())
    }

    // ---- elementwise -----------------------------------------------------------------------

    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()> {
        elementwise::fill(&self.par(), x, offset, len, value)
    }

    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        elementwise::copy(
            &self.par(),
            src.as_slice(),
            src_offset,
            dst.as_mut_slice(),
            dst_offset,
            len,
        )
    }

    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        elementwise::copy(
            &self.par(),
            src.as_slice(),
            src_offset,
            dst.as_mut_slice(),
            dst_offset,
            len,
        )
    }

    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()> {
        elementwise::scale(&self.par(), x, len, alpha)
    }

    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        elementwise::axpy(&self.par(), alpha, x, y, len)
    }

    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        elementwise::add(&self.par(), a, b, out, len)
    }

    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()> {
        elementwise::sum(&self.par(), x, len, scale, out, offset)
    }

    // ---- dense -----------------------------------------------------------------------------

    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()> {
        gemm::gemm(&self.par(), desc, a, b, c)
    }

    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        elementwise::bias_add(&self.par(), x, bias, rows, cols)
    }

    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        elementwise::bias_backward(&self.par(), grad_out, grad_bias, rows, cols)
    }

    // ---- convolution -----------------------------------------------------------------------

    fn conv2d_workspace_len(&self, shape: &Conv2dShape) -> usize {
        conv::workspace_len(self.threads, shape)
    }

    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv::forward(&self.par(), shape, input, weight, output, workspace)
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv::backward_data(
            &self.par(),
            shape,
            grad_output,
            weight,
            grad_input,
            workspace,
        )
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv::backward_filter(
            &self.par(),
            shape,
            input,
            grad_output,
            grad_weight,
            workspace,
        )
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
        batch_norm::forward_train(
            &self.par(),
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
        batch_norm::forward_inference(
            &self.par(),
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
        batch_norm::backward(
            &self.par(),
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
        elementwise::relu_forward(&self.par(), x, y, len)
    }

    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        elementwise::relu_backward(&self.par(), y, grad_y, grad_x, len)
    }

    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()> {
        let fault = pool::max_forward(&self.par(), shape, x, y, argmax)?;
        self.record(fault);
        Ok(())
    }

    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()> {
        pool::max_backward(&self.par(), shape, grad_y, argmax, grad_x)
    }

    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        pool::global_avg_forward(&self.par(), x, y, batch, channels, spatial)
    }

    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        pool::global_avg_backward(&self.par(), grad_y, grad_x, batch, channels, spatial)
    }

    fn roi_align_forward(
        &self,
        shape: &RoiAlignShape,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        output: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = roi_align::forward(&self.par(), shape, features, boxes, output)?;
        self.record(fault);
        Ok(())
    }

    fn roi_align_backward(
        &self,
        shape: &RoiAlignShape,
        grad_output: &Self::Buffer,
        boxes: &Self::Buffer,
        grad_features: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = roi_align::backward(&self.par(), shape, grad_output, boxes, grad_features)?;
        self.record(fault);
        Ok(())
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
        let fault = rows::l2_normalize_forward(&self.par(), x, y, norms, rows, cols)?;
        self.record(fault);
        Ok(())
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
        rows::l2_normalize_backward(&self.par(), y, norms, grad_y, grad_x, rows, cols)
    }

    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()> {
        let fault = rows::softmax(&self.par(), desc, x, y)?;
        self.record(fault);
        Ok(())
    }

    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = rows::logsumexp(&self.par(), desc, x, out)?;
        self.record(fault);
        Ok(())
    }

    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = rows::contrastive(&self.par(), desc, logits, labels, loss)?;
        self.record(fault);
        Ok(())
    }

    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = rows::soft_cross_entropy(&self.par(), desc, grad_scale, logits, targets, loss)?;
        self.record(fault);
        Ok(())
    }

    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        let fault =
            rows::softmax_cross_entropy(&self.par(), desc, grad_scale, logits, labels, loss)?;
        self.record(fault);
        Ok(())
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
        optim::sgd_momentum(&self.par(), params, weights, grads, velocity, len)
    }

    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        optim::ema(&self.par(), momentum, source, target, len)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests;
