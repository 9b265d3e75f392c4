//! The scalar oracle: [`ReferenceBackend`] implements every [`crate::Backend`] kernel with plain
//! loops, accumulating in f64, following the trait docs (PyTorch semantics) to the letter.
//!
//! Every other backend is tested against it, so it favours being obviously right over being
//! fast: one free function per kernel, forward and backward side by side, no tiling, no
//! threads. `ReferenceBackend<f64>` is also what finite-difference checks and the comparison
//! with PyTorch float64 values (tests/tests/reference_vs_pytorch.rs) run on.
//!
//! Each kernel validates every buffer through the `desc` checks before touching it, so indexing
//! afterwards cannot go out of bounds; value errors (NaN, zero-norm rows, bad labels) go to the
//! fault slot, never a panic.

mod backend_impl;
mod batch_norm;
mod bounds;
mod buffer;
mod conv;
mod elementwise;
mod fault;
mod gemm;
mod memory;
mod optim;
mod pool;
mod roi_align;
mod rows;

pub use buffer::{ReferenceBuffer, ReferenceIndexBuffer};
pub use fault::FaultSlot;

use crate::element::Element;
use core::marker::PhantomData;

/// The plain scalar backend over host memory (`Vec<T>` buffers), generic over the element type:
/// `ReferenceBackend<f32>` mirrors a device backend's storage precision,
/// `ReferenceBackend<f64>` is exact enough to check PyTorch float64 values to 1e-10.
#[derive(Debug, Default)]
pub struct ReferenceBackend<T: Element> {
    faults: FaultSlot,
    element: PhantomData<T>,
}

impl<T: Element> ReferenceBackend<T> {
    pub fn new() -> Self {
        ReferenceBackend {
            faults: FaultSlot::new(),
            element: PhantomData,
        }
    }
}
