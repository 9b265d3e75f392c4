//! 2-D convolution (cross-correlation, as PyTorch) and its two backward passes, written as
//! direct sums over the definition so each is checkable by eye.

use super::ReferenceBackend;
use crate::desc::Conv2dShape;
use crate::element::Element;
use crate::error::Result;

/// Input coordinate read by output coordinate `out` at kernel tap `tap`, or `None` when it falls
/// in the zero padding.
fn input_coordinate(
    out: usize,
    tap: usize,
    stride: usize,
    padding: usize,
    size: usize,
) -> Option<usize> {
    (out * stride + tap)
        .checked_sub(padding)
        .filter(|&coordinate| coordinate < size)
}

/// Position of `index` in a row-major tensor of extents `dims`.
fn at(dims: [usize; 4], index: [usize; 4]) -> usize {
    ((index[0] * dims[1] + index[1]) * dims[2] + index[2]) * dims[3] + index[3]
}

/// Visits every element of the row-major tensor `out` of extents `dims` in order and stores
/// `sum(index)`, a sum accumulated in f64, with one rounding: written, or added to the value
/// already there when `accumulate`. Each pass below is one such gather over its output, so
/// each output element is one sum over the definition.
fn gather<T: Element>(
    out: &mut [T],
    dims: [usize; 4],
    accumulate: bool,
    mut sum: impl FnMut([usize; 4]) -> f64,
) {
    let mut out_index = 0;
    for a in 0..dims[0] {
        for b in 0..dims[1] {
            for c in 0..dims[2] {
                for d in 0..dims[3] {
                    let value = &mut out[out_index];
                    let acc = sum([a, b, c, d]);
                    *value = T::from_f64(if accumulate { value.widen() + acc } else { acc });
                    out_index += 1;
                }
            }
        }
    }
}

/// The extents of a pass's three tensors: input, weight, output.
fn extents(s: &Conv2dShape) -> ([usize; 4], [usize; 4], [usize; 4]) {
    (
        [s.batch, s.in_channels, s.in_height, s.in_width],
        [s.out_channels, s.in_channels, s.kernel_h, s.kernel_w],
        [s.batch, s.out_channels, s.out_height(), s.out_width()],
    )
}

/// `output[n][o][oh][ow] = sum_{c, kh, kw} input[n][c][oh*s - p + kh][ow*s - p + kw] *
/// weight[o][c][kh][kw]`, written.
pub fn conv2d_forward<T: Element>(
    shape: &Conv2dShape,
    input: &[T],
    weight: &[T],
    output: &mut [T],
) -> Result<()> {
    shape.check(input.len(), weight.len(), output.len())?;
    let s = shape;
    let (x_dims, w_dims, y_dims) = extents(s);
    gather(output, y_dims, false, |[n, o, oh, ow]| {
        let mut acc = 0.0f64;
        for c in 0..s.in_channels {
            for kh in 0..s.kernel_h {
                let Some(ih) = input_coordinate(oh, kh, s.stride, s.padding, s.in_height) else {
                    continue;
                };
                for kw in 0..s.kernel_w {
                    let Some(iw) = input_coordinate(ow, kw, s.stride, s.padding, s.in_width) else {
                        continue;
                    };
                    let x = input[at(x_dims, [n, c, ih, iw])];
                    let w = weight[at(w_dims, [o, c, kh, kw])];
                    acc += x.widen() * w.widen();
                }
            }
        }
        acc
    });
    Ok(())
}

/// Output coordinate that reads input coordinate `input` through kernel tap `tap`, if any:
/// the inverse of [`input_coordinate`].
fn output_coordinate(
    input: usize,
    tap: usize,
    stride: usize,
    padding: usize,
    out_size: usize,
) -> Option<usize> {
    let shifted = (input + padding).checked_sub(tap)?;
    if shifted % stride != 0 {
        return None;
    }
    Some(shifted / stride).filter(|&out| out < out_size)
}

/// `grad_input[n][c][ih][iw] = sum over every (o, kh, kw) whose output position reads
/// (ih, iw) of grad_output * weight`, written. Gathered per input element so each sum is
/// accumulated in f64 before its single rounding.
pub fn conv2d_backward_data<T: Element>(
    shape: &Conv2dShape,
    grad_output: &[T],
    weight: &[T],
    grad_input: &mut [T],
) -> Result<()> {
    shape.check(grad_input.len(), weight.len(), grad_output.len())?;
    let s = shape;
    let (x_dims, w_dims, y_dims) = extents(s);
    let (out_h, out_w) = (y_dims[2], y_dims[3]);
    gather(grad_input, x_dims, false, |[n, c, ih, iw]| {
        let mut acc = 0.0f64;
        for o in 0..s.out_channels {
            for kh in 0..s.kernel_h {
                let Some(oh) = output_coordinate(ih, kh, s.stride, s.padding, out_h) else {
                    continue;
                };
                for kw in 0..s.kernel_w {
                    let Some(ow) = output_coordinate(iw, kw, s.stride, s.padding, out_w) else {
                        continue;
                    };
                    let g = grad_output[at(y_dims, [n, o, oh, ow])];
                    let w = weight[at(w_dims, [o, c, kh, kw])];
                    acc += g.widen() * w.widen();
                }
            }
        }
        acc
    });
    Ok(())
}

/// `grad_weight[o][c][kh][kw] += sum_{n, oh, ow} grad_output[n][o][oh][ow] *
/// input[n][c][oh*s - p + kh][ow*s - p + kw]` (accumulates).
pub fn conv2d_backward_filter<T: Element>(
    shape: &Conv2dShape,
    input: &[T],
    grad_output: &[T],
    grad_weight: &mut [T],
) -> Result<()> {
    shape.check(input.len(), grad_weight.len(), grad_output.len())?;
    let s = shape;
    let (x_dims, w_dims, y_dims) = extents(s);
    gather(grad_weight, w_dims, true, |[o, c, kh, kw]| {
        let mut acc = 0.0f64;
        for n in 0..s.batch {
            for oh in 0..y_dims[2] {
                let Some(ih) = input_coordinate(oh, kh, s.stride, s.padding, s.in_height) else {
                    continue;
                };
                for ow in 0..y_dims[3] {
                    let Some(iw) = input_coordinate(ow, kw, s.stride, s.padding, s.in_width) else {
                        continue;
                    };
                    let g = grad_output[at(y_dims, [n, o, oh, ow])];
                    let x = input[at(x_dims, [n, c, ih, iw])];
                    acc += g.widen() * x.widen();
                }
            }
        }
        acc
    });
    Ok(())
}

impl<T: Element> crate::backend::ConvOps for ReferenceBackend<T> {
    fn conv2d_workspace_len(&self, _shape: &Conv2dShape) -> usize {
        // Direct summation needs no scratch.
        0
    }

    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        _workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv2d_forward(shape, input, weight, output)
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        _workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv2d_backward_data(shape, grad_output, weight, grad_input)
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        _workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv2d_backward_filter(shape, input, grad_output, grad_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(in_hw: usize, kernel: usize, stride: usize, padding: usize) -> Conv2dShape {
        Conv2dShape {
            batch: 1,
            in_channels: 1,
            in_height: in_hw,
            in_width: in_hw,
            out_channels: 1,
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            padding,
        }
    }

    #[test]
    fn padded_3x3_forward_by_hand() {
        // A 2x2 input of ones under a 3x3 all-ones kernel with padding 1: every output sees the
        // whole input.
        let s = shape(2, 3, 1, 1);
        let mut out = [0.0f64; 4];
        conv2d_forward(&s, &[1.0; 4], &[1.0; 9], &mut out).unwrap();
        assert_eq!(out, [4.0; 4]);
        assert!(conv2d_forward(&s, &[1.0; 3], &[1.0; 9], &mut out).is_err());
    }

    #[test]
    fn stride_two_backward_by_hand() {
        // 3x3 input, 1x1 kernel of weight 2, stride 2: outputs read the four corners.
        let s = shape(3, 1, 2, 0);
        let input: [f64; 9] = core::array::from_fn(|e| e as f64);
        let mut out = [0.0; 4];
        conv2d_forward(&s, &input, &[2.0], &mut out).unwrap();
        assert_eq!(out, [0.0, 4.0, 12.0, 16.0]);
        let mut grad_input = [9.0; 9];
        conv2d_backward_data(&s, &[1.0, 2.0, 3.0, 4.0], &[2.0], &mut grad_input).unwrap();
        assert_eq!(grad_input, [2.0, 0.0, 4.0, 0.0, 0.0, 0.0, 6.0, 0.0, 8.0]);
        let mut grad_weight = [1.0];
        conv2d_backward_filter(&s, &input, &[1.0, 1.0, 1.0, 1.0], &mut grad_weight).unwrap();
        assert_eq!(grad_weight, [1.0 + 0.0 + 2.0 + 6.0 + 8.0]);
    }
}
