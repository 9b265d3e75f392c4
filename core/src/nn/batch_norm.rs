//! Batch normalisation over NCHW activations, training and inference modes, with PyTorch's
//! running statistics (momentum 0.1, unbiased variance in the running estimate).

use crate::backend::Backend;
use crate::desc::{BatchNormShape, BnBackward, BnInference, BnTrain};
use crate::error::Result;
use crate::nn::tensors::{Init, TensorId, TensorLayout, TensorSet};

/// PyTorch's `BatchNorm2d` defaults.
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

/// `BatchNorm2d(channels)`: parameters gamma (`name.weight`) and beta (`name.bias`); running
/// statistics `name.running_mean` / `name.running_var` in the state layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm2d {
    pub channels: usize,
    pub gamma: TensorId,
    pub beta: TensorId,
    pub running_mean: TensorId,
    pub running_var: TensorId,
}

/// How a forward pass normalises: with the batch's statistics, updating the running ones
/// (training), or with the running statistics (inference).
pub enum BnMode<'s, B: Backend> {
    Train(&'s mut TensorSet<B>),
    Inference(&'s TensorSet<B>),
}

impl<B: Backend> BnMode<'_, B> {
    /// The same mode for one more layer (a shorter borrow of the same statistics).
    pub fn reborrow(&mut self) -> BnMode<'_, B> {
        match self {
            BnMode::Train(s) => BnMode::Train(s),
            BnMode::Inference(s) => BnMode::Inference(s),
        }
    }
}

/// How a planned pass's batch norms split the batch into statistics groups (see
/// [`BatchNormShape`]): `groups` consecutive blocks, each with its own statistics; the blocks
/// whose index is a multiple of `running_every` move the running statistics, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatGroups {
    pub groups: usize,
    pub running_every: usize,
}

impl StatGroups {
    /// One set of statistics over the whole batch: PyTorch's `BatchNorm2d` on one device.
    pub const WHOLE: StatGroups = StatGroups {
        groups: 1,
        running_every: 1,
    };
}

/// What the training forward saves for backward: the batch mean and 1/std per statistics
/// group and channel.
pub struct BatchNormSaved<B: Backend> {
    pub mean: B::Buffer,
    pub invstd: B::Buffer,
}

impl<B: Backend> BatchNormSaved<B> {
    pub fn new(backend: &B, shape: &BatchNormShape) -> Result<Self> {
        Ok(BatchNormSaved {
            mean: backend.alloc(shape.saved_len())?,
            invstd: backend.alloc(shape.saved_len())?,
        })
    }
}

impl BatchNorm2d {
    /// Registers gamma (1, or 0 when `zero_gamma`: torchvision's `zero_init_residual` for the
    /// last norm of a residual branch), beta (0), running mean (0) and running variance (1).
    pub fn new(
        params: &mut TensorLayout,
        state: &mut TensorLayout,
        name: &str,
        channels: usize,
        zero_gamma: bool,
    ) -> Result<Self> {
        let gamma_init = if zero_gamma { 0.0 } else { 1.0 };
        Ok(BatchNorm2d {
            channels,
            gamma: params.push(name, "weight", &[channels], Init::Constant(gamma_init))?,
            beta: params.push(name, "bias", &[channels], Init::Constant(0.0))?,
            running_mean: state.push(name, "running_mean", &[channels], Init::Constant(0.0))?,
            running_var: state.push(name, "running_var", &[channels], Init::Constant(1.0))?,
        })
    }

    pub fn shape(&self, batch: usize, spatial: usize, groups: StatGroups) -> BatchNormShape {
        BatchNormShape {
            batch,
            channels: self.channels,
            spatial,
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
            groups: groups.groups,
            running_every: groups.running_every,
        }
    }

    /// Training mode: normalises with the batch statistics (saved for backward) and updates
    /// the running statistics in `state`.
    pub fn forward_train<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        state: &mut TensorSet<B>,
        shape: &BatchNormShape,
        x: &B::Buffer,
        y: &mut B::Buffer,
        saved: &mut BatchNormSaved<B>,
    ) -> Result<()> {
        let [mean, var] = state
            .get_disjoint_mut([self.running_mean, self.running_var])
            .ok_or(crate::Error::InvalidArgument {
                what: "batch_norm state",
                reason: "running mean and variance must be distinct tensors",
            })?;
        backend.batch_norm_forward_train(
            shape,
            BnTrain {
                x,
                gamma: params.get(self.gamma),
                beta: params.get(self.beta),
                y,
                save_mean: &mut saved.mean,
                save_invstd: &mut saved.invstd,
                running_mean: mean,
                running_var: var,
            },
        )
    }

    /// Inference mode: normalises with the running statistics.
    pub fn forward_inference<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        state: &TensorSet<B>,
        shape: &BatchNormShape,
        x: &B::Buffer,
        y: &mut B::Buffer,
    ) -> Result<()> {
        backend.batch_norm_forward_inference(
            shape,
            BnInference {
                x,
                gamma: params.get(self.gamma),
                beta: params.get(self.beta),
                running_mean: state.get(self.running_mean),
                running_var: state.get(self.running_var),
                y,
            },
        )
    }

    /// Backward of the training forward: `dx` written, gamma/beta gradients accumulated.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        shape: &BatchNormShape,
        x: &B::Buffer,
        dy: &B::Buffer,
        saved: &BatchNormSaved<B>,
        dx: &mut B::Buffer,
    ) -> Result<()> {
        let [dgamma, dbeta] = grads.get_disjoint_mut([self.gamma, self.beta]).ok_or(
            crate::Error::InvalidArgument {
                what: "batch_norm parameters",
                reason: "gamma and beta must be distinct tensors",
            },
        )?;
        backend.batch_norm_backward(
            shape,
            BnBackward {
                x,
                grad_y: dy,
                gamma: params.get(self.gamma),
                save_mean: &saved.mean,
                save_invstd: &saved.invstd,
                grad_x: dx,
                grad_gamma: dgamma,
                grad_beta: dbeta,
            },
        )
    }
}
