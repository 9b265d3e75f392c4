//! Max pooling (the ImageNet stem's 3x3/2) and global average pooling (the backbone's end).

use crate::backend::Backend;
use crate::desc::PoolShape;
use crate::error::Result;

/// `MaxPool2d(kernel, stride, padding)`; the argmax of each output is saved for backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2d {
    pub fn shape(&self, batch: usize, channels: usize, height: usize, width: usize) -> PoolShape {
        PoolShape {
            batch,
            channels,
            in_height: height,
            in_width: width,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }

    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        shape: &PoolShape,
        x: &B::Buffer,
        y: &mut B::Buffer,
        argmax: &mut B::IndexBuffer,
    ) -> Result<()> {
        backend.max_pool2d_forward(shape, x, y, argmax)
    }

    /// `dx` written: each output's gradient goes to the input it selected.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        shape: &PoolShape,
        dy: &B::Buffer,
        argmax: &B::IndexBuffer,
        dx: &mut B::Buffer,
    ) -> Result<()> {
        backend.max_pool2d_backward(shape, dy, argmax, dx)
    }
}

/// Global average pooling `[batch, channels, spatial] -> [batch, channels]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalAvgPool {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
}

impl GlobalAvgPool {
    pub fn forward<B: Backend>(&self, backend: &B, x: &B::Buffer, y: &mut B::Buffer) -> Result<()> {
        backend.global_avg_pool_forward(x, y, self.batch, self.channels, self.spatial)
    }

    /// `dx` written: every input cell gets `dy / spatial`.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        dy: &B::Buffer,
        dx: &mut B::Buffer,
    ) -> Result<()> {
        backend.global_avg_pool_backward(dy, dx, self.batch, self.channels, self.spatial)
    }
}
