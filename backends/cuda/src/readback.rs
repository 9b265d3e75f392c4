//! A download and the fault slot together: the one read of a training step
//! ([`dscl_core::Backend::download_with_fault`]).

use cudarc::driver::DeviceRepr;
use dscl_core::{Fault, Result};

use crate::backend::{CudaBackend, CudaBuffer};

impl CudaBackend {
    /// Copies `src[offset..offset + dst.len()]` into `dst`, then takes and clears the fault
    /// slot; the host waits for the device once.
    ///
    /// Two copies, one wait: `dst` is the caller's pageable memory, and a device-to-host copy
    /// into pageable memory returns only once it has completed (`cuMemcpyDtoHAsync`'s
    /// documented behaviour for pageable destinations; cudarc 0.19's `memcpy_dtoh` into a plain
    /// slice is that call, with no staging of its own). So the data copy is the wait: it runs
    /// after, and so waits for, every kernel queued on the stream. The slot's 16-byte copy that
    /// follows finds the stream empty: it costs a transfer's latency (microseconds), not a
    /// pipeline drain. Queuing both copies into pinned staging and synchronizing once would save
    /// only that latency, for a pinned buffer per backend; this keeps none. (When the slot is
    /// set, clearing it is queued, not waited for.)
    pub(crate) fn read_with_fault<T: DeviceRepr>(
        &self,
        what: &'static str,
        src: &CudaBuffer<T>,
        offset: usize,
        dst: &mut [T],
    ) -> Result<Option<Fault>> {
        self.read(what, src, offset, dst)?;
        self.take_fault_slot()
    }
}
