//! Convolution: 2-d cross-correlation forward and its two backward passes, with the scratch
//! a backend may ask for.

use super::MemoryOps;
use super::{out_extent, padded, product};
use crate::error::{check_len, ensure, Result};

/// A 2-D convolution without bias or groups, dilation 1, the same stride and zero padding on
/// both axes. Input `[batch, in_channels, in_height, in_width]`, weight
/// `[out_channels, in_channels, kernel_h, kernel_w]`, output
/// `[batch, out_channels, out_height, out_width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2dShape {
    pub fn out_height(&self) -> usize {
        out_extent(self.in_height, self.padding, self.kernel_h, self.stride)
    }
    pub fn out_width(&self) -> usize {
        out_extent(self.in_width, self.padding, self.kernel_w, self.stride)
    }
    pub fn input_len(&self) -> usize {
        product(&[self.batch, self.in_channels, self.in_height, self.in_width])
    }
    pub fn weight_len(&self) -> usize {
        product(&[
            self.out_channels,
            self.in_channels,
            self.kernel_h,
            self.kernel_w,
        ])
    }
    pub fn output_len(&self) -> usize {
        product(&[
            self.batch,
            self.out_channels,
            self.out_height(),
            self.out_width(),
        ])
    }
    pub fn check_shape(&self) -> Result<()> {
        ensure(self.stride >= 1, "conv2d", "stride must be at least 1")?;
        ensure(
            self.kernel_h >= 1 && self.kernel_w >= 1,
            "conv2d",
            "kernel must be at least 1x1",
        )?;
        ensure(
            padded(self.in_height, self.padding) >= self.kernel_h
                && padded(self.in_width, self.padding) >= self.kernel_w,
            "conv2d",
            "kernel larger than the padded input",
        )?;
        ensure(
            self.padding < self.kernel_h && self.padding < self.kernel_w,
            "conv2d",
            "padding must be smaller than the kernel",
        )
    }
    /// Checks input, weight and output buffer sizes (in either direction of the pass).
    pub fn check(&self, input_len: usize, weight_len: usize, output_len: usize) -> Result<()> {
        self.check_shape()?;
        check_len("conv2d input", input_len, self.input_len())?;
        check_len("conv2d weight", weight_len, self.weight_len())?;
        check_len("conv2d output", output_len, self.output_len())
    }
    /// Multiply-adds of the forward pass, times two.
    pub fn flops(&self) -> f64 {
        2.0 * self.output_len() as f64
            * self.in_channels as f64
            * self.kernel_h as f64
            * self.kernel_w as f64
    }
}

pub trait ConvOps: MemoryOps {
    /// Scratch elements the three conv2d methods need for `shape` (0 when none).
    fn conv2d_workspace_len(&self, shape: &Conv2dShape) -> usize;

    /// `output = conv2d(input, weight)` (cross-correlation, as PyTorch), written.
    fn conv2d_forward(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        weight: &Self::Buffer,
        output: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()>;

    /// `grad_input = d(output)/d(input)^T grad_output`, written.
    fn conv2d_backward_data(
        &self,
        shape: &Conv2dShape,
        grad_output: &Self::Buffer,
        weight: &Self::Buffer,
        grad_input: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()>;

    /// `grad_weight += d(output)/d(weight)^T grad_output` (accumulates).
    fn conv2d_backward_filter(
        &self,
        shape: &Conv2dShape,
        input: &Self::Buffer,
        grad_output: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        workspace: &mut Self::Buffer,
    ) -> Result<()>;
}
