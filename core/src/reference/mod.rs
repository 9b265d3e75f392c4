//! The scalar oracle: [`ReferenceBackend`] implements every [`crate::Backend`] kernel with plain
//! loops, accumulating in f64, following the trait docs (PyTorch semantics) to the letter.
//!
//! Every other backend is tested against it, so it favours being obviously right over being
//! fast: one free function per kernel, forward and backward side by side, no tiling, no
//! threads. Each family file ends with its family's implementation for [`ReferenceBackend`],
//! which hands its buffers to those functions (a buffer derefs to its slice).
//! `ReferenceBackend<f64>` is also what finite-difference checks and the comparison with
//! PyTorch float64 values (tests/tests/reference_vs_pytorch.rs) run on.
//!
//! Each kernel validates every buffer through the `desc` checks before touching it, so indexing
//! afterwards cannot go out of bounds; value errors (NaN, zero-norm rows, bad labels) go to the
//! fault slot, never a panic.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::prelude::*;
    use crate::error::{Error, FaultKind};

    #[test]
    fn memory_round_trip_through_the_trait() {
        let backend = ReferenceBackend::<f32>::new();
        let mut buffer = backend.alloc(4).unwrap();
        assert_eq!(buffer.len(), 4);
        backend.upload(&mut buffer, 1, &[1.0, 2.0]).unwrap();
        let mut host = [9.0f32; 3];
        backend.download(&buffer, 1, &mut host).unwrap();
        assert_eq!(host, [1.0, 2.0, 0.0]);
        assert!(matches!(
            backend.download(&buffer, 2, &mut host),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut labels = backend.alloc_index(2).unwrap();
        backend.upload_index(&mut labels, 0, &[3, 4]).unwrap();
        let mut copy = backend.alloc_index(3).unwrap();
        backend.copy_index(&labels, 0, &mut copy, 1, 2).unwrap();
        assert_eq!(copy.as_slice(), &[0, 3, 4]);
    }

    #[test]
    fn faults_surface_through_take_fault() {
        let backend = ReferenceBackend::<f64>::new();
        let x = ReferenceBuffer::from_vec(alloc::vec![0.0; 4]);
        let mut y = backend.alloc(4).unwrap();
        let mut norms = backend.alloc(2).unwrap();
        backend
            .l2_normalize_forward(&x, &mut y, &mut norms, 2, 2)
            .unwrap();
        let fault = backend.take_fault().unwrap().unwrap();
        assert_eq!((fault.kind, fault.index), (FaultKind::ZeroNormRow, 0));
        assert_eq!(backend.take_fault().unwrap(), None);
    }
}
