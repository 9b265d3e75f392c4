//! Batch normalisation over `[batch, channels, spatial]`.
//!
//! Training forward: one workgroup per channel reduces the batch statistics (two passes,
//! Kahan-compensated, see `batch_norm_stats.wgsl`) into `save_mean` / `save_invstd` and moves
//! the running statistics; a second, elementwise kernel then normalises every value, so the
//! write pass is not limited to one workgroup per channel. Inference is that elementwise kernel
//! on the running statistics. Backward keeps one workgroup per channel for both the sums and dx.

use dscl_core::desc::BatchNormShape;
use dscl_core::error::{check_len, ensure};
use dscl_core::Result;

use super::{f32_bits, groups, word};
use crate::kernel::kernel;
use crate::{WgpuBackend, WgpuBuffer};

const STATS: &str = include_str!("../shaders/batch_norm_stats.wgsl");
const APPLY: &str = include_str!("../shaders/batch_norm_apply.wgsl");
const BACKWARD: &str = include_str!("../shaders/batch_norm_backward.wgsl");

kernel!(
    BN_STATS,
    STATS,
    "bn_stats",
    [Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite],
    256
);
kernel!(
    BN_APPLY,
    APPLY,
    "bn_apply",
    [Read, Read, Read, Read, Read, ReadWrite],
    256
);
kernel!(
    BN_BACKWARD,
    BACKWARD,
    "bn_backward",
    [Read, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite],
    256
);

/// The CPU backend's checks, in its order: the descriptor on the first buffer of each group,
/// then every buffer, then that a channel has values. Returns n = batch * spatial.
fn check_all(
    shape: &BatchNormShape,
    data: &[(&'static str, usize)],
    channel: &[(&'static str, usize)],
) -> Result<usize> {
    let first = |list: &[(&'static str, usize)]| list.first().map_or(0, |&(_, l)| l);
    shape.check(first(data), first(channel))?;
    let len = shape
        .batch
        .checked_mul(shape.channels)
        .and_then(|v| v.checked_mul(shape.spatial))
        .unwrap_or(usize::MAX);
    for &(what, l) in data {
        check_len(what, l, len)?;
    }
    for &(what, l) in channel {
        check_len(what, l, shape.channels)?;
    }
    let n = shape.batch.saturating_mul(shape.spatial);
    ensure(
        n >= 1 || shape.channels == 0,
        "batch_norm",
        "each channel needs at least one value",
    )?;
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_train(
    be: &WgpuBackend,
    shape: &BatchNormShape,
    x: &WgpuBuffer<f32>,
    gamma: &WgpuBuffer<f32>,
    beta: &WgpuBuffer<f32>,
    y: &mut WgpuBuffer<f32>,
    save_mean: &mut WgpuBuffer<f32>,
    save_invstd: &mut WgpuBuffer<f32>,
    running_mean: &mut WgpuBuffer<f32>,
    running_var: &mut WgpuBuffer<f32>,
) -> Result<()> {
    let n = check_all(
        shape,
        &[("batch_norm x", x.len), ("batch_norm y", y.len)],
        &[
            ("batch_norm gamma", gamma.len),
            ("batch_norm beta", beta.len),
            ("batch_norm save_mean", save_mean.len),
            ("batch_norm save_invstd", save_invstd.len),
            ("batch_norm running_mean", running_mean.len),
            ("batch_norm running_var", running_var.len),
        ],
    )?;
    if shape.channels == 0 {
        return Ok(());
    }
    let what = "batch_norm_forward_train";
    let len = word(what, shape.len())?;
    let (c, s) = (word(what, shape.channels)?, word(what, shape.spatial)?);
    let nf = n as f64;
    // n / (n - 1) in f64: the unbiased correction, unused (and undefined) when n = 1.
    let unbias = if n > 1 { nf / (nf - 1.0) } else { 1.0 };
    be.rec().dispatch(
        &BN_STATS,
        &[
            x.whole(),
            save_mean.whole(),
            save_invstd.whole(),
            running_mean.whole(),
            running_var.whole(),
        ],
        &[
            c,
            s,
            word(what, n)?,
            f32_bits(shape.eps),
            f32_bits(1.0 - shape.momentum),
            f32_bits(shape.momentum),
            f32_bits(unbias),
            u32::from(n > 1),
        ],
        groups(shape.channels, 1)?,
    )?;
    be.rec().dispatch(
        &BN_APPLY,
        &[
            x.whole(),
            gamma.whole(),
            beta.whole(),
            save_mean.whole(),
            save_invstd.whole(),
            y.whole(),
        ],
        &[len, c, s, 0, 0],
        groups(shape.len(), BN_APPLY.workgroup)?,
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_inference(
    be: &WgpuBackend,
    shape: &BatchNormShape,
    x: &WgpuBuffer<f32>,
    gamma: &WgpuBuffer<f32>,
    beta: &WgpuBuffer<f32>,
    running_mean: &WgpuBuffer<f32>,
    running_var: &WgpuBuffer<f32>,
    y: &mut WgpuBuffer<f32>,
) -> Result<()> {
    shape.check(x.len, gamma.len)?;
    check_len("batch_norm y", y.len, shape.len())?;
    for (what, l) in [
        ("batch_norm beta", beta.len),
        ("batch_norm running_mean", running_mean.len),
        ("batch_norm running_var", running_var.len),
    ] {
        check_len(what, l, shape.channels)?;
    }
    let what = "batch_norm_forward_inference";
    if shape.is_empty() {
        return Ok(());
    }
    be.rec().dispatch(
        &BN_APPLY,
        &[
            x.whole(),
            gamma.whole(),
            beta.whole(),
            running_mean.whole(),
            running_var.whole(),
            y.whole(),
        ],
        &[
            word(what, shape.len())?,
            word(what, shape.channels)?,
            word(what, shape.spatial)?,
            1,
            f32_bits(shape.eps),
        ],
        groups(shape.len(), BN_APPLY.workgroup)?,
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    be: &WgpuBackend,
    shape: &BatchNormShape,
    x: &WgpuBuffer<f32>,
    grad_y: &WgpuBuffer<f32>,
    gamma: &WgpuBuffer<f32>,
    save_mean: &WgpuBuffer<f32>,
    save_invstd: &WgpuBuffer<f32>,
    grad_x: &mut WgpuBuffer<f32>,
    grad_gamma: &mut WgpuBuffer<f32>,
    grad_beta: &mut WgpuBuffer<f32>,
) -> Result<()> {
    let n = check_all(
        shape,
        &[
            ("batch_norm x", x.len),
            ("batch_norm grad_y", grad_y.len),
            ("batch_norm grad_x", grad_x.len),
        ],
        &[
            ("batch_norm gamma", gamma.len),
            ("batch_norm save_mean", save_mean.len),
            ("batch_norm save_invstd", save_invstd.len),
            ("batch_norm grad_gamma", grad_gamma.len),
            ("batch_norm grad_beta", grad_beta.len),
        ],
    )?;
    if shape.channels == 0 {
        return Ok(());
    }
    let what = "batch_norm_backward";
    word(what, shape.len())?;
    be.rec().dispatch(
        &BN_BACKWARD,
        &[
            x.whole(),
            grad_y.whole(),
            gamma.whole(),
            save_mean.whole(),
            save_invstd.whole(),
            grad_x.whole(),
            grad_gamma.whole(),
            grad_beta.whole(),
        ],
        &[
            word(what, shape.channels)?,
            word(what, shape.spatial)?,
            word(what, n)?,
        ],
        groups(shape.channels, 1)?,
    )
}
