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
    let (out_h, out_w) = (s.out_height(), s.out_width());
    let mut out_index = 0;
    for n in 0..s.batch {
        for o in 0..s.out_channels {
            for oh in 0..out_h {
                for ow in 0..out_w {
                    let mut acc = 0.0f64;
                    for c in 0..s.in_channels {
                        for kh in 0..s.kernel_h {
                            let Some(ih) =
                                input_coordinate(oh, kh, s.stride, s.padding, s.in_height)
                            else {
                                continue;
                            };
                            for kw in 0..s.kernel_w {
                                let Some(iw) =
                                    input_coordinate(ow, kw, s.stride, s.padding, s.in_width)
                                else {
                                    continue;
                                };
                                let x = input[((n * s.in_channels + c) * s.in_height + ih)
                                    * s.in_width
                                    + iw];
                                let w = weight
                                    [((o * s.in_channels + c) * s.kernel_h + kh) * s.kernel_w + kw];
                                acc += x.widen() * w.widen();
                            }
                        }
                    }
                    output[out_index] = T::from_f64(acc);
                    out_index += 1;
                }
            }
        }
    }
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
    let (out_h, out_w) = (s.out_height(), s.out_width());
    let mut in_index = 0;
    for n in 0..s.batch {
        for c in 0..s.in_channels {
            for ih in 0..s.in_height {
                for iw in 0..s.in_width {
                    let mut acc = 0.0f64;
                    for o in 0..s.out_channels {
                        for kh in 0..s.kernel_h {
                            let Some(oh) = output_coordinate(ih, kh, s.stride, s.padding, out_h)
                            else {
                                continue;
                            };
                            for kw in 0..s.kernel_w {
                                let Some(ow) =
                                    output_coordinate(iw, kw, s.stride, s.padding, out_w)
                                else {
                                    continue;
                                };
                                let g = grad_output
                                    [((n * s.out_channels + o) * out_h + oh) * out_w + ow];
                                let w = weight
                                    [((o * s.in_channels + c) * s.kernel_h + kh) * s.kernel_w + kw];
                                acc += g.widen() * w.widen();
                            }
                        }
                    }
                    grad_input[in_index] = T::from_f64(acc);
                    in_index += 1;
                }
            }
        }
    }
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
    let (out_h, out_w) = (s.out_height(), s.out_width());
    let mut weight_index = 0;
    for o in 0..s.out_channels {
        for c in 0..s.in_channels {
            for kh in 0..s.kernel_h {
                for kw in 0..s.kernel_w {
                    let mut acc = 0.0f64;
                    for n in 0..s.batch {
                        for oh in 0..out_h {
                            let Some(ih) =
                                input_coordinate(oh, kh, s.stride, s.padding, s.in_height)
                            else {
                                continue;
                            };
                            for ow in 0..out_w {
                                let Some(iw) =
                                    input_coordinate(ow, kw, s.stride, s.padding, s.in_width)
                                else {
                                    continue;
                                };
                                let g = grad_output
                                    [((n * s.out_channels + o) * out_h + oh) * out_w + ow];
                                let x = input[((n * s.in_channels + c) * s.in_height + ih)
                                    * s.in_width
                                    + iw];
                                acc += g.widen() * x.widen();
                            }
                        }
                    }
                    let gw = &mut grad_weight[weight_index];
                    *gw = T::from_f64(gw.widen() + acc);
                    weight_index += 1;
                }
            }
        }
    }
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
        conv2d_forward(
            shape,
            input.as_slice(),
            weight.as_slice(),
            output.as_mut_slice(),
        )
    }

    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        _workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv2d_backward_data(
            shape,
            grad_output.as_slice(),
            weight.as_slice(),
            grad_input.as_mut_slice(),
        )
    }

    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        _workspace: &mut Self::Buffer,
    ) -> Result<()> {
        conv2d_backward_filter(
            shape,
            input.as_slice(),
            grad_output.as_slice(),
            grad_weight.as_mut_slice(),
        )
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
