//! Pooling: max pooling with its argmax, and global average pooling.

use super::MemoryOps;
use crate::desc::PoolShape;
use crate::error::Result;

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
