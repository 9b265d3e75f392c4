//! A download and the fault slot together: the one read of a training step
//! ([`dscl_core::Backend::download_with_fault`]).
//!
//! The requested range and the slot's four words are copied on the device, in stream order,
//! into one staging buffer, and that buffer comes back in a single device-to-host copy: one
//! transfer and one wait. A copy into pageable memory returns only once it has completed
//! (`cuMemcpyDtoHAsync`'s documented behaviour; cudarc's `memcpy_dtoh` into a slice is that
//! call), so it is also the wait for every kernel queued before it.

use dscl_core::error::check_range;
use dscl_core::{Fault, Result};

use crate::backend::{driver, CudaBackend, CudaBuffer, FAULT_WORDS};

impl CudaBackend {
    /// Copies `src[offset..offset + dst.len()]` into `dst` and takes (and clears) the fault
    /// slot, with one transfer to the host.
    pub(crate) fn read_with_fault(
        &self,
        what: &'static str,
        src: &CudaBuffer<f32>,
        offset: usize,
        dst: &mut [f32],
    ) -> Result<Option<Fault>> {
        let end = check_range(what, src.len, offset, dst.len())?;
        let n = dst.len();
        let words = n + FAULT_WORDS;
        let mut staging = self.readback.borrow_mut();
        if staging.len() < words {
            *staging = self
                .stream
                .alloc_zeros::<u32>(words)
                .map_err(|e| driver(what, e))?;
        }
        if n > 0 {
            // SAFETY: f32 and u32 have one size and alignment, and every bit pattern is a
            // valid value of both; the staging buffer holds at least `n` words.
            let mut data = unsafe { staging.transmute_mut::<f32>(n) }.ok_or(
                dscl_core::Error::InvalidArgument {
                    what,
                    reason: "readback staging too short (dscl-cuda bug)",
                },
            )?;
            self.stream
                .memcpy_dtod(&src.slice.slice(offset..end), &mut data)
                .map_err(|e| driver(what, e))?;
        }
        self.stream
            .memcpy_dtod(&*self.fault.borrow(), &mut staging.slice_mut(n..words))
            .map_err(|e| driver(what, e))?;
        let mut host = self.readback_host.borrow_mut();
        host.resize(words, 0);
        self.stream
            .memcpy_dtoh(&staging.slice(..words), &mut host[..])
            .map_err(|e| driver(what, e))?;
        for (value, bits) in dst.iter_mut().zip(&host[..n]) {
            *value = f32::from_bits(*bits);
        }
        let mut slot = [0u32; FAULT_WORDS];
        slot.copy_from_slice(&host[n..words]);
        self.clear_fault_slot(slot)
    }
}
