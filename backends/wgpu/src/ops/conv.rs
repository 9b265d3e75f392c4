//! conv2d forward and both backwards (to be written).

use dscl_core::desc::Conv2dShape;
use dscl_core::{Error, Result};

use crate::{WgpuBackend, WgpuBuffer};

const TODO: Error = Error::Device {
    what: "dscl-wgpu: kernel not written yet",
    code: -100,
};

pub(crate) fn workspace_len(_be: &WgpuBackend, _shape: &Conv2dShape) -> usize {
    0
}
pub(crate) fn forward(
    _be: &WgpuBackend,
    _shape: &Conv2dShape,
    _input: &WgpuBuffer<f32>,
    _weight: &WgpuBuffer<f32>,
    _output: &mut WgpuBuffer<f32>,
    _workspace: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn backward_data(
    _be: &WgpuBackend,
    _shape: &Conv2dShape,
    _grad_output: &WgpuBuffer<f32>,
    _weight: &WgpuBuffer<f32>,
    _grad_input: &mut WgpuBuffer<f32>,
    _workspace: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn backward_filter(
    _be: &WgpuBackend,
    _shape: &Conv2dShape,
    _input: &WgpuBuffer<f32>,
    _grad_output: &WgpuBuffer<f32>,
    _grad_weight: &mut WgpuBuffer<f32>,
    _workspace: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
