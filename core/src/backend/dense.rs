//! Dense: the strided-batched GEMM of the linear layers and the projection heads, and the
//! linear layer's bias.

use super::MemoryOps;
use crate::desc::GemmDesc;
use crate::error::Result;

pub trait DenseOps: MemoryOps {
    /// Strided-batched GEMM; exact semantics in [`GemmDesc`].
    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()>;

    /// `x[r][c] += bias[c]` for a `rows x cols` matrix (the linear layer's bias).
    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()>;

    /// `grad_bias[c] += sum_r grad_out[r][c]` (accumulates).
    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
}
