//! Host buffers of the reference backend: thin newtypes over `Vec`, so tests can build them
//! from values and read them back without the upload/download ceremony.

use crate::backend::BufferLen;
use alloc::vec::Vec;
use core::ops::{Deref, DerefMut};

/// A buffer of elements in host memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReferenceBuffer<T>(Vec<T>);

/// A buffer of `u32` (labels, max-pool argmax) in host memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferenceIndexBuffer(Vec<u32>);

impl<T> ReferenceBuffer<T> {
    pub fn from_vec(values: Vec<T>) -> Self {
        ReferenceBuffer(values)
    }
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.0
    }
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl ReferenceIndexBuffer {
    pub fn from_vec(values: Vec<u32>) -> Self {
        ReferenceIndexBuffer(values)
    }
    pub fn as_slice(&self) -> &[u32] {
        &self.0
    }
    pub fn as_mut_slice(&mut self) -> &mut [u32] {
        &mut self.0
    }
    pub fn into_vec(self) -> Vec<u32> {
        self.0
    }
}

impl<T> From<Vec<T>> for ReferenceBuffer<T> {
    fn from(values: Vec<T>) -> Self {
        ReferenceBuffer(values)
    }
}

impl From<Vec<u32>> for ReferenceIndexBuffer {
    fn from(values: Vec<u32>) -> Self {
        ReferenceIndexBuffer(values)
    }
}

impl<T> BufferLen for ReferenceBuffer<T> {
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl BufferLen for ReferenceIndexBuffer {
    fn len(&self) -> usize {
        self.0.len()
    }
}

// A buffer is its slice: the kernels take `&[T]`, and a buffer passed where a slice is
// expected coerces, so each family's trait impl hands its buffers straight to its kernels.
impl<T> Deref for ReferenceBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> DerefMut for ReferenceBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl Deref for ReferenceIndexBuffer {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.0
    }
}

impl DerefMut for ReferenceIndexBuffer {
    fn deref_mut(&mut self) -> &mut [u32] {
        &mut self.0
    }
}
