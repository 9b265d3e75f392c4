//! Strided-batched GEMM (`GemmDesc`): the `gemm` crate's packed, vectorised kernels with
//! `alloc` (transposes are free: it takes row and column strides; rayon-parallel with `std`),
//! a portable blocked kernel without it.
//!
//! Batches run in parallel (each product single-threaded) when there are at least as many
//! matrices as threads and the C matrices do not overlap; otherwise one after another, each
//! product using every thread.

use dscl_core::backend::DenseOps;
use dscl_core::desc::GemmDesc;
use dscl_core::Result;

use crate::parallel::{unit, Par, Rows, ELEMENT_GRAIN};
use crate::simd;
use crate::CpuBackend;
use dscl_core::error::check_len;

/// One operand as seen through `op`: element (i, p) is at `rs * i + cs * p`.
#[derive(Clone, Copy)]
struct Op {
    rs: usize,
    cs: usize,
    /// Elements spanned by one matrix.
    span: usize,
}

/// Strides of `op(X)`, an `rows x cols` matrix stored with leading dimension `ld`
/// (transposed when `trans`). Degenerate leading dimensions of single-row storage are replaced
/// by harmless ones.
fn op(trans: bool, ld: usize, rows: usize, cols: usize) -> Op {
    let (stored_rows, stored_cols) = if trans { (cols, rows) } else { (rows, cols) };
    let ld = if stored_rows <= 1 { stored_cols } else { ld };
    let span = (stored_rows - 1) * ld + stored_cols;
    if trans {
        Op {
            rs: 1,
            cs: ld,
            span,
        }
    } else {
        Op {
            rs: ld,
            cs: 1,
            span,
        }
    }
}

/// A matrix operand of [`matmul`]: `op(X)` of `X` stored row-major with leading dimension `ld`
/// from the slice's start, transposed when `trans`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'s> {
    pub data: &'s [f32],
    pub ld: usize,
    pub trans: bool,
}

/// `C = alpha * op(A) op(B) + beta * C` for one m x n x k product with C's rows `ldc` apart
/// (C is not read when `beta == 0`; A and B are not read when `alpha == 0` or `k == 0`).
/// `threads > 1` lets gemm use that many rayon threads of the current pool. Slices must hold
/// the elements addressed (callers check shapes first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    threads: usize,
    [m, n, k]: [usize; 3],
    alpha: f32,
    beta: f32,
    a: Operand,
    b: Operand,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let ldc = if m <= 1 { n } else { ldc };
    let c = &mut c[..(m - 1) * ldc + n];
    if k == 0 || alpha == 0.0 {
        // C = beta * C (BLAS semantics: A and B are not read when alpha = 0).
        for row in c.chunks_mut(ldc) {
            let len = n.min(row.len());
            let row = &mut row[..len];
            if beta == 0.0 {
                row.fill(0.0);
            } else if beta != 1.0 {
                row.iter_mut().for_each(|v| *v *= beta);
            }
        }
        return;
    }
    let oa = op(a.trans, a.ld, m, k);
    let ob = op(b.trans, b.ld, k, n);
    single(
        threads,
        [m, n, k],
        alpha,
        beta,
        (&a.data[..oa.span], oa),
        (&b.data[..ob.span], ob),
        c,
        ldc,
    );
}

pub(crate) fn gemm(par: &Par, d: &GemmDesc, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    d.check(a.len(), b.len(), c.len())?;
    let (m, n, k) = (d.m, d.n, d.k);
    if d.batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    let alpha = d.alpha as f32;
    let beta = d.beta as f32;
    let ldc = if m <= 1 { n } else { d.c.ld };
    let c_span = (m - 1) * ldc + n;
    let a_at = |t: usize| Operand {
        data: &a[d.a.offset + t * d.a.batch_stride..],
        ld: d.a.ld,
        trans: d.trans_a,
    };
    let b_at = |t: usize| Operand {
        data: &b[d.b.offset + t * d.b.batch_stride..],
        ld: d.b.ld,
        trans: d.trans_b,
    };
    let product = |threads: usize, t: usize, ct: &mut [f32]| {
        if k == 0 || alpha == 0.0 {
            // Neither A nor B is addressed (their offsets need not lie inside the buffers).
            let empty = Operand {
                data: &[],
                ld: 0,
                trans: false,
            };
            matmul(threads, [m, n, k], alpha, beta, empty, empty, ct, ldc);
        } else {
            matmul(threads, [m, n, k], alpha, beta, a_at(t), b_at(t), ct, ldc);
        }
    };

    let parallel_batches =
        d.batch > 1 && par.threads > 1 && d.batch >= par.threads && d.c.batch_stride >= c_span;
    if parallel_batches {
        let stride = d.c.batch_stride;
        par.run(
            d.batch,
            1,
            Rows(&mut c[d.c.offset..], stride),
            |range, Rows(cs, _)| {
                for (j, t) in range.enumerate() {
                    product(1, t, &mut cs[j * stride..j * stride + c_span]);
                }
            },
            unit,
        );
    } else {
        for t in 0..d.batch {
            let o = d.c.offset + t * d.c.batch_stride;
            let ct = &mut c[o..o + c_span];
            let threads = par.threads;
            par.install(|| product(threads, t, ct));
        }
    }
    Ok(())
}

/// `C = alpha * op(A) op(B) + beta * C` for one m x n x k product (k > 0, alpha != 0).
#[cfg(feature = "alloc")]
#[allow(clippy::too_many_arguments)]
fn single(
    threads: usize,
    [m, n, k]: [usize; 3],
    alpha: f32,
    beta: f32,
    (a, oa): (&[f32], Op),
    (b, ob): (&[f32], Op),
    c: &mut [f32],
    ldc: usize,
) {
    #[cfg(feature = "std")]
    let parallelism = if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= 48 * 48 * 48 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    #[cfg(not(feature = "std"))]
    let parallelism = {
        let _ = threads;
        gemm::Parallelism::None
    };
    debug_assert!(a.len() > (m - 1) * oa.rs + (k - 1) * oa.cs);
    debug_assert!(b.len() > (k - 1) * ob.rs + (n - 1) * ob.cs);
    debug_assert!(c.len() > (m - 1) * ldc + (n - 1));
    // SAFETY: `GemmDesc::check` (called by `gemm`) guarantees that every element the product
    // addresses lies inside the buffers, and `gemm` passes the sub-slices that start at each
    // matrix's offset and span it (`Op::span`, `c_span`), so the pointers with these strides
    // stay in bounds (asserted above in debug builds). Strides fit in isize because they are
    // bounded by slice lengths. `c` is an exclusive borrow, so the destination aliases neither
    // input. `read_dst = beta != 0` makes gemm overwrite C without reading it when beta is 0.
    // The crate's argument order is dst := alpha_g * dst + beta_g * lhs * rhs, hence
    // (beta, alpha) below.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            beta != 0.0,
            a.as_ptr(),
            oa.cs as isize,
            oa.rs as isize,
            b.as_ptr(),
            ob.cs as isize,
            ob.rs as isize,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(not(feature = "alloc"))]
#[allow(clippy::too_many_arguments)]
fn single(
    _threads: usize,
    mnk: [usize; 3],
    alpha: f32,
    beta: f32,
    a: (&[f32], Op),
    b: (&[f32], Op),
    c: &mut [f32],
    ldc: usize,
) {
    portable(mnk, alpha, beta, a, b, c, ldc);
}

/// Rows of C computed together by the portable kernel.
#[cfg(any(test, not(feature = "alloc")))]
const ROW_BLOCK: usize = 4;

/// The allocation-free kernel: blocks of `ROW_BLOCK` rows of C, each updated with rank-1
/// row axpys when B's rows are contiguous (vectorisable), dot products otherwise.
#[cfg(any(test, not(feature = "alloc")))]
fn portable(
    [m, n, k]: [usize; 3],
    alpha: f32,
    beta: f32,
    (a, oa): (&[f32], Op),
    (b, ob): (&[f32], Op),
    c: &mut [f32],
    ldc: usize,
) {
    for i in 0..m {
        let row = &mut c[i * ldc..i * ldc + n];
        if beta == 0.0 {
            row.fill(0.0);
        } else if beta != 1.0 {
            row.iter_mut().for_each(|v| *v *= beta);
        }
    }
    if ob.cs == 1 {
        let mut i0 = 0;
        while i0 < m {
            let rows = ROW_BLOCK.min(m - i0);
            for p in 0..k {
                let brow = &b[p * ob.rs..p * ob.rs + n];
                for i in i0..i0 + rows {
                    let aip = alpha * a[i * oa.rs + p * oa.cs];
                    let crow = &mut c[i * ldc..i * ldc + n];
                    for (cv, bv) in crow.iter_mut().zip(brow) {
                        *cv += aip * bv;
                    }
                }
            }
            i0 += rows;
        }
    } else {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f32;
                for p in 0..k {
                    s += a[i * oa.rs + p * oa.cs] * b[p * ob.rs + j * ob.cs];
                }
                c[i * ldc + j] += alpha * s;
            }
        }
    }
}

/// `x[r][c] += bias[c]`.
pub(crate) fn bias_add(
    par: &Par,
    x: &mut [f32],
    bias: &[f32],
    rows: usize,
    cols: usize,
) -> Result<()> {
    let len = rows.saturating_mul(cols);
    check_len("bias_add x", x.len(), len)?;
    check_len("bias_add bias", bias.len(), cols)?;
    if len == 0 {
        return Ok(());
    }
    let bias = &bias[..cols];
    par.run(
        rows,
        ELEMENT_GRAIN / cols,
        Rows(&mut x[..len], cols),
        |_, Rows(x, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for row in x.chunks_exact_mut(cols) {
                        for (v, b) in row.iter_mut().zip(bias) {
                            *v += b;
                        }
                    }
                },
            )
        },
        unit,
    );
    Ok(())
}

/// Columns reduced together by `bias_backward` (one f64 accumulator each, on the stack).
const BIAS_COLS: usize = 64;

/// `grad_bias[c] += sum_r grad_out[r][c]`, threaded over column blocks, summed in f64.
pub(crate) fn bias_backward(
    par: &Par,
    grad_out: &[f32],
    grad_bias: &mut [f32],
    rows: usize,
    cols: usize,
) -> Result<()> {
    let len = rows.saturating_mul(cols);
    check_len("bias_backward grad_out", grad_out.len(), len)?;
    check_len("bias_backward grad_bias", grad_bias.len(), cols)?;
    if len == 0 {
        return Ok(());
    }
    let blocks = cols.div_ceil(BIAS_COLS);
    par.run(
        blocks,
        (ELEMENT_GRAIN / (rows * BIAS_COLS)).max(1),
        Rows(&mut grad_bias[..cols], BIAS_COLS),
        |range, Rows(gb, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (bi, gb) in range.zip(gb.chunks_mut(BIAS_COLS)) {
                        let c0 = bi * BIAS_COLS;
                        let w = gb.len();
                        let mut acc = [0.0f64; BIAS_COLS];
                        for r in 0..rows {
                            let row = &grad_out[r * cols + c0..r * cols + c0 + w];
                            for (a, &v) in acc.iter_mut().zip(row) {
                                *a += v as f64;
                            }
                        }
                        for (g, a) in gb.iter_mut().zip(&acc) {
                            *g = (*g as f64 + a) as f32;
                        }
                    }
                },
            )
        },
        unit,
    );
    Ok(())
}

impl<'a> DenseOps for CpuBackend<'a> {
    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()> {
        gemm(&self.par(), desc, a, b, c)
    }

    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        bias_add(&self.par(), x, bias, rows, cols)
    }

    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        bias_backward(&self.par(), grad_out, grad_bias, rows, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dscl_core::desc::MatrixLayout;

    fn naive(d: &GemmDesc, a: &[f32], b: &[f32], c: &mut [f32]) {
        for t in 0..d.batch {
            for i in 0..d.m {
                for j in 0..d.n {
                    let mut s = 0.0f64;
                    for p in 0..d.k {
                        let av = if d.trans_a {
                            a[d.a.offset + t * d.a.batch_stride + p * d.a.ld + i]
                        } else {
                            a[d.a.offset + t * d.a.batch_stride + i * d.a.ld + p]
                        };
                        let bv = if d.trans_b {
                            b[d.b.offset + t * d.b.batch_stride + j * d.b.ld + p]
                        } else {
                            b[d.b.offset + t * d.b.batch_stride + p * d.b.ld + j]
                        };
                        s += av as f64 * bv as f64;
                    }
                    let ci = d.c.offset + t * d.c.batch_stride + i * d.c.ld + j;
                    let old = if d.beta == 0.0 { 0.0 } else { c[ci] as f64 };
                    c[ci] = (d.alpha * s + d.beta * old) as f32;
                }
            }
        }
    }

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn check_all(par: &Par) {
        let mut seed = 1;
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 9, 33), (64, 70, 5), (2, 130, 65)] {
            for ta in [false, false, true] {
                for tb in [false, true] {
                    for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                        for batch in [1usize, 3] {
                            seed += 1;
                            let lda = if ta { m + 2 } else { k + 1 };
                            let ldb = if tb { k + 3 } else { n };
                            let ldc = n + 1;
                            let (ar, br) = (if ta { k } else { m }, if tb { n } else { k });
                            let d = GemmDesc {
                                m,
                                n,
                                k,
                                trans_a: ta,
                                trans_b: tb,
                                alpha,
                                beta,
                                batch,
                                a: MatrixLayout::strided(2, lda, ar * lda + 1),
                                b: MatrixLayout::strided(1, ldb, br * ldb),
                                c: MatrixLayout::strided(3, ldc, m * ldc + 2),
                            };
                            let a = fill(2 + batch * (ar * lda + 1), seed);
                            let b = fill(1 + batch * br * ldb, seed + 100);
                            let mut c = fill(3 + batch * (m * ldc + 2), seed + 200);
                            if beta == 0.0 {
                                c.iter_mut().for_each(|v| *v = f32::NAN);
                            }
                            let mut want = c.clone();
                            naive(&d, &a, &b, &mut want);
                            gemm(par, &d, &a, &b, &mut c).unwrap();
                            for (i, (g, w)) in c.iter().zip(&want).enumerate() {
                                let ok = (g.is_nan() && w.is_nan())
                                    || (g - w).abs() <= 1e-5 * (1.0 + w.abs()) * k as f32;
                                assert!(ok, "{d:?} at {i}: {g} vs {w}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gemm_matches_naive_serial() {
        check_all(&Par::serial());
    }

    #[cfg(feature = "std")]
    #[test]
    fn gemm_matches_naive_threaded() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        check_all(&Par {
            threads: 2,
            pool: Some(&pool),
        });
    }

    #[test]
    fn portable_matches_naive() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (m, n, k) = (7, 11, 13);
            let d = GemmDesc::new(m, n, k, ta, tb).alpha(0.75).beta(0.5);
            let a = fill(m * k, 3);
            let b = fill(k * n, 4);
            let mut c = fill(m * n, 5);
            let mut want = c.clone();
            naive(&d, &a, &b, &mut want);
            let oa = op(ta, d.a.ld, m, k);
            let ob = op(tb, d.b.ld, k, n);
            portable([m, n, k], 0.75, 0.5, (&a, oa), (&b, ob), &mut c, n);
            for (g, w) in c.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn k_zero_and_alpha_zero_scale_c() {
        let par = Par::serial();
        let d = GemmDesc::new(2, 2, 0, false, false).beta(2.0);
        let mut c = vec![1.0, 2.0, 3.0, 4.0];
        gemm(&par, &d, &[], &[], &mut c).unwrap();
        assert_eq!(c, [2.0, 4.0, 6.0, 8.0]);
        let d = GemmDesc::new(2, 2, 1, false, false).alpha(0.0);
        let mut c = vec![f32::NAN; 4];
        gemm(&par, &d, &[f32::NAN; 2], &[1.0; 2], &mut c).unwrap();
        assert_eq!(c, [0.0; 4]);
    }

    #[test]
    fn short_buffers_are_errors() {
        let par = Par::serial();
        let d = GemmDesc::new(4, 4, 4, false, true);
        let mut c = vec![0.0; 16];
        assert!(gemm(&par, &d, &[0.0; 15], &[0.0; 16], &mut c).is_err());
        assert!(gemm(&par, &d, &[0.0; 16], &[0.0; 16], &mut c[..15]).is_err());
    }
}
