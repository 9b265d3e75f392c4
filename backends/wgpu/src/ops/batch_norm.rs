//! Batch normalisation over `[batch, channels, spatial]`.
//!
//! Training forward: one workgroup per channel reduces the batch statistics (two passes,
//! Kahan-compensated, see `batch_norm_stats.wgsl`) into `save_mean` / `save_invstd` and moves
//! the running statistics; a second, elementwise kernel then normalises every value, so the
//! write pass is not limited to one workgroup per channel. Inference is that elementwise kernel
//! on the running statistics. Backward keeps one workgroup per channel for both the sums and dx.
//!
//! A tensor larger than one storage binding is bound in runs of whole images: the statistics
//! and the backward sums accumulate run by run (a channel's values lie in every image), then
//! the elementwise passes go over the runs; the backward's per-channel totals wait in the
//! backend's scratch buffer, since dgamma / dbeta already hold the caller's earlier values.

use dscl_core::desc::BatchNormShape;
use dscl_core::error::{check_len, ensure};
use dscl_core::Result;

use super::{binding_align, f32_bits, groups, image_runs, word};
use crate::buffer::Window;
use crate::kernel::kernel;
use crate::{WgpuBackend, WgpuBuffer};

const STATS: &str = concat!(
    include_str!("../shaders/batch_norm_common.wgsl"),
    include_str!("../shaders/batch_norm_stats.wgsl")
);
const APPLY: &str = include_str!("../shaders/batch_norm_apply.wgsl");
const BACKWARD: &str = concat!(
    include_str!("../shaders/batch_norm_common.wgsl"),
    include_str!("../shaders/batch_norm_backward.wgsl"),
    include_str!("../shaders/batch_norm_grad_sums.wgsl")
);
const BACKWARD_RUNS: &str = concat!(
    include_str!("../shaders/batch_norm_common.wgsl"),
    include_str!("../shaders/batch_norm_backward_runs.wgsl"),
    include_str!("../shaders/batch_norm_grad_sums.wgsl")
);
const BACKWARD_DX: &str = include_str!("../shaders/batch_norm_backward_dx.wgsl");

kernel!(
    BN_STATS,
    STATS,
    "bn_stats",
    [Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite],
    256
);
kernel!(
    BN_RUN_SUM,
    STATS,
    "bn_run_sum",
    [Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite],
    256
);
kernel!(
    BN_RUN_SQDEV,
    STATS,
    "bn_run_sqdev",
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
kernel!(
    BN_BACKWARD_RUN_SUMS,
    BACKWARD_RUNS,
    "bn_backward_run_sums",
    [Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite],
    256
);
kernel!(
    BN_BACKWARD_RUN_DX,
    BACKWARD_DX,
    "bn_backward_run_dx",
    [Read, Read, Read, Read, Read, Read, ReadWrite],
    256
);

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
    let n = shape.check_buffers(
        &[("batch_norm x", x.len), ("batch_norm y", y.len)],
        &[
            ("batch_norm gamma", gamma.len),
            ("batch_norm beta", beta.len),
            ("batch_norm running_mean", running_mean.len),
            ("batch_norm running_var", running_var.len),
        ],
        &[
            ("batch_norm save_mean", save_mean.len),
            ("batch_norm save_invstd", save_invstd.len),
        ],
    )?;
    if shape.channels == 0 {
        return Ok(());
    }
    let what = "batch_norm_forward_train";
    ensure(
        shape.groups == 1,
        what,
        "statistics groups are not implemented on this backend yet",
    )?;
    word(what, shape.len())?;
    let nf = n as f64;
    // n / (n - 1) in f64: the unbiased correction, unused (and undefined) when n = 1.
    let unbias = if n > 1 { nf / (nf - 1.0) } else { 1.0 };
    let image = shape.channels * shape.spatial;
    let runs = image_runs(be, what, shape.batch, &[image])?;
    let statistics = [
        save_mean.whole(),
        save_invstd.whole(),
        running_mean.whole(),
        running_var.whole(),
    ];
    let mut words = [
        word(what, shape.channels)?,
        word(what, shape.spatial)?,
        word(what, n)?,
        f32_bits(shape.eps),
        f32_bits(1.0 - shape.momentum),
        f32_bits(shape.momentum),
        f32_bits(unbias),
        u32::from(n > 1),
        0,
        0,
        0,
        0,
    ];
    let grid = groups(shape.channels, 1)?;
    if runs.is_whole() {
        let [a, b, c, d] = statistics;
        be.rec()
            .dispatch(&BN_STATS, &[x.whole(), a, b, c, d], &words[..8], grid)?;
    } else {
        let align = binding_align(be);
        let last = runs.clone().count();
        for kernel in [&BN_RUN_SUM, &BN_RUN_SQDEV] {
            for (i, (first, count)) in runs.clone().enumerate() {
                let (xw, x_at) = x.window(first * image, count * image, align);
                words[8] = word(what, count * shape.spatial)?;
                words[9] = word(what, x_at)?;
                words[10] = u32::from(i == 0);
                words[11] = u32::from(i + 1 == last);
                let [a, b, c, d] = statistics;
                be.rec().dispatch(kernel, &[xw, a, b, c, d], &words, grid)?;
            }
        }
    }
    apply(
        be,
        shape,
        x,
        [
            gamma.whole(),
            beta.whole(),
            save_mean.whole(),
            save_invstd.whole(),
        ],
        y,
        None,
    )
}

/// `y = (x - mean_c) * scale_c * gamma_c + beta_c` over the runs of whole images that fit a
/// binding, with `channel` = [gamma, beta, mean, spread]: spread is the inverse standard
/// deviation itself, or with `variance_eps` the variance to add eps to.
fn apply(
    be: &WgpuBackend,
    shape: &BatchNormShape,
    x: &WgpuBuffer<f32>,
    [gamma, beta, mean, spread]: [Window<'_>; 4],
    y: &mut WgpuBuffer<f32>,
    variance_eps: Option<f64>,
) -> Result<()> {
    let what = "batch_norm apply";
    let image = shape.channels * shape.spatial;
    let align = binding_align(be);
    for (first, count) in image_runs(be, what, shape.batch, &[image])? {
        // x and y have the same range, so the same offset in their windows.
        let (xw, at) = x.window(first * image, count * image, align);
        let (yw, _) = y.window(first * image, count * image, align);
        let len = count * image;
        be.rec().dispatch(
            &BN_APPLY,
            &[xw, gamma, beta, mean, spread, yw],
            &[
                word(what, len)?,
                word(what, shape.channels)?,
                word(what, shape.spatial)?,
                u32::from(variance_eps.is_some()),
                f32_bits(variance_eps.unwrap_or(0.0)),
                word(what, at)?,
            ],
            groups(len, BN_APPLY.workgroup)?,
        )?;
    }
    Ok(())
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
    if shape.is_empty() {
        return Ok(());
    }
    word("batch_norm_forward_inference", shape.len())?;
    apply(
        be,
        shape,
        x,
        [
            gamma.whole(),
            beta.whole(),
            running_mean.whole(),
            running_var.whole(),
        ],
        y,
        Some(shape.eps),
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
    let n = shape.check_buffers(
        &[
            ("batch_norm x", x.len),
            ("batch_norm grad_y", grad_y.len),
            ("batch_norm grad_x", grad_x.len),
        ],
        &[
            ("batch_norm gamma", gamma.len),
            ("batch_norm grad_gamma", grad_gamma.len),
            ("batch_norm grad_beta", grad_beta.len),
        ],
        &[
            ("batch_norm save_mean", save_mean.len),
            ("batch_norm save_invstd", save_invstd.len),
        ],
    )?;
    if shape.channels == 0 {
        return Ok(());
    }
    let what = "batch_norm_backward";
    ensure(
        shape.groups == 1,
        what,
        "statistics groups are not implemented on this backend yet",
    )?;
    word(what, shape.len())?;
    let image = shape.channels * shape.spatial;
    let runs = image_runs(be, what, shape.batch, &[image])?;
    let grid = groups(shape.channels, 1)?;
    if runs.is_whole() {
        return be.rec().dispatch(
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
            grid,
        );
    }
    let align = binding_align(be);
    let sums = be.scratch(2 * shape.channels)?;
    let sums = sums.window(0, 2 * shape.channels, align).0;
    let last = runs.clone().count();
    let mut words = [
        word(what, shape.channels)?,
        word(what, shape.spatial)?,
        word(what, n)?,
        0,
        0,
        0,
        0,
    ];
    for (i, (first, count)) in runs.clone().enumerate() {
        let (xw, at) = x.window(first * image, count * image, align);
        let (dyw, _) = grad_y.window(first * image, count * image, align);
        words[3] = word(what, count * shape.spatial)?;
        words[4] = word(what, at)?;
        words[5] = u32::from(i == 0);
        words[6] = u32::from(i + 1 == last);
        be.rec().dispatch(
            &BN_BACKWARD_RUN_SUMS,
            &[
                xw,
                dyw,
                save_mean.whole(),
                save_invstd.whole(),
                sums,
                grad_gamma.whole(),
                grad_beta.whole(),
            ],
            &words,
            grid,
        )?;
    }
    for (first, count) in runs {
        // x, dy and dx have the same range, so the same offset in their windows.
        let (xw, at) = x.window(first * image, count * image, align);
        let (dyw, _) = grad_y.window(first * image, count * image, align);
        let (dxw, _) = grad_x.window(first * image, count * image, align);
        let len = count * image;
        be.rec().dispatch(
            &BN_BACKWARD_RUN_DX,
            &[
                xw,
                dyw,
                gamma.whole(),
                save_mean.whole(),
                save_invstd.whole(),
                sums,
                dxw,
            ],
            &[
                words[0],
                words[1],
                words[2],
                word(what, len)?,
                word(what, at)?,
            ],
            groups(len, BN_BACKWARD_RUN_DX.workgroup)?,
        )?;
    }
    Ok(())
}
