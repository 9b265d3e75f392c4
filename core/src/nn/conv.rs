//! Convolution layer (no bias: every convolution of a ResNet is followed by batch norm).

use crate::backend::Backend;
use crate::desc::Conv2dShape;
use crate::error::Result;
use crate::nn::tensors::{Init, TensorId, TensorLayout, TensorSet};

/// A bias-free 2-D convolution with a square kernel, `stride` and zero `padding`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub weight: TensorId,
}

impl Conv2d {
    /// Registers the weight `name.weight` (`[out, in, k, k]`, Kaiming-normal fan-out).
    pub fn new(
        params: &mut TensorLayout,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let weight = params.push(
            name,
            "weight",
            &[out_channels, in_channels, kernel, kernel],
            Init::KaimingNormalFanOut {
                fan_out: out_channels * kernel * kernel,
            },
        )?;
        Ok(Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            weight,
        })
    }

    /// The kernel shape for a `[batch, in_channels, height, width]` input.
    pub fn shape(&self, batch: usize, height: usize, width: usize) -> Conv2dShape {
        Conv2dShape {
            batch,
            in_channels: self.in_channels,
            in_height: height,
            in_width: width,
            out_channels: self.out_channels,
            kernel_h: self.kernel,
            kernel_w: self.kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }

    /// `y = conv(x)`.
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        shape: &Conv2dShape,
        x: &B::Buffer,
        y: &mut B::Buffer,
        workspace: &mut B::Buffer,
    ) -> Result<()> {
        backend.conv2d_forward(shape, x, params.get(self.weight), y, workspace)
    }

    /// `grads[weight] += dL/dW`; and `dx = dL/dx` (written) when `dx` is given — the first
    /// layer has no input gradient to compute.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        shape: &Conv2dShape,
        x: &B::Buffer,
        dy: &B::Buffer,
        dx: Option<&mut B::Buffer>,
        workspace: &mut B::Buffer,
    ) -> Result<()> {
        backend.conv2d_backward_filter(shape, x, dy, grads.get_mut(self.weight), workspace)?;
        if let Some(dx) = dx {
            backend.conv2d_backward_data(shape, dy, params.get(self.weight), dx, workspace)?;
        }
        Ok(())
    }
}
