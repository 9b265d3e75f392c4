//! Dense: the strided-batched GEMM of the linear layers and the projection heads, and the
//! linear layer's bias.

use super::MemoryOps;
use crate::error::{check_len, ensure, Result};

/// Where one matrix operand lives inside a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MatrixLayout {
    /// Element offset of the first matrix of the batch.
    pub offset: usize,
    /// Leading dimension: elements between the starts of consecutive rows as stored.
    pub ld: usize,
    /// Elements between consecutive matrices of a strided batch (ignored when batch = 1).
    pub batch_stride: usize,
}

impl MatrixLayout {
    /// A dense matrix stored from the buffer's start with `ld` elements per stored row.
    pub const fn dense(ld: usize) -> Self {
        MatrixLayout {
            offset: 0,
            ld,
            batch_stride: 0,
        }
    }
    pub const fn at(offset: usize, ld: usize) -> Self {
        MatrixLayout {
            offset,
            ld,
            batch_stride: 0,
        }
    }
    pub const fn strided(offset: usize, ld: usize, batch_stride: usize) -> Self {
        MatrixLayout {
            offset,
            ld,
            batch_stride,
        }
    }

    /// Elements the buffer must hold for `batch` matrices of `rows` x `cols` as stored
    /// (`offset` included; 0 when any of them is 0).
    pub fn required_len(&self, batch: usize, rows: usize, cols: usize) -> usize {
        if batch == 0 || rows == 0 || cols == 0 {
            return 0;
        }
        self.offset
            .saturating_add((batch - 1).saturating_mul(self.batch_stride))
            .saturating_add((rows - 1).saturating_mul(self.ld))
            .saturating_add(cols)
    }
}

/// A (strided-batched) general matrix product, row-major:
/// for every `t < batch`, `C_t = alpha * op(A_t) * op(B_t) + beta * C_t`, where `op(A_t)` is
/// m x k, `op(B_t)` is k x n and `C_t` is m x n.
/// `op(A)[i][p] = A[a.offset + t*a.batch_stride + i*a.ld + p]` when `!trans_a`, and
/// `A[a.offset + t*a.batch_stride + p*a.ld + i]` when `trans_a` (likewise for B).
/// When `beta == 0`, C is written without being read (a NaN already in C does not propagate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmDesc {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f64,
    pub beta: f64,
    pub batch: usize,
    pub a: MatrixLayout,
    pub b: MatrixLayout,
    pub c: MatrixLayout,
}

impl GemmDesc {
    /// A single dense product `C = op(A) op(B)` with tight leading dimensions.
    pub fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Self {
        GemmDesc {
            m,
            n,
            k,
            trans_a,
            trans_b,
            alpha: 1.0,
            beta: 0.0,
            batch: 1,
            a: MatrixLayout::dense(if trans_a { m } else { k }),
            b: MatrixLayout::dense(if trans_b { k } else { n }),
            c: MatrixLayout::dense(n),
        }
    }
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    pub fn beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }

    /// Stored (rows, cols) of A and B.
    pub fn a_stored(&self) -> (usize, usize) {
        if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        }
    }
    pub fn b_stored(&self) -> (usize, usize) {
        if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        }
    }

    /// Checks leading dimensions and that the buffers hold every element addressed.
    pub fn check(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<()> {
        let (ar, ac) = self.a_stored();
        let (br, bc) = self.b_stored();
        ensure(
            ar <= 1 || self.a.ld >= ac,
            "gemm A",
            "leading dimension smaller than the stored row",
        )?;
        ensure(
            br <= 1 || self.b.ld >= bc,
            "gemm B",
            "leading dimension smaller than the stored row",
        )?;
        ensure(
            self.m <= 1 || self.c.ld >= self.n,
            "gemm C",
            "leading dimension smaller than n",
        )?;
        ensure(
            self.alpha.is_finite() && self.beta.is_finite(),
            "gemm",
            "alpha and beta must be finite",
        )?;
        check_len("gemm A", a_len, self.a.required_len(self.batch, ar, ac))?;
        check_len("gemm B", b_len, self.b.required_len(self.batch, br, bc))?;
        check_len(
            "gemm C",
            c_len,
            self.c.required_len(self.batch, self.m, self.n),
        )
    }

    /// Multiply-adds performed: `batch * m * n * k`.
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

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
