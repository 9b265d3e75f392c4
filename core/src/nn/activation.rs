//! ReLU and the residual join, the two parameter-free elementwise layers of a ResNet.

use crate::backend::Backend;
use crate::error::Result;

/// `y = max(x, 0)`.
pub fn relu_forward<B: Backend>(
    backend: &B,
    x: &B::Buffer,
    y: &mut B::Buffer,
    len: usize,
) -> Result<()> {
    backend.relu_forward(x, y, len)
}

/// `dx = dy` where the forward output `y` is positive, else 0.
pub fn relu_backward<B: Backend>(
    backend: &B,
    y: &B::Buffer,
    dy: &B::Buffer,
    dx: &mut B::Buffer,
    len: usize,
) -> Result<()> {
    backend.relu_backward(y, dy, dx, len)
}

/// The residual join `y = branch + shortcut`.
pub fn residual_forward<B: Backend>(
    backend: &B,
    branch: &B::Buffer,
    shortcut: &B::Buffer,
    y: &mut B::Buffer,
    len: usize,
) -> Result<()> {
    backend.add(branch, shortcut, y, len)
}

/// Backward of the join: both inputs receive `dy` unchanged, so the branch uses `dy` itself
/// and the shortcut's gradient is added into its input gradient: `dx_shortcut += dy`.
pub fn residual_backward_into<B: Backend>(
    backend: &B,
    dy: &B::Buffer,
    dx_shortcut: &mut B::Buffer,
    len: usize,
) -> Result<()> {
    backend.axpy(1.0, dy, dx_shortcut, len)
}
