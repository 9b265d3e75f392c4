//! Max pooling (PyTorch semantics: padding never selected, first maximum in row-major window
//! order wins, a NaN in the window is selected and recorded) and global average pooling.
//!
//! Max-pool backward is a gather, one invocation per input element over the few outputs whose
//! windows cover it, so overlapping windows need no float atomics and the sum is deterministic.

use dscl_core::desc::{check_global_pool, PoolShape};
use dscl_core::error::ensure;
use dscl_core::Result;

use super::{groups, word};
use crate::kernel::kernel;
use crate::{WgpuBackend, WgpuBuffer};

const MAX: &str = include_str!("../shaders/pool_max.wgsl");
const MAX_BACKWARD: &str = include_str!("../shaders/pool_max_backward.wgsl");
const AVG: &str = include_str!("../shaders/pool_avg.wgsl");

kernel!(
    MAX_POOL_FORWARD,
    MAX,
    "max_pool_forward",
    [Read, ReadWrite, ReadWrite],
    256
);
kernel!(
    MAX_POOL_BACKWARD,
    MAX_BACKWARD,
    "max_pool_backward",
    [Read, Read, ReadWrite],
    256
);
kernel!(GAP_FORWARD, AVG, "gap_forward", [Read, ReadWrite], 64);
kernel!(GAP_BACKWARD, AVG, "gap_backward", [Read, ReadWrite], 256);

/// The geometry words both max-pool kernels read after their element count (`pu(1..=7)`).
/// Window arithmetic in the shaders adds padding, kernel and stride to a coordinate, so that
/// sum must fit in 32 bits too.
fn geometry(what: &'static str, shape: &PoolShape) -> Result<[u32; 7]> {
    let reach = shape
        .in_height
        .max(shape.in_width)
        .saturating_add(shape.padding.saturating_mul(2))
        .saturating_add(shape.kernel)
        .saturating_add(shape.stride);
    word(what, reach)?;
    word(what, shape.input_len())?;
    word(what, shape.output_len())?;
    Ok([
        word(what, shape.in_height)?,
        word(what, shape.in_width)?,
        word(what, shape.out_height())?,
        word(what, shape.out_width())?,
        word(what, shape.kernel)?,
        word(what, shape.stride)?,
        word(what, shape.padding)?,
    ])
}

fn with_count(count: u32, geometry: [u32; 7]) -> [u32; 8] {
    let mut words = [count; 8];
    words[1..].copy_from_slice(&geometry);
    words
}

pub(crate) fn max_forward(
    be: &WgpuBackend,
    shape: &PoolShape,
    x: &WgpuBuffer<f32>,
    y: &mut WgpuBuffer<f32>,
    argmax: &mut WgpuBuffer<u32>,
) -> Result<()> {
    shape.check(x.len, y.len, argmax.len)?;
    ensure(
        shape
            .in_height
            .checked_mul(shape.in_width)
            .is_some_and(|p| u32::try_from(p).is_ok()),
        "max_pool2d",
        "an input plane must have fewer than 2^32 elements (u32 argmax)",
    )?;
    let out_len = shape.output_len();
    if out_len == 0 {
        return Ok(());
    }
    let what = "max_pool2d_forward";
    let words = with_count(word(what, out_len)?, geometry(what, shape)?);
    be.rec().dispatch(
        &MAX_POOL_FORWARD,
        &[x.whole(), y.whole(), argmax.whole()],
        &words,
        groups(out_len, MAX_POOL_FORWARD.workgroup)?,
    )
}

pub(crate) fn max_backward(
    be: &WgpuBackend,
    shape: &PoolShape,
    grad_y: &WgpuBuffer<f32>,
    argmax: &WgpuBuffer<u32>,
    grad_x: &mut WgpuBuffer<f32>,
) -> Result<()> {
    shape.check(grad_x.len, grad_y.len, argmax.len)?;
    let in_len = shape.input_len();
    if in_len == 0 {
        return Ok(());
    }
    let what = "max_pool2d_backward";
    let words = with_count(word(what, in_len)?, geometry(what, shape)?);
    be.rec().dispatch(
        &MAX_POOL_BACKWARD,
        &[grad_y.whole(), argmax.whole(), grad_x.whole()],
        &words,
        groups(in_len, MAX_POOL_BACKWARD.workgroup)?,
    )
}

pub(crate) fn global_avg_forward(
    be: &WgpuBackend,
    x: &WgpuBuffer<f32>,
    y: &mut WgpuBuffer<f32>,
    batch: usize,
    channels: usize,
    spatial: usize,
) -> Result<()> {
    let what = "global_avg_pool";
    let (planes, len) = check_global_pool(what, x.len, y.len, batch, channels, spatial)?;
    if planes == 0 {
        return Ok(());
    }
    word(what, len)?;
    be.rec().dispatch(
        &GAP_FORWARD,
        &[x.whole(), y.whole()],
        &[word(what, planes)?, word(what, spatial)?],
        groups(planes, 1)?,
    )
}

pub(crate) fn global_avg_backward(
    be: &WgpuBackend,
    grad_y: &WgpuBuffer<f32>,
    grad_x: &mut WgpuBuffer<f32>,
    batch: usize,
    channels: usize,
    spatial: usize,
) -> Result<()> {
    let what = "global_avg_pool_backward";
    let (_, len) = check_global_pool(what, grad_x.len, grad_y.len, batch, channels, spatial)?;
    if len == 0 {
        return Ok(());
    }
    be.rec().dispatch(
        &GAP_BACKWARD,
        &[grad_y.whole(), grad_x.whole()],
        &[word(what, len)?, word(what, spatial)?],
        groups(len, GAP_BACKWARD.workgroup)?,
    )
}
