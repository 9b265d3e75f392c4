//! Max pooling (forward records the argmax, backward scatters through it) and global average
//! pooling.

use super::bounds::product;
use super::fault::FaultSlot;
use super::memory::alloc_zeroed;
use super::ReferenceBackend;
use crate::desc::PoolShape;
use crate::element::Element;
use crate::error::{check_len, ensure, Result};

/// The input rows (or columns) `start..end` that output coordinate `out` covers, with the
/// padding cut off.
fn window(out: usize, shape: &PoolShape, size: usize) -> (usize, usize) {
    let first = out * shape.stride;
    let start = first.saturating_sub(shape.padding).min(size);
    let end = (first + shape.kernel)
        .saturating_sub(shape.padding)
        .min(size);
    (start, end)
}

/// Max pooling as PyTorch's CPU kernel: padding never wins (it is -inf), the running maximum is
/// replaced only by a strictly greater value, so ties keep the first in row-major window order,
/// and a NaN always replaces it (so the last NaN of a window is the argmax, and the output is
/// NaN, recorded as `NonFinite` at the output index).
pub fn max_pool2d_forward<T: Element>(
    shape: &PoolShape,
    x: &[T],
    y: &mut [T],
    argmax: &mut [u32],
    faults: &FaultSlot,
) -> Result<()> {
    shape.check(x.len(), y.len(), argmax.len())?;
    let plane = shape.in_height * shape.in_width;
    ensure(
        u32::try_from(plane).is_ok(),
        "max_pool2d",
        "an input plane must have fewer than 2^32 elements (u32 argmax)",
    )?;
    let (out_h, out_w) = (shape.out_height(), shape.out_width());
    let mut out_index = 0;
    for plane_index in 0..shape.batch * shape.channels {
        let input = &x[plane_index * plane..(plane_index + 1) * plane];
        for oh in 0..out_h {
            let (h_start, h_end) = window(oh, shape, shape.in_height);
            for ow in 0..out_w {
                let (w_start, w_end) = window(ow, shape, shape.in_width);
                let mut best = f64::NEG_INFINITY;
                let mut best_index = h_start * shape.in_width + w_start;
                for h in h_start..h_end {
                    for w in w_start..w_end {
                        let index = h * shape.in_width + w;
                        let value = input[index].widen();
                        if value > best || value.is_nan() {
                            best = value;
                            best_index = index;
                        }
                    }
                }
                if best.is_nan() {
                    faults.non_finite(out_index);
                }
                y[out_index] = T::from_f64(best);
                argmax[out_index] = best_index as u32;
                out_index += 1;
            }
        }
    }
    Ok(())
}

/// `grad_x = 0`, then `grad_x[plane + argmax[o]] += grad_y[o]`, summed in f64. An argmax outside
/// its plane (only a corrupted buffer holds one) is skipped rather than followed.
pub fn max_pool2d_backward<T: Element>(
    shape: &PoolShape,
    grad_y: &[T],
    argmax: &[u32],
    grad_x: &mut [T],
) -> Result<()> {
    shape.check(grad_x.len(), grad_y.len(), argmax.len())?;
    let plane = shape.in_height * shape.in_width;
    let plane_outputs = shape.out_height() * shape.out_width();
    let planes = shape.batch * shape.channels;
    let mut sums = alloc_zeroed::<f64>(planes * plane)?;
    for plane_index in 0..planes {
        for o in plane_index * plane_outputs..(plane_index + 1) * plane_outputs {
            let source = argmax[o] as usize;
            if source < plane {
                sums[plane_index * plane + source] += grad_y[o].widen();
            }
        }
    }
    for (gx, &s) in grad_x.iter_mut().zip(&sums) {
        *gx = T::from_f64(s);
    }
    Ok(())
}

/// `y[n][c] = mean_s x[n][c][s]`, summed in f64. An empty plane has no mean: rejected.
pub fn global_avg_pool_forward<T: Element>(
    x: &[T],
    y: &mut [T],
    batch: usize,
    channels: usize,
    spatial: usize,
) -> Result<()> {
    let planes = product("global_avg_pool", &[batch, channels])?;
    check_len(
        "global_avg_pool x",
        x.len(),
        product("global_avg_pool", &[planes, spatial])?,
    )?;
    check_len("global_avg_pool y", y.len(), planes)?;
    ensure(
        spatial >= 1 || planes == 0,
        "global_avg_pool",
        "spatial size must be at least 1",
    )?;
    for (p, out) in y[..planes].iter_mut().enumerate() {
        let total: f64 = x[p * spatial..(p + 1) * spatial]
            .iter()
            .map(|&v| v.widen())
            .sum();
        *out = T::from_f64(total / spatial as f64);
    }
    Ok(())
}

/// `grad_x[n][c][s] = grad_y[n][c] / spatial`, written.
pub fn global_avg_pool_backward<T: Element>(
    grad_y: &[T],
    grad_x: &mut [T],
    batch: usize,
    channels: usize,
    spatial: usize,
) -> Result<()> {
    let planes = product("global_avg_pool", &[batch, channels])?;
    check_len("global_avg_pool grad_y", grad_y.len(), planes)?;
    check_len(
        "global_avg_pool grad_x",
        grad_x.len(),
        product("global_avg_pool", &[planes, spatial])?,
    )?;
    ensure(
        spatial >= 1 || planes == 0,
        "global_avg_pool",
        "spatial size must be at least 1",
    )?;
    for (p, &g) in grad_y[..planes].iter().enumerate() {
        let share = T::from_f64(g.widen() / spatial as f64);
        grad_x[p * spatial..(p + 1) * spatial].fill(share);
    }
    Ok(())
}

impl<T: Element> crate::backend::PoolOps for ReferenceBackend<T> {
    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()> {
        max_pool2d_forward(shape, x, y, argmax, &self.faults)
    }

    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()> {
        max_pool2d_backward(shape, grad_y, argmax, grad_x)
    }

    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        global_avg_pool_forward(x, y, batch, channels, spatial)
    }

    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        global_avg_pool_backward(grad_y, grad_x, batch, channels, spatial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FaultKind;

    fn shape(in_hw: usize, kernel: usize, stride: usize, padding: usize) -> PoolShape {
        PoolShape {
            batch: 1,
            channels: 1,
            in_height: in_hw,
            in_width: in_hw,
            kernel,
            stride,
            padding,
        }
    }

    #[test]
    fn padded_3x3_stride_2_with_ties() {
        // 3x3 input, 3x3/2 pad 1: output 2x2, windows rows/cols {0,1} and {1,2}.
        let s = shape(3, 3, 2, 1);
        let x = [1.0f64, 5.0, 2.0, 5.0, 0.0, 3.0, -1.0, 4.0, 3.0];
        let mut y = [0.0; 4];
        let mut argmax = [0u32; 4];
        let faults = FaultSlot::new();
        max_pool2d_forward(&s, &x, &mut y, &mut argmax, &faults).unwrap();
        assert_eq!(y, [5.0, 5.0, 5.0, 4.0]);
        // Window 0 holds 5 at 1 and at 3: the first in row-major order wins.
        assert_eq!(argmax, [1, 1, 3, 7]);
        assert_eq!(faults.take(), None);
        let mut gx = [9.0; 9];
        max_pool2d_backward(&s, &[1.0, 2.0, 3.0, 4.0], &argmax, &mut gx).unwrap();
        assert_eq!(gx, [0.0, 3.0, 0.0, 3.0, 0.0, 0.0, 0.0, 4.0, 0.0]);
    }

    #[test]
    fn nan_propagates_and_is_recorded() {
        let s = shape(2, 2, 2, 0);
        let x = [1.0f32, f32::NAN, 7.0, 2.0];
        let mut y = [0.0; 1];
        let mut argmax = [0u32; 1];
        let faults = FaultSlot::new();
        max_pool2d_forward(&s, &x, &mut y, &mut argmax, &faults).unwrap();
        assert!(y[0].is_nan());
        assert_eq!(argmax, [1]);
        let fault = faults.take().unwrap();
        assert_eq!((fault.kind, fault.index), (FaultKind::NonFinite, 0));
    }

    #[test]
    fn global_average() {
        let mut y = [0.0f64; 2];
        global_avg_pool_forward(&[1.0, 2.0, 3.0, 5.0, 6.0, 7.0], &mut y, 1, 2, 3).unwrap();
        assert_eq!(y, [2.0, 6.0]);
        let mut gx = [0.0f64; 6];
        global_avg_pool_backward(&[3.0, 6.0], &mut gx, 1, 2, 3).unwrap();
        assert_eq!(gx, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert!(global_avg_pool_forward(&[1.0; 5], &mut y, 1, 2, 3).is_err());
        assert!(global_avg_pool_forward::<f64>(&[], &mut y, 1, 2, 0).is_err());
    }
}
