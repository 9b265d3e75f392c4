//! Elementwise kernels and the ReLU activation.

use super::bounds::span;
use super::ReferenceBackend;
use crate::element::Element;
use crate::error::{check_len, Result};

/// `x[offset..offset + len] = value`.
pub fn fill<T: Element>(x: &mut [T], offset: usize, len: usize, value: f64) -> Result<()> {
    let range = span("fill", x.len(), offset, len)?;
    x[range].fill(T::from_f64(value));
    Ok(())
}

/// `x[e] *= alpha`.
pub fn scale<T: Element>(x: &mut [T], len: usize, alpha: f64) -> Result<()> {
    check_len("scale x", x.len(), len)?;
    for v in &mut x[..len] {
        *v = T::from_f64(v.widen() * alpha);
    }
    Ok(())
}

/// `y[e] += alpha * x[e]`.
pub fn axpy<T: Element>(alpha: f64, x: &[T], y: &mut [T], len: usize) -> Result<()> {
    check_len("axpy x", x.len(), len)?;
    check_len("axpy y", y.len(), len)?;
    for (yv, &xv) in y[..len].iter_mut().zip(&x[..len]) {
        *yv = T::from_f64(yv.widen() + alpha * xv.widen());
    }
    Ok(())
}

/// `out[e] = a[e] + b[e]`.
pub fn add<T: Element>(a: &[T], b: &[T], out: &mut [T], len: usize) -> Result<()> {
    check_len("add a", a.len(), len)?;
    check_len("add b", b.len(), len)?;
    check_len("add out", out.len(), len)?;
    for ((o, &av), &bv) in out[..len].iter_mut().zip(&a[..len]).zip(&b[..len]) {
        *o = T::from_f64(av.widen() + bv.widen());
    }
    Ok(())
}

/// `out[offset] = scale * sum_{e < len} x[e]`, summed in f64.
pub fn sum<T: Element>(
    x: &[T],
    len: usize,
    scale: f64,
    out: &mut [T],
    offset: usize,
) -> Result<()> {
    check_len("sum x", x.len(), len)?;
    let slot = span("sum out", out.len(), offset, 1)?;
    let total: f64 = x[..len].iter().map(|&v| v.widen()).sum();
    out[slot.start] = T::from_f64(scale * total);
    Ok(())
}

/// `y = max(x, 0)`; a NaN passes through, as `torch.relu` lets it.
pub fn relu_forward<T: Element>(x: &[T], y: &mut [T], len: usize) -> Result<()> {
    check_len("relu x", x.len(), len)?;
    check_len("relu y", y.len(), len)?;
    for (yv, &xv) in y[..len].iter_mut().zip(&x[..len]) {
        *yv = if xv > T::zero() || xv.is_nan() {
            xv
        } else {
            T::zero()
        };
    }
    Ok(())
}

/// `grad_x = grad_y` where the forward output was positive, else 0.
pub fn relu_backward<T: Element>(
    y: &[T],
    grad_y: &[T],
    grad_x: &mut [T],
    len: usize,
) -> Result<()> {
    check_len("relu y", y.len(), len)?;
    check_len("relu grad_y", grad_y.len(), len)?;
    check_len("relu grad_x", grad_x.len(), len)?;
    for ((gx, &yv), &gy) in grad_x[..len].iter_mut().zip(&y[..len]).zip(&grad_y[..len]) {
        *gx = if yv > T::zero() { gy } else { T::zero() };
    }
    Ok(())
}

impl<T: Element> crate::backend::ElementwiseOps for ReferenceBackend<T> {
    fn fill(&self, x: &mut Self::Buffer, offset: usize, len: usize, value: f64) -> Result<()> {
        fill(x, offset, len, value)
    }

    fn copy(
        &self,
        src: &Self::Buffer,
        src_offset: usize,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        super::memory::copy("copy", src, src_offset, dst, dst_offset, len)
    }

    fn copy_index(
        &self,
        src: &Self::IndexBuffer,
        src_offset: usize,
        dst: &mut Self::IndexBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        super::memory::copy("copy_index", src, src_offset, dst, dst_offset, len)
    }

    fn scale(&self, x: &mut Self::Buffer, len: usize, alpha: f64) -> Result<()> {
        scale(x, len, alpha)
    }

    fn axpy(&self, alpha: f64, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        axpy(alpha, x, y, len)
    }

    fn add(
        &self,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        add(a, b, out, len)
    }

    fn sum(
        &self,
        x: &Self::Buffer,
        len: usize,
        scale: f64,
        out: &mut Self::Buffer,
        offset: usize,
    ) -> Result<()> {
        sum(x, len, scale, out, offset)
    }

    fn relu_forward(&self, x: &Self::Buffer, y: &mut Self::Buffer, len: usize) -> Result<()> {
        relu_forward(x, y, len)
    }

    fn relu_backward(
        &self,
        y: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        relu_backward(y, grad_y, grad_x, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_scale_axpy_add_sum() {
        let mut x = [1.0f64, 2.0, 3.0, 4.0];
        fill(&mut x, 1, 2, 5.0).unwrap();
        assert_eq!(x, [1.0, 5.0, 5.0, 4.0]);
        assert!(fill(&mut x, 3, 2, 0.0).is_err());
        scale(&mut x, 3, 2.0).unwrap();
        assert_eq!(x, [2.0, 10.0, 10.0, 4.0]);
        let mut y = [1.0f64; 4];
        axpy(0.5, &x, &mut y, 4).unwrap();
        assert_eq!(y, [2.0, 6.0, 6.0, 3.0]);
        let mut out = [0.0f64; 4];
        add(&x, &y, &mut out, 4).unwrap();
        assert_eq!(out, [4.0, 16.0, 16.0, 7.0]);
        let mut total = [0.0f64; 3];
        sum(&out, 4, 0.25, &mut total, 2).unwrap();
        assert_eq!(total, [0.0, 0.0, 10.75]);
        assert!(sum(&out, 4, 1.0, &mut total, 3).is_err());
        assert!(add(&x, &y, &mut out, 5).is_err());
    }

    #[test]
    fn relu_keeps_positives_and_nan() {
        let x = [-1.0f32, 0.0, 2.0, f32::NAN];
        let mut y = [9.0f32; 4];
        relu_forward(&x, &mut y, 4).unwrap();
        assert_eq!(&y[..3], &[0.0, 0.0, 2.0]);
        assert!(y[3].is_nan());
        let mut gx = [9.0f32; 4];
        relu_backward(&y, &[1.0, 2.0, 3.0, 4.0], &mut gx, 4).unwrap();
        assert_eq!(gx, [0.0, 0.0, 3.0, 0.0]);
    }
}
