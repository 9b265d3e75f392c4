//! The seam: the kernels every device implements, one trait per family, and [`Backend`] as
//! their sum. One method is one kernel launch.
//!
//! Each family is one file here, holding its descriptors (the shapes, and the argument checks
//! every implementation makes in one call before it launches anything) and its trait; each
//! backend implements the family in one file of its own (`memory`, `elementwise`, `dense`,
//! `conv`, `batch_norm`, `pool`, `roi_align`, `rows`, `optim`). Code generic over a device names `B: Backend`; code calling a concrete backend's
//! kernels imports the families with `use dscl_core::backend::prelude::*`.
//!
//! Conventions shared by every method:
//! - Buffers belong to the backend. Arguments are checked on the host against the descriptor
//!   before anything runs; a buffer may be longer than needed, never shorter.
//!   Shape errors are returned as `Error::ShapeMismatch` / `Error::InvalidArgument`.
//! - Errors in *values* (NaN, zero-norm rows, labels out of range) are recorded by the kernel
//!   in the backend's fault slot and read with [`MemoryOps::take_fault`] (or together with a
//!   download, [`MemoryOps::download_with_fault`]), so a device needs no host round trip per
//!   kernel. Each method's doc says which faults it records.
//! - Outputs are written (`=`) unless the doc says they accumulate (`+=`). Parameter-gradient
//!   outputs (`conv2d_backward_filter`, `batch_norm_backward`'s dgamma/dbeta, `bias_backward`)
//!   and `roi_align_backward` accumulate, so one gradient set can collect several passes.
//! - Scalars are passed as f64 and converted to the element type by the backend.
//! - Integer buffers hold `u32` (labels, max-pool argmax).
//! - Output buffers never alias inputs: the borrow checker enforces it.

/// Declares a kernel's buffers as a struct with one named field each, `$read` ones of type
/// `R` and `$write` ones of type `W`, and `$alias<'a, B>`, the struct over backend `B`'s
/// buffers (`&B::Buffer`, `&mut B::Buffer`) that the family's trait method takes. `map` sees
/// the same buffers through two functions, as a backend's host kernels take them as slices.
macro_rules! named_buffers {
    (
        $(#[$doc:meta])*
        $name:ident, $alias:ident {
            read: [$($read:ident),* $(,)?],
            write: [$($write:ident),* $(,)?] $(,)?
        }
    ) => {
        $(#[$doc])*
        ///
        /// `R` is the type of the buffers the kernel reads, `W` of those it writes.
        pub struct $name<R, W> {
            $(pub $read: R,)*
            $(pub $write: W,)*
        }

        #[doc = concat!("[`", stringify!($name), "`] over a backend's buffers.")]
        pub type $alias<'a, B> = $name<
            &'a <B as $crate::backend::MemoryOps>::Buffer,
            &'a mut <B as $crate::backend::MemoryOps>::Buffer,
        >;

        impl<R, W> $name<R, W> {
            /// The same buffers seen through `read` and `write` (a backend's buffers as slices).
            pub fn map<R2, W2>(
                self,
                read: impl Fn(R) -> R2,
                write: impl Fn(W) -> W2,
            ) -> $name<R2, W2> {
                $name {
                    $($read: read(self.$read),)*
                    $($write: write(self.$write),)*
                }
            }
        }
    };
}

pub mod batch_norm;
pub mod conv;
pub mod dense;
pub mod elementwise;
pub mod memory;
pub mod optim;
pub mod pool;
pub mod roi_align;
pub mod rows;

pub use batch_norm::BatchNormOps;
pub use conv::ConvOps;
pub use dense::DenseOps;
pub use elementwise::ElementwiseOps;
pub use memory::MemoryOps;
pub use optim::OptimOps;
pub use pool::PoolOps;
pub use roi_align::RoiAlignOps;
pub use rows::RowOps;

/// Every family trait, for code that calls a concrete backend's kernels.
pub mod prelude {
    pub use super::batch_norm::{
        BnBackward, BnBackwardBuffers, BnInference, BnInferenceBuffers, BnTrain, BnTrainBuffers,
    };
    pub use super::{
        Backend, BatchNormOps, BufferLen, ConvOps, DenseOps, ElementwiseOps, MemoryOps, OptimOps,
        PoolOps, RoiAlignOps, RowOps,
    };
}

/// A backend buffer reports its length in elements.
pub trait BufferLen {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A host slice is a buffer too: the reference backend's kernels and the
/// descriptors' checks take them.
impl<T> BufferLen for [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
}

/// A borrowed buffer, as the descriptors' checks see a kernel's named buffers.
impl<T: BufferLen + ?Sized> BufferLen for &T {
    fn len(&self) -> usize {
        (**self).len()
    }
}

impl<T: BufferLen + ?Sized> BufferLen for &mut T {
    fn len(&self) -> usize {
        (**self).len()
    }
}

/// A whole device: every kernel family. Implemented for any type that implements them all, so a
/// backend implements the families and never this trait.
pub trait Backend:
    MemoryOps
    + ElementwiseOps
    + DenseOps
    + ConvOps
    + BatchNormOps
    + PoolOps
    + RoiAlignOps
    + RowOps
    + OptimOps
{
}

impl<T> Backend for T where
    T: MemoryOps
        + ElementwiseOps
        + DenseOps
        + ConvOps
        + BatchNormOps
        + PoolOps
        + RoiAlignOps
        + RowOps
        + OptimOps
{
}

/// A product of dimensions that saturates instead of overflowing: an absurd shape then needs a
/// buffer no backend has, and the size check refuses it.
fn product(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
}

fn padded(extent: usize, padding: usize) -> usize {
    extent.saturating_add(padding.saturating_mul(2))
}

/// Output extent of a sliding window: `(extent + 2 * padding - kernel) / stride + 1`.
fn out_extent(extent: usize, padding: usize, kernel: usize, stride: usize) -> usize {
    padded(extent, padding).saturating_sub(kernel) / stride.max(1) + 1
}
