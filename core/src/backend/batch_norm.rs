//! Batch normalisation: training mode per statistics group (shuffle BN), inference mode,
//! and the backward of the training mode.

use super::MemoryOps;
use crate::desc::BatchNormShape;
use crate::error::Result;

pub trait BatchNormOps: MemoryOps {
    /// Training-mode batch norm, per statistics group as [`BatchNormShape`] describes (each
    /// group exactly one call on its block; saved statistics group-major; the running
    /// statistics moved by the groups `shape.moves_running` names, in order, and left bit for
    /// bit alone by the others). Per channel c over n = batch / groups * spatial values:
    /// `mean_c`, biased `var_c`; `save_invstd_c = 1 / sqrt(var_c + eps)`;
    /// `y = (x - mean_c) * save_invstd_c * gamma_c + beta_c`;
    /// `running_mean = (1 - momentum) * running_mean + momentum * mean_c`;
    /// `running_var = (1 - momentum) * running_var + momentum * var_c * n / (n - 1)`
    /// (unbiased; when n = 1 the running variance is left unchanged).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_train(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        y: &mut Self::Buffer,
        save_mean: &mut Self::Buffer,
        save_invstd: &mut Self::Buffer,
        running_mean: &mut Self::Buffer,
        running_var: &mut Self::Buffer,
    ) -> Result<()>;

    /// Inference-mode batch norm:
    /// `y = (x - running_mean_c) / sqrt(running_var_c + eps) * gamma_c + beta_c`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_inference(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        running_mean: &Self::Buffer,
        running_var: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;

    /// Backward of the training-mode forward (batch statistics depend on x), per statistics
    /// group with that group's saved statistics: with `xhat = (x - mean) * invstd`,
    /// `dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))` (means over the
    /// channel's n values in the group), written; `dgamma += sum(dy * xhat)`, `dbeta +=
    /// sum(dy)`, accumulated group by group in group order.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_backward(
        &self,
        shape: &BatchNormShape,
        x: &Self::Buffer,
        grad_y: &Self::Buffer,
        gamma: &Self::Buffer,
        save_mean: &Self::Buffer,
        save_invstd: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        grad_gamma: &mut Self::Buffer,
        grad_beta: &mut Self::Buffer,
    ) -> Result<()>;
}
