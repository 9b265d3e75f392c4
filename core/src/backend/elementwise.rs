//! Elementwise: fills, copies, scaling, AXPY, the residual add, the mean-loss sum and ReLU;
//! one output element per input element (the sum excepted).

use super::MemoryOps;
use crate::error::Result;

pub trait ElementwiseOps: MemoryOps {
    /// `x[offset..offset + len] = value`.
    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()>;

    /// `dst[dst_offset + e] = src[src_offset + e]` for `e < len`.
    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()>;

    /// `dst[dst_offset + e] = src[src_offset + e]` for `e < len`, on integer buffers.
    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()>;

    /// `x[e] *= alpha` for `e < len`.
    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()>;

    /// `y[e] += alpha * x[e]` for `e < len`.
    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()>;

    /// `out[e] = a[e] + b[e]` for `e < len` (the residual join).
    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()>;

    /// `out[offset] = scale * sum_{e < len} x[e]`, accumulated in at least f32 with pairwise or
    /// f64 summation (used for the mean loss).
    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()>;

    /// `y[e] = max(x[e], 0)`; a NaN passes through (as `torch.relu`).
    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()>;

    /// `grad_x[e] = grad_y[e]` where `y[e] > 0`, else 0 (uses the forward's output).
    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()>;
}
