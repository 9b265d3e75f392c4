//! Pooling: max pooling with its argmax, and global average pooling.

use super::conv::Conv2dShape;
use super::padded;
use super::MemoryOps;
use crate::error::{check_len, ensure, Result};

/// Checks the buffers of global average pooling over `[batch, channels, spatial]` (`x` that
/// long, `y` one value per plane); returns (planes, elements of x).
pub fn check_global_pool(
    what: &'static str,
    x_len: usize,
    y_len: usize,
    batch: usize,
    channels: usize,
    spatial: usize,
) -> Result<(usize, usize)> {
    let planes = batch.saturating_mul(channels);
    let len = planes.saturating_mul(spatial);
    check_len(what, x_len, len)?;
    check_len(what, y_len, planes)?;
    ensure(
        spatial >= 1 || planes == 0,
        what,
        "spatial size must be at least 1",
    )?;
    Ok((planes, len))
}

/// Max pooling over NCHW with a square window, the same stride and padding on both axes;
/// padded positions are never selected (they count as -infinity), as in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub batch: usize,
    pub channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl PoolShape {
    /// The convolution with this window and one output channel per input channel: pooling's
    /// output grid and tensor sizes are exactly its.
    fn window(&self) -> Conv2dShape {
        Conv2dShape {
            batch: self.batch,
            in_channels: self.channels,
            in_height: self.in_height,
            in_width: self.in_width,
            out_channels: self.channels,
            kernel_h: self.kernel,
            kernel_w: self.kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }
    pub fn out_height(&self) -> usize {
        self.window().out_height()
    }
    pub fn out_width(&self) -> usize {
        self.window().out_width()
    }
    pub fn input_len(&self) -> usize {
        self.window().input_len()
    }
    pub fn output_len(&self) -> usize {
        self.window().output_len()
    }
    pub fn check(&self, input_len: usize, output_len: usize, argmax_len: usize) -> Result<()> {
        ensure(
            self.stride >= 1 && self.kernel >= 1,
            "max_pool2d",
            "kernel and stride must be at least 1",
        )?;
        ensure(
            self.padding <= self.kernel / 2,
            "max_pool2d",
            "padding must be at most half the kernel",
        )?;
        ensure(
            padded(self.in_height, self.padding) >= self.kernel
                && padded(self.in_width, self.padding) >= self.kernel,
            "max_pool2d",
            "kernel larger than the padded input",
        )?;
        check_len("max_pool2d input", input_len, self.input_len())?;
        check_len("max_pool2d output", output_len, self.output_len())?;
        check_len("max_pool2d argmax", argmax_len, self.output_len())
    }
}

pub trait PoolOps: MemoryOps {
    /// Max pooling; `argmax[o]` = index `h * in_width + w` of the chosen input within its
    /// (image, channel) plane; the first maximum in row-major window order wins ties. A NaN in
    /// the window is selected (the last NaN, as PyTorch) and recorded as `NonFinite` at the
    /// output index.
    fn max_pool2d_forward(
        &self,
        shape: &PoolShape,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        argmax: &mut Self::IndexBuffer,
    ) -> Result<()>;

    /// `grad_x = 0`, then `grad_x[plane + argmax[o]] += grad_y[o]` for every output o.
    fn max_pool2d_backward(
        &self,
        shape: &PoolShape,
        grad_y: &Self::Buffer,
        argmax: &Self::IndexBuffer,
        grad_x: &mut Self::Buffer,
    ) -> Result<()>;

    /// `y[n][c] = mean over spatial of x[n][c][..]`, x is `[batch, channels, spatial]`.
    fn global_avg_pool_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()>;

    /// `grad_x[n][c][s] = grad_y[n][c] / spatial`, written.
    fn global_avg_pool_backward(
        &self,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        batch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()>;
}
