//! Memory: [`CpuBuffer`] (a slice of a caller's arena, or with `alloc` a heap vector), the
//! arena carving and heap allocation behind `alloc`, and host copies (a buffer is host memory,
//! so upload and download are slice copies).

#[cfg(feature = "alloc")]
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use core::ops::{Deref, DerefMut};

use dscl_core::backend::{BufferLen, MemoryOps};
use dscl_core::error::check_range;
use dscl_core::{Error, Fault, Result};

use crate::CpuBackend;

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

impl<'a> MemoryOps for CpuBackend<'a> {
    type Elem = f32;

    type Buffer = CpuBuffer<'a, f32>;

    type IndexBuffer = CpuBuffer<'a, u32>;

    fn device_name(&self) -> &str {
        self.name.as_str()
    }

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
}
