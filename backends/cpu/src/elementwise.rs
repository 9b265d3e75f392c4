//! Elementwise kernels (fill, copy, scale, axpy, add, sum, ReLU), split into element chunks
//! across threads.

use dscl_core::backend::ElementwiseOps;
use dscl_core::error::check_len;
use dscl_core::Result;

use crate::parallel::{unit, Par, Rows, ELEMENT_GRAIN};
use crate::simd;
use crate::CpuBackend;
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

impl<'a> ElementwiseOps for CpuBackend<'a> {
    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()> {
        fill(&self.par(), x, offset, len, value)
    }

    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        copy(&self.par(), src, src_offset, dst, dst_offset, len)
    }

    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        copy(&self.par(), src, src_offset, dst, dst_offset, len)
    }

    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()> {
        scale(&self.par(), x, len, alpha)
    }

    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        axpy(&self.par(), alpha, x, y, len)
    }

    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        add(&self.par(), a, b, out, len)
    }

    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()> {
        sum(&self.par(), x, len, scale, out, offset)
    }

    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        relu_forward(&self.par(), x, y, len)
    }

    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        relu_backward(&self.par(), y, grad_y, grad_x, len)
    }
}
