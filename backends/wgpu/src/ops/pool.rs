//! Max pooling and global average pooling (to be written).

use dscl_core::desc::PoolShape;
use dscl_core::{Error, Result};

use crate::{WgpuBackend, WgpuBuffer};

const TODO: Error = Error::Device {
    what: "dscl-wgpu: kernel not written yet",
    code: -100,
};

pub(crate) fn max_forward(
    _be: &WgpuBackend,
    _shape: &PoolShape,
    _x: &WgpuBuffer<f32>,
    _y: &mut WgpuBuffer<f32>,
    _argmax: &mut WgpuBuffer<u32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn max_backward(
    _be: &WgpuBackend,
    _shape: &PoolShape,
    _grad_y: &WgpuBuffer<f32>,
    _argmax: &WgpuBuffer<u32>,
    _grad_x: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn global_avg_forward(
    _be: &WgpuBackend,
    _x: &WgpuBuffer<f32>,
    _y: &mut WgpuBuffer<f32>,
    _batch: usize,
    _channels: usize,
    _spatial: usize,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn global_avg_backward(
    _be: &WgpuBackend,
    _grad_y: &WgpuBuffer<f32>,
    _grad_x: &mut WgpuBuffer<f32>,
    _batch: usize,
    _channels: usize,
    _spatial: usize,
) -> Result<()> {
    Err(TODO)
}
