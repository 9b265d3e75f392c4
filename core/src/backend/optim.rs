//! Optimisation: the SGD step and the momentum-encoder update.

use super::{BufferLen, MemoryOps};
use crate::error::{check_len, ensure, Result};

/// SGD with momentum and weight decay, PyTorch semantics (`torch.optim.SGD`):
/// `g = grad + weight_decay * p`; on the first step `v = g`, afterwards
/// `v = momentum * v + (1 - dampening) * g`; the step direction is `g + momentum * v` when
/// `nesterov`, else `v`; `p -= lr * direction`. With `momentum == 0` there is no velocity
/// (it is left untouched) and the direction is `g`, as in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdParams {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// True on the optimizer's first step, when the velocity is initialised to `g`.
    pub first_step: bool,
}

impl SgdParams {
    pub fn check(&self) -> Result<()> {
        ensure(
            self.lr.is_finite() && self.lr >= 0.0,
            "sgd",
            "learning rate must be finite and non-negative",
        )?;
        ensure(
            self.momentum.is_finite() && self.momentum >= 0.0,
            "sgd",
            "momentum must be finite and non-negative",
        )?;
        ensure(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "sgd",
            "weight decay must be finite and non-negative",
        )?;
        ensure(
            self.dampening.is_finite(),
            "sgd",
            "dampening must be finite",
        )?;
        ensure(
            !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0),
            "sgd",
            "Nesterov momentum requires a momentum and zero dampening",
        )
    }
}

impl SgdParams {
    /// Checks the hyperparameters ([`Self::check`]) and the three buffers of an update of
    /// `len` parameters.
    pub fn check_update<B: BufferLen + ?Sized>(
        &self,
        weights: &B,
        grads: &B,
        velocity: &B,
        len: usize,
    ) -> Result<()> {
        self.check()?;
        check_len("sgd weights", weights.len(), len)?;
        check_len("sgd grads", grads.len(), len)?;
        check_len("sgd velocity", velocity.len(), len)
    }
}

pub trait OptimOps: MemoryOps {
    /// One SGD step on `len` parameters; exact semantics in [`SgdParams`].
    fn sgd_momentum_update(
        &self,
        params: &SgdParams,
        weights: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
        len: usize,
    ) -> Result<()>;

    /// Momentum-encoder update: `target = momentum * target + (1 - momentum) * source`.
    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()>;
}
