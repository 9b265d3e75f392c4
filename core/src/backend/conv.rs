//! Convolution: 2-d cross-correlation forward and its two backward passes, with the scratch
//! a backend may ask for.

use super::MemoryOps;
use crate::desc::Conv2dShape;
use crate::error::Result;

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
