//! Elementwise kernels (fill, copy, scale, axpy, add, sum, ReLU) and the linear layer's bias,
//! split into element chunks across threads.

use dscl_core::error::check_len;
use dscl_core::Result;

use crate::parallel::{unit, Par, Rows, ELEMENT_GRAIN};
use crate::simd;
use dscl_core::error::check_range;

pub(crate) fn fill(par: &Par, x: &mut [f32], offset: usize, len: usize, value: f64) -> Result<()> {
    let end = check_range("fill", x.len(), offset, len)?;
    let v = value as f32;
    par.run(
        len,
        ELEMENT_GRAIN,
        Rows(&mut x[offset..end], 1),
        |_, Rows(x, _)| x.fill(v),
        unit,
    );
    Ok(())
}

pub(crate) fn copy<T: Copy + Send + Sync>(
    par: &Par,
    src: &[T],
    src_offset: usize,
    dst: &mut [T],
    dst_offset: usize,
    len: usize,
) -> Result<()> {
    let src_end = check_range("copy source", src.len(), src_offset, len)?;
    let dst_end = check_range("copy destination", dst.len(), dst_offset, len)?;
    let src = &src[src_offset..src_end];
    par.run(
        len,
        ELEMENT_GRAIN,
        Rows(&mut dst[dst_offset..dst_end], 1),
        |r, Rows(d, _)| d.copy_from_slice(&src[r]),
        unit,
    );
    Ok(())
}

pub(crate) fn scale(par: &Par, x: &mut [f32], len: usize, alpha: f64) -> Result<()> {
    check_len("scale", x.len(), len)?;
    let a = alpha as f32;
    par.run(
        len,
        ELEMENT_GRAIN,
        Rows(&mut x[..len], 1),
        |_, Rows(x, _)| {
            simd::dispatch(
                #[inline(always)]
                || simd::scale(x, a),
            )
        },
        unit,
    );
    Ok(())
}

pub(crate) fn axpy(par: &Par, alpha: f64, x: &[f32], y: &mut [f32], len: usize) -> Result<()> {
    check_len("axpy x", x.len(), len)?;
    check_len("axpy y", y.len(), len)?;
    let a = alpha as f32;
    par.run(
        len,
        ELEMENT_GRAIN,
        Rows(&mut y[..len], 1),
        |r, Rows(y, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (yv, xv) in y.iter_mut().zip(&x[r]) {
                        *yv += a * xv;
                    }
                },
            )
        },
        unit,
    );
    Ok(())
}

pub(crate) fn add(par: &Par, a: &[f32], b: &[f32], out: &mut [f32], len: usize) -> Result<()> {
    check_len("add a", a.len(), len)?;
    check_len("add b", b.len(), len)?;
    check_len("add out", out.len(), len)?;
    par.run(
        len,
        ELEMENT_GRAIN,
        Rows(&mut out[..len], 1),
        |r, Rows(o, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for ((ov, av), bv) in o.iter_mut().zip(&a[r.clone()]).zip(&b[r]) {
                        *ov = av + bv;
                    }
                },
            )
        },
        unit,
    );
    Ok(())
}

pub(crate) fn sum(
    par: &Par,
    x: &[f32],
    len: usize,
    scale: f64,
    out: &mut [f32],
    offset: usize,
) -> Result<()> {
    check_len("sum x", x.len(), len)?;
    check_range("sum out", out.len(), offset, 1)?;
    let total = par.run(
        len,
        ELEMENT_GRAIN,
        (),
        |r, ()| {
            simd::dispatch(
                #[inline(always)]
                || simd::sum(&x[r]),
            )
        },
        |a, b| a + b,
    );
    out[offset] = (scale * total) as f32;
    Ok(())
}

/// `y = max(x, 0)`; NaN passes through (as `torch.relu`).
pub(crate) fn relu_forward(par: &Par, x: &[f32], y: &mut [f32], len: usize) -> Result<()> {
    check_len("relu x", x.len(), len)?;
    check_len("relu y", y.len(), len)?;
    par.run(
        len,
        ELEMENT_GRAIN,
        Rows(&mut y[..len], 1),
        |r, Rows(y, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (yv, &xv) in y.iter_mut().zip(&x[r]) {
                        *yv = if xv < 0.0 { 0.0 } else { xv };
                    }
                },
            )
        },
        unit,
    );
    Ok(())
}

/// `grad_x = grad_y` where `y > 0`, else 0.
pub(crate) fn relu_backward(
    par: &Par,
    y: &[f32],
    grad_y: &[f32],
    grad_x: &mut [f32],
    len: usize,
) -> Result<()> {
    check_len("relu_backward y", y.len(), len)?;
    check_len("relu_backward grad_y", grad_y.len(), len)?;
    check_len("relu_backward grad_x", grad_x.len(), len)?;
    par.run(
        len,
        ELEMENT_GRAIN,
        Rows(&mut grad_x[..len], 1),
        |r, Rows(gx, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for ((g, &yv), &gy) in gx.iter_mut().zip(&y[r.clone()]).zip(&grad_y[r]) {
                        *g = if yv > 0.0 { gy } else { 0.0 };
                    }
                },
            )
        },
        unit,
    );
    Ok(())
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
