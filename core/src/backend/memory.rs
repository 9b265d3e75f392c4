//! Memory: the backend's buffers, host copies to and from them, and the fault slot.
//!
//! Every other family builds on this one: it names the element type and the two buffer types.

use super::BufferLen;
use crate::element::Element;
use crate::error::{Fault, Result};

pub trait MemoryOps {
    /// The floating-point type buffers hold and kernels compute in.
    type Elem: Element;

    /// A buffer of `Elem` on the device.
    type Buffer: BufferLen;

    /// A buffer of `u32` on the device.
    type IndexBuffer: BufferLen;

    /// Human-readable device name (adapter name, GPU model, "cpu (2 threads)").
    fn device_name(&self) -> &str;

    /// A new buffer of `len` elements, zero-filled. `Error::OutOfMemory` when it does not fit.
    fn alloc(&self, len: usize) -> Result<Self::Buffer>;

    /// A new integer buffer of `len` elements, zero-filled.
    fn alloc_index(&self, len: usize) -> Result<Self::IndexBuffer>;

    /// Copies `src` into `dst[offset..offset + src.len()]`.
    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[Self::Elem]) -> Result<()>;

    /// Copies `src[offset..offset + dst.len()]` into `dst`; waits for pending work.
    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [Self::Elem]) -> Result<()>;

    /// Copies `src` into `dst[offset..offset + src.len()]`.
    fn upload_index(&self, dst: &mut Self::IndexBuffer, offset: usize, src: &[u32]) -> Result<()>;

    /// Copies `src[offset..offset + dst.len()]` into `dst`; waits for pending work.
    fn download_index(&self, src: &Self::IndexBuffer, offset: usize, dst: &mut [u32])
        -> Result<()>;

    /// Returns the first value fault recorded since the last call, and clears it. On a device
    /// this waits for pending work.
    fn take_fault(&self) -> Result<Option<Fault>>;

    /// [`Self::download`] and [`Self::take_fault`] in one wait for the device: copies
    /// `src[offset..offset + dst.len()]` into `dst`, then returns and clears the first fault
    /// recorded by the work queued before the call. A training step makes this its one read
    /// (its losses, their gradient probes and the fault slot together).
    ///
    /// The default does the two in turn, which is exact for a host backend and costs a device
    /// only a second copy from an idle queue; a device that can bring the slot back with the
    /// data overrides it.
    fn download_with_fault(
        &self,
        src: &Self::Buffer,
        offset: usize,
        dst: &mut [Self::Elem],
    ) -> Result<Option<Fault>> {
        self.download(src, offset, dst)?;
        self.take_fault()
    }
}
