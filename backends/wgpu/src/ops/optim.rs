//! SGD with momentum and the momentum-encoder EMA (to be written).

use dscl_core::desc::SgdParams;
use dscl_core::{Error, Result};

use crate::{WgpuBackend, WgpuBuffer};

const TODO: Error = Error::Device {
    what: "dscl-wgpu: kernel not written yet",
    code: -100,
};

pub(crate) fn sgd_momentum_update(
    _be: &WgpuBackend,
    _params: &SgdParams,
    _weights: &mut WgpuBuffer<f32>,
    _grads: &WgpuBuffer<f32>,
    _velocity: &mut WgpuBuffer<f32>,
    _len: usize,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn ema_update(
    _be: &WgpuBackend,
    _momentum: f64,
    _source: &WgpuBuffer<f32>,
    _target: &mut WgpuBuffer<f32>,
    _len: usize,
) -> Result<()> {
    Err(TODO)
}
