//! ROI-align (to be written).

use dscl_core::desc::RoiAlignShape;
use dscl_core::{Error, Result};

use crate::{WgpuBackend, WgpuBuffer};

const TODO: Error = Error::Device {
    what: "dscl-wgpu: kernel not written yet",
    code: -100,
};

pub(crate) fn forward(
    _be: &WgpuBackend,
    _shape: &RoiAlignShape,
    _features: &WgpuBuffer<f32>,
    _boxes: &WgpuBuffer<f32>,
    _output: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn backward(
    _be: &WgpuBackend,
    _shape: &RoiAlignShape,
    _grad_output: &WgpuBuffer<f32>,
    _boxes: &WgpuBuffer<f32>,
    _grad_features: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
