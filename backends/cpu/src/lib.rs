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
//! wins, read and cleared with [`MemoryOps::take_fault`](dscl_core::backend::MemoryOps::take_fault). Shapes are checked with the
//! descriptors' `check` methods; no input makes a kernel panic.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod batch_norm;
mod conv;
mod elementwise;
mod gemm;
mod memory;
mod optim;
mod parallel;
mod pool;
mod roi_align;
mod rows;
mod simd;

use core::cell::Cell;
use core::fmt::{self, Write as _};

use dscl_core::Fault;
#[cfg(feature = "std")]
use dscl_core::{Error, Result};

pub use memory::CpuBuffer;
use parallel::Par;

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

#[cfg(all(test, feature = "std"))]
mod tests;
