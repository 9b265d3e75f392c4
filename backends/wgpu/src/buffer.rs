//! Device buffers and the windows kernels bind them through.

use std::sync::atomic::{AtomicU64, Ordering};

use dscl_core::BufferLen;

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
