//! Batch normalisation over `[batch, channels, spatial]`.
//!
//! Training runs statistics group by statistics group (`BatchNormShape::groups` consecutive
//! blocks of the batch), each group's dispatches recorded after the previous group's, as
//! separate calls on the blocks would be: the group's saved statistics go to `g * channels`
//! onwards, the running statistics move only in the dispatches of groups that move them (a
//! word says so; the others leave them untouched), so in group order, and dgamma / dbeta
//! accumulate group by group.
//!
//! Training forward, per group: one workgroup per channel reduces the group's statistics (two
//! passes, Kahan-compensated, see `batch_norm_stats.wgsl`) into `save_mean` / `save_invstd` and
//! moves the running statistics; a second, elementwise kernel then normalises every value, so
//! the write pass is not limited to one workgroup per channel. Inference ignores the groups: it
//! is that elementwise kernel on the running statistics. Backward, per group, keeps one
//! workgroup per channel for both the sums and dx.
//!
//! A group larger than one storage binding is bound in runs of whole images: the statistics
//! and the backward sums accumulate run by run (a channel's values lie in every image), then
//! the elementwise passes go over the runs; the backward's per-channel totals wait in the
//! backend's scratch buffer, since dgamma / dbeta already hold the caller's earlier values.

use dscl_core::backend::batch_norm::{BnBackwardBuffers, BnInferenceBuffers, BnTrainBuffers};
use dscl_core::backend::BatchNormOps;
use dscl_core::desc::BatchNormShape;
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

/// What the spread operand of [`apply`] holds.
enum Spread {
    /// The inverse standard deviation itself (training), of the group whose first saved index
    /// (group * channels) this is.
    InvStd(usize),
    /// The variance, to add eps to (inference on the running statistics).
    Variance(f64),
}

/// `y = (x - mean_c) * scale_c * gamma_c + beta_c` over `images` (first image, count), in the
/// runs of whole images that fit a binding, with `channel` = [gamma, beta, mean, spread].
#[allow(clippy::too_many_arguments)]
fn apply(
    be: &WgpuBackend,
    shape: &BatchNormShape,
    x: &WgpuBuffer<f32>,
    [gamma, beta, mean, spread]: [Window<'_>; 4],
    y: &mut WgpuBuffer<f32>,
    (first_image, images): (usize, usize),
    kind: Spread,
) -> Result<()> {
    let what = "batch_norm apply";
    let image = shape.channels * shape.spatial;
    let align = binding_align(be);
    let (variance_eps, stats_at) = match kind {
        Spread::InvStd(at) => (None, at),
        Spread::Variance(eps) => (Some(eps), 0),
    };
    for (first, count) in image_runs(be, what, images, &[image])? {
        // x and y have the same range, so the same offset in their windows.
        let start = (first_image + first) * image;
        let (xw, at) = x.window(start, count * image, align);
        let (yw, _) = y.window(start, count * image, align);
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
                word(what, stats_at)?,
            ],
            groups(len, BN_APPLY.workgroup)?,
        )?;
    }
    Ok(())
}

impl BatchNormOps for WgpuBackend {
    fn batch_norm_forward_train(
        &self,
        shape: &BatchNormShape,
        io: BnTrainBuffers<'_, Self>,
    ) -> Result<()> {
        let n = shape.check_train(&io)?;
        if shape.channels == 0 {
            return Ok(());
        }
        let what = "batch_norm_forward_train";
        word(what, shape.len())?;
        let nf = n as f64;
        // n / (n - 1) in f64: the unbiased correction, unused (and undefined) when n = 1.
        let unbias = if n > 1 { nf / (nf - 1.0) } else { 1.0 };
        let image = shape.channels * shape.spatial;
        let per_group = shape.group().batch;
        let runs = image_runs(self, what, per_group, &[image])?;
        let last = runs.clone().count();
        let align = binding_align(self);
        let statistics = [
            io.save_mean.whole(),
            io.save_invstd.whole(),
            io.running_mean.whole(),
            io.running_var.whole(),
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
            0,
            0,
        ];
        let grid = groups(shape.channels, 1)?;
        for g in 0..shape.groups {
            let first_image = g * per_group;
            words[8] = word(what, g * shape.channels)?;
            words[9] = u32::from(shape.moves_running(g));
            let [a, b, c, d] = statistics;
            if runs.is_whole() {
                let (xw, x_at) = io.x.window(first_image * image, per_group * image, align);
                words[10] = word(what, x_at)?;
                self.rec()
                    .dispatch(&BN_STATS, &[xw, a, b, c, d], &words[..11], grid)?;
            } else {
                for kernel in [&BN_RUN_SUM, &BN_RUN_SQDEV] {
                    for (i, (first, count)) in runs.clone().enumerate() {
                        let (xw, x_at) =
                            io.x.window((first_image + first) * image, count * image, align);
                        words[10] = word(what, x_at)?;
                        words[11] = word(what, count * shape.spatial)?;
                        words[12] = u32::from(i == 0);
                        words[13] = u32::from(i + 1 == last);
                        self.rec()
                            .dispatch(kernel, &[xw, a, b, c, d], &words, grid)?;
                    }
                }
            }
            apply(
                self,
                shape,
                io.x,
                [
                    io.gamma.whole(),
                    io.beta.whole(),
                    io.save_mean.whole(),
                    io.save_invstd.whole(),
                ],
                io.y,
                (first_image, per_group),
                Spread::InvStd(g * shape.channels),
            )?;
        }
        Ok(())
    }

    fn batch_norm_forward_inference(
        &self,
        shape: &BatchNormShape,
        io: BnInferenceBuffers<'_, Self>,
    ) -> Result<()> {
        shape.check_inference(&io)?;
        if shape.is_empty() {
            return Ok(());
        }
        word("batch_norm_forward_inference", shape.len())?;
        apply(
            self,
            shape,
            io.x,
            [
                io.gamma.whole(),
                io.beta.whole(),
                io.running_mean.whole(),
                io.running_var.whole(),
            ],
            io.y,
            (0, shape.batch),
            Spread::Variance(shape.eps),
        )
    }

    fn batch_norm_backward(
        &self,
        shape: &BatchNormShape,
        io: BnBackwardBuffers<'_, Self>,
    ) -> Result<()> {
        let n = shape.check_backward(&io)?;
        if shape.channels == 0 {
            return Ok(());
        }
        let what = "batch_norm_backward";
        word(what, shape.len())?;
        let image = shape.channels * shape.spatial;
        let per_group = shape.group().batch;
        let runs = image_runs(self, what, per_group, &[image])?;
        let last = runs.clone().count();
        let align = binding_align(self);
        let grid = groups(shape.channels, 1)?;
        if runs.is_whole() {
            for g in 0..shape.groups {
                // io.x, dy and dx have the same range, so the same offset in their windows.
                let start = g * per_group * image;
                let (xw, at) = io.x.window(start, per_group * image, align);
                let (dyw, _) = io.grad_y.window(start, per_group * image, align);
                let (dxw, _) = io.grad_x.window(start, per_group * image, align);
                self.rec().dispatch(
                    &BN_BACKWARD,
                    &[
                        xw,
                        dyw,
                        io.gamma.whole(),
                        io.save_mean.whole(),
                        io.save_invstd.whole(),
                        dxw,
                        io.grad_gamma.whole(),
                        io.grad_beta.whole(),
                    ],
                    &[
                        word(what, shape.channels)?,
                        word(what, shape.spatial)?,
                        word(what, n)?,
                        word(what, at)?,
                        word(what, g * shape.channels)?,
                    ],
                    grid,
                )?;
            }
            return Ok(());
        }
        let sums = self.scratch(2 * shape.channels)?;
        let sums = sums.window(0, 2 * shape.channels, align).0;
        let mut words = [
            word(what, shape.channels)?,
            word(what, shape.spatial)?,
            word(what, n)?,
            0,
            0,
            0,
            0,
            0,
        ];
        for g in 0..shape.groups {
            let first_image = g * per_group;
            words[7] = word(what, g * shape.channels)?;
            for (i, (first, count)) in runs.clone().enumerate() {
                let start = (first_image + first) * image;
                let (xw, at) = io.x.window(start, count * image, align);
                let (dyw, _) = io.grad_y.window(start, count * image, align);
                words[3] = word(what, count * shape.spatial)?;
                words[4] = word(what, at)?;
                words[5] = u32::from(i == 0);
                words[6] = u32::from(i + 1 == last);
                self.rec().dispatch(
                    &BN_BACKWARD_RUN_SUMS,
                    &[
                        xw,
                        dyw,
                        io.save_mean.whole(),
                        io.save_invstd.whole(),
                        sums,
                        io.grad_gamma.whole(),
                        io.grad_beta.whole(),
                    ],
                    &words,
                    grid,
                )?;
            }
            for (first, count) in runs.clone() {
                // io.x, dy and dx have the same range, so the same offset in their windows.
                let start = (first_image + first) * image;
                let (xw, at) = io.x.window(start, count * image, align);
                let (dyw, _) = io.grad_y.window(start, count * image, align);
                let (dxw, _) = io.grad_x.window(start, count * image, align);
                let len = count * image;
                self.rec().dispatch(
                    &BN_BACKWARD_RUN_DX,
                    &[
                        xw,
                        dyw,
                        io.gamma.whole(),
                        io.save_mean.whole(),
                        io.save_invstd.whole(),
                        sums,
                        dxw,
                    ],
                    &[
                        words[0],
                        words[1],
                        words[2],
                        word(what, len)?,
                        word(what, at)?,
                        words[7],
                    ],
                    groups(len, BN_BACKWARD_RUN_DX.workgroup)?,
                )?;
            }
        }
        Ok(())
    }
}
