//! Row kernels: L2 normalisation, softmax, log-sum-exp and the fused losses (to be written).

use dscl_core::desc::{ContrastiveRowsDesc, RowsDesc};
use dscl_core::{Error, Result};

use crate::{WgpuBackend, WgpuBuffer};

const TODO: Error = Error::Device {
    what: "dscl-wgpu: kernel not written yet",
    code: -100,
};

pub(crate) fn l2_normalize_forward(
    _be: &WgpuBackend,
    _x: &WgpuBuffer<f32>,
    _y: &mut WgpuBuffer<f32>,
    _norms: &mut WgpuBuffer<f32>,
    _rows: usize,
    _cols: usize,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn l2_normalize_backward(
    _be: &WgpuBackend,
    _y: &WgpuBuffer<f32>,
    _norms: &WgpuBuffer<f32>,
    _grad_y: &WgpuBuffer<f32>,
    _grad_x: &mut WgpuBuffer<f32>,
    _rows: usize,
    _cols: usize,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn row_softmax(
    _be: &WgpuBackend,
    _desc: &RowsDesc,
    _x: &WgpuBuffer<f32>,
    _y: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn row_logsumexp(
    _be: &WgpuBackend,
    _desc: &RowsDesc,
    _x: &WgpuBuffer<f32>,
    _out: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn contrastive_rows(
    _be: &WgpuBackend,
    _desc: &ContrastiveRowsDesc,
    _logits: &mut WgpuBuffer<f32>,
    _labels: &WgpuBuffer<u32>,
    _loss: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn soft_cross_entropy(
    _be: &WgpuBackend,
    _desc: &RowsDesc,
    _grad_scale: f64,
    _logits: &mut WgpuBuffer<f32>,
    _targets: &WgpuBuffer<f32>,
    _loss: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
pub(crate) fn softmax_cross_entropy(
    _be: &WgpuBackend,
    _desc: &RowsDesc,
    _grad_scale: f64,
    _logits: &mut WgpuBuffer<f32>,
    _labels: &WgpuBuffer<u32>,
    _loss: &mut WgpuBuffer<f32>,
) -> Result<()> {
    Err(TODO)
}
