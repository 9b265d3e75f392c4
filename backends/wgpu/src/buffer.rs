//! Device buffers and the windows kernels bind them through.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::WgpuBackend;
use dscl_core::backend::MemoryOps;
use dscl_core::error::check_range;
use dscl_core::BufferLen;
use dscl_core::{Fault, FaultKind, Result};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A buffer of `T` (f32 or u32) in device memory.
pub struct WgpuBuffer<T> {
    pub(crate) raw: wgpu::Buffer,
    pub(crate) len: usize,
    /// Unique for the process: the bind-group cache's key (a wgpu handle has no stable id).
    pub(crate) id: u64,
    _elem: std::marker::PhantomData<T>,
}

impl<T> WgpuBuffer<T> {
    pub(crate) fn new(raw: wgpu::Buffer, len: usize) -> Self {
        WgpuBuffer {
            raw,
            len,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            _elem: std::marker::PhantomData,
        }
    }

    /// Elements the device allocation holds (`len` rounded up to whole vec4s): vector loads
    /// may read up to here.
    pub(crate) fn capacity(&self) -> usize {
        (self.raw.size() / 4) as usize
    }

    /// Elements `start..start + len` as a binding that starts at an aligned address at or below
    /// `start`; returns it and the element offset of `start` inside it.
    pub(crate) fn window(&self, start: usize, len: usize, align_bytes: u64) -> (Window<'_>, usize) {
        Window::around(&self.raw, self.id, self.len, start, len, align_bytes)
    }

    /// The whole buffer as one binding.
    pub(crate) fn whole(&self) -> Window<'_> {
        Window {
            raw: &self.raw,
            id: self.id,
            byte_start: 0,
            byte_len: (self.len.max(1) * 4) as u64,
        }
    }
}

impl<T> BufferLen for WgpuBuffer<T> {
    fn len(&self) -> usize {
        self.len
    }
}

impl<T> std::fmt::Debug for WgpuBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBuffer(#{}, {} elements)", self.id, self.len)
    }
}

/// A byte range of one buffer, bound as one storage binding.
#[derive(Clone, Copy)]
pub(crate) struct Window<'a> {
    pub(crate) raw: &'a wgpu::Buffer,
    pub(crate) id: u64,
    pub(crate) byte_start: u64,
    pub(crate) byte_len: u64,
}

impl<'a> Window<'a> {
    /// Elements `start..start + len` of a buffer of `buf_len` elements, bound from the aligned
    /// address at or below `start` (bindings must start on the adapter's offset alignment);
    /// returns it and the element offset of `start` inside it.
    pub(crate) fn around(
        raw: &'a wgpu::Buffer,
        id: u64,
        buf_len: usize,
        start: usize,
        len: usize,
        align_bytes: u64,
    ) -> (Window<'a>, usize) {
        let align = (align_bytes / 4).max(1) as usize;
        let aligned = start / align * align;
        let end = (start + len).min(buf_len).max(aligned + 1);
        (
            Window {
                raw,
                id,
                byte_start: (aligned * 4) as u64,
                byte_len: ((end - aligned) * 4) as u64,
            },
            start - aligned,
        )
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

impl MemoryOps for WgpuBackend {
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
}
