//! GEMM and the linear layer's bias (to be written).

use dscl_core::desc::GemmDesc;
use dscl_core::{Error, Result};

use crate::{WgpuBackend, WgpuBuffer};

const TODO: Error = Error::Device {
    what: "dscl-wgpu: kernel not written yet",
    code: -100,
};

pub(crate) fn gemm(
    _be: &WgpuBackend,
    _desc: &GemmDesc,
    _a: &WgpuBuffer<f32>,
    _b: &WgpuBuffer<f32>,
    _c: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn bias_add(
    _be: &WgpuBackend,
    _x: &mut WgpuBuffer<f32>,
    _bias: &WgpuBuffer<f32>,
    _rows: usize,
    _cols: usize,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn bias_backward(
    _be: &WgpuBackend,
    _grad_out: &WgpuBuffer<f32>,
    _grad_bias: &mut WgpuBuffer<f32>,
    _rows: usize,
    _cols: usize,
) -> Result<()> {
    Err(TODO)
}
