//! Allocation and host <-> buffer copies.

use super::bounds::span;
use super::buffer::{ReferenceBuffer, ReferenceIndexBuffer};
use super::ReferenceBackend;
use crate::element::Element;
use crate::error::Fault;
use crate::error::{Error, Result};
use alloc::vec::Vec;

/// A zero-filled vector of `len` elements; `OutOfMemory` instead of an abort when the heap
/// cannot hold it.
pub fn alloc_zeroed<V: Copy + Default>(len: usize) -> Result<Vec<V>> {
    let mut values = Vec::new();
    values
        .try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory {
            what: "alloc",
            requested: len,
            available: 0,
        })?;
    values.resize(len, V::default());
    Ok(values)
}

/// `dst[offset..offset + src.len()] = src`.
pub fn upload<V: Copy>(what: &'static str, dst: &mut [V], offset: usize, src: &[V]) -> Result<()> {
    let range = span(what, dst.len(), offset, src.len())?;
    dst[range].copy_from_slice(src);
    Ok(())
}

/// `dst = src[offset..offset + dst.len()]`.
pub fn download<V: Copy>(
    what: &'static str,
    src: &[V],
    offset: usize,
    dst: &mut [V],
) -> Result<()> {
    let range = span(what, src.len(), offset, dst.len())?;
    dst.copy_from_slice(&src[range]);
    Ok(())
}

/// `dst[dst_offset + e] = src[src_offset + e]` for `e < len`.
pub fn copy<V: Copy>(
    what: &'static str,
    src: &[V],
    src_offset: usize,
    dst: &mut [V],
    dst_offset: usize,
    len: usize,
) -> Result<()> {
    let from = span(what, src.len(), src_offset, len)?;
    let to = span(what, dst.len(), dst_offset, len)?;
    dst[to].copy_from_slice(&src[from]);
    Ok(())
}

impl<T: Element> crate::backend::MemoryOps for ReferenceBackend<T> {
    type Elem = T;

    type Buffer = ReferenceBuffer<T>;

    type IndexBuffer = ReferenceIndexBuffer;

    fn device_name(&self) -> &str {
        "reference (scalar, f64 accumulation)"
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer> {
        alloc_zeroed(len).map(ReferenceBuffer::from_vec)
    }

    fn alloc_index(&self, len: usize) -> Result<Self::IndexBuffer> {
        alloc_zeroed(len).map(ReferenceIndexBuffer::from_vec)
    }

    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[T]) -> Result<()> {
        upload("upload", dst, offset, src)
    }

    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [T]) -> Result<()> {
        download("download", src, offset, dst)
    }

    fn upload_index(&self, dst: &mut Self::IndexBuffer, offset: usize, src: &[u32]) -> Result<()> {
        upload("upload_index", dst, offset, src)
    }

    fn download_index(
        &self,
        src: &Self::IndexBuffer,
        offset: usize,
        dst: &mut [u32],
    ) -> Result<()> {
        download("download_index", src, offset, dst)
    }

    fn take_fault(&self) -> Result<Option<Fault>> {
        Ok(self.faults.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn alloc_is_zeroed_and_huge_requests_fail_cleanly() {
        assert_eq!(alloc_zeroed::<f32>(3).unwrap(), vec![0.0; 3]);
        assert!(matches!(
            alloc_zeroed::<f64>(usize::MAX),
            Err(Error::OutOfMemory { .. })
        ));
    }

    #[test]
    fn copies_respect_offsets_and_bounds() {
        let mut dst = vec![0u32; 5];
        upload("upload", &mut dst, 2, &[7, 8, 9]).unwrap();
        assert_eq!(dst, [0, 0, 7, 8, 9]);
        assert!(upload("upload", &mut dst, 3, &[1, 2, 3]).is_err());
        let mut out = [0u32; 2];
        download("download", &dst, 3, &mut out).unwrap();
        assert_eq!(out, [8, 9]);
        assert!(download("download", &dst, 4, &mut out).is_err());
        let mut target = vec![1u32; 4];
        copy("copy", &dst, 2, &mut target, 1, 3).unwrap();
        assert_eq!(target, [1, 7, 8, 9]);
        assert!(copy("copy", &dst, 2, &mut target, 2, 3).is_err());
    }
}
