//! Optimisation: the SGD step and the momentum-encoder update.

use super::MemoryOps;
use crate::desc::SgdParams;
use crate::error::Result;

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
