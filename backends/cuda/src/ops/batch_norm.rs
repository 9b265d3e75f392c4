//! Batch normalisation over `[batch, channels, spatial]` (`kernels/batch_norm.cu`), with
//! statistics groups (`BatchNormShape::groups`: consecutive blocks of the batch, each
//! normalised by its own statistics as if it were a separate call).
//!
//! Training forward: `bn_stats` reduces each (group, channel) in one block, two passes (mean,
//! then the squared deviations), Kahan per thread, then a tree in shared memory; `bn_finish`,
//! one thread per channel, walks the groups in order, moving the running statistics for the
//! groups that move them (in group order, as separate calls would) and turning each variance
//! into an inverse standard deviation; `bn_apply` then normalises every element, one thread
//! each. Inference is `bn_apply` alone on the running statistics, the whole batch one group.
//! Backward: one block per channel, its groups in order, the sums of dy and dy * xhat Kahan
//! per thread then a tree, dgamma / dbeta added group after group by one thread.

use dscl_core::backend::batch_norm::{BnBackwardBuffers, BnInferenceBuffers, BnTrainBuffers};
use dscl_core::backend::BatchNormOps;
use dscl_core::desc::BatchNormShape;
use dscl_core::Result;

use super::u32_of;
use crate::backend::{block_per, grid_for, launch, CudaBackend, CudaBuffer};
use crate::kernel_args::{kernel_args, size_t};

kernel_args! {
    /// What the batch-norm kernels read (`BatchNormArgs` in `kernels/batch_norm.cu`).
    pub(crate) struct BatchNormArgs {
        /// The values of one channel in one group.
        n: u64,
        groups: u64,
        /// Group g moves the running statistics when g % running_every == 0.
        running_every: u64,
        /// `bn_apply`'s elements, and the elements of one statistics group.
        elements: u64,
        group_len: u64,
        channels: u32,
        spatial: u32,
        /// `bn_apply`: 1 to normalise by 1 / sqrt(spread + eps) (running variances), 0 by the
        /// spread itself (saved inverse standard deviations).
        from_variance: u32,
        eps: f32,
        /// The running statistics' 1 - momentum and momentum, and n / (n - 1).
        keep: f32,
        momentum: f32,
        unbias: f32,
        unused: u32,
    }
}

/// `y = (x - centre_c) * scale_c * gamma_c + beta_c` over `len` values (`bn_apply`),
/// `inputs` being x, gamma, beta, the centres and the spreads: the saved means and inverse
/// standard deviations (training), or the running means and variances (inference,
/// `args.from_variance`).
fn apply(
    backend: &CudaBackend,
    inputs: [&CudaBuffer<f32>; 5],
    y: &mut CudaBuffer<f32>,
    args: &BatchNormArgs,
    len: usize,
) -> Result<()> {
    let [x, gamma, beta, centre, spread] = inputs;
    launch!(
        backend,
        "bn_apply",
        grid_for(len),
        [
            &x.slice,
            &gamma.slice,
            &beta.slice,
            &centre.slice,
            &spread.slice,
            &mut y.slice,
            args
        ]
    )
}

impl BatchNormOps for CudaBackend {
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
        let nf = n as f64;
        let len = shape.len();
        let args = BatchNormArgs {
            n: size_t(n),
            groups: size_t(shape.groups),
            running_every: size_t(shape.running_every),
            elements: size_t(len),
            group_len: size_t(shape.group().len()),
            channels: u32_of(what, shape.channels)?,
            spatial: u32_of(what, shape.spatial)?,
            // bn_apply normalises by the saved inverse standard deviations.
            from_variance: 0,
            eps: shape.eps as f32,
            keep: (1.0 - shape.momentum) as f32,
            momentum: shape.momentum as f32,
            // n / (n - 1) in f64: the unbiased correction, unused (and undefined) when n = 1.
            unbias: if n > 1 { (nf / (nf - 1.0)) as f32 } else { 1.0 },
            unused: 0,
        };
        // One block per (group, channel); the saved length is groups * channels (checked above).
        launch!(
            self,
            "bn_stats",
            block_per(what, shape.saved_len())?,
            [
                &io.x.slice,
                &mut io.save_mean.slice,
                &mut io.save_invstd.slice,
                &args
            ]
        )?;
        launch!(
            self,
            "bn_finish",
            grid_for(shape.channels),
            [
                &io.save_mean.slice,
                &mut io.save_invstd.slice,
                &mut io.running_mean.slice,
                &mut io.running_var.slice,
                &args
            ]
        )?;
        apply(
            self,
            [io.x, io.gamma, io.beta, io.save_mean, io.save_invstd],
            io.y,
            &args,
            len,
        )
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
        let what = "batch_norm_forward_inference";
        let len = shape.len();
        let args = BatchNormArgs {
            elements: size_t(len),
            // Inference ignores the statistics groups: the whole batch is one group.
            group_len: size_t(len),
            channels: u32_of(what, shape.channels)?,
            spatial: u32_of(what, shape.spatial)?,
            from_variance: 1,
            eps: shape.eps as f32,
            ..BatchNormArgs::default()
        };
        apply(
            self,
            [io.x, io.gamma, io.beta, io.running_mean, io.running_var],
            io.y,
            &args,
            len,
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
        let args = BatchNormArgs {
            n: size_t(n),
            groups: size_t(shape.groups),
            channels: u32_of(what, shape.channels)?,
            spatial: u32_of(what, shape.spatial)?,
            ..BatchNormArgs::default()
        };
        launch!(
            self,
            "bn_backward",
            block_per(what, shape.channels)?,
            [
                &io.x.slice,
                &io.grad_y.slice,
                &io.gamma.slice,
                &io.save_mean.slice,
                &io.save_invstd.slice,
                &mut io.grad_x.slice,
                &mut io.grad_gamma.slice,
                &mut io.grad_beta.slice,
                &args
            ]
        )
    }
}
