//! Batch normalisation (to be written).

use dscl_core::desc::BatchNormShape;
use dscl_core::{Error, Result};

use crate::{WgpuBackend, WgpuBuffer};

const TODO: Error = Error::Device {
    what: "dscl-wgpu: kernel not written yet",
    code: -100,
};

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_train(
    _be: &WgpuBackend,
    _shape: &BatchNormShape,
    _x: &WgpuBuffer<f32>,
    _gamma: &WgpuBuffer<f32>,
    _beta: &WgpuBuffer<f32>,
    _y: &mut WgpuBuffer<f32>,
    _save_mean: &mut WgpuBuffer<f32>,
    _save_invstd: &mut WgpuBuffer<f32>,
    _running_mean: &mut WgpuBuffer<f32>,
    _running_var: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_inference(
    _be: &WgpuBackend,
    _shape: &BatchNormShape,
    _x: &WgpuBuffer<f32>,
    _gamma: &WgpuBuffer<f32>,
    _beta: &WgpuBuffer<f32>,
    _running_mean: &WgpuBuffer<f32>,
    _running_var: &WgpuBuffer<f32>,
    _y: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    _be: &WgpuBackend,
    _shape: &BatchNormShape,
    _x: &WgpuBuffer<f32>,
    _grad_y: &WgpuBuffer<f32>,
    _gamma: &WgpuBuffer<f32>,
    _save_mean: &WgpuBuffer<f32>,
    _save_invstd: &WgpuBuffer<f32>,
    _grad_x: &mut WgpuBuffer<f32>,
    _grad_gamma: &mut WgpuBuffer<f32>,
    _grad_beta: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
