//! The optimiser steps (`kernels/optim.cu`): SGD with momentum (torch.optim.SGD's update,
//! weight decay, dampening and Nesterov included) and the momentum encoder's EMA, one thread
//! per element in a grid-stride loop, each element updated alone in f32 from factors formed in
//! f64 on the host. Nothing is summed, so nothing accumulates across elements.

use dscl_core::backend::OptimOps;
use dscl_core::desc::SgdParams;
use dscl_core::error::{check_len, ensure};
use dscl_core::Result;

use crate::backend::{grid_for, launch, CudaBackend};
use crate::kernel_args::{kernel_args, size_t};

kernel_args! {
    /// What the optimiser kernels read (`OptimArgs` in `kernels/optim.cu`).
    pub(crate) struct OptimArgs {
        n: u64,
        lr: f32,
        /// SGD's momentum, or the EMA's (the share of the target kept).
        momentum: f32,
        /// The EMA's share of the source.
        one_minus_momentum: f32,
        weight_decay: f32,
        one_minus_dampening: f32,
        /// SGD's [`USE_MOMENTUM`], [`FIRST_STEP`] and [`NESTEROV`] bits.
        flags: u32,
    }
}

/// Momentum is in use: a velocity is kept.
const USE_MOMENTUM: u32 = 1;
/// The velocity is not read (it may hold anything) but set to the gradient.
const FIRST_STEP: u32 = 2;
const NESTEROV: u32 = 4;

impl OptimOps for CudaBackend {
    fn sgd_momentum_update(
        &self,
        params: &SgdParams,
        weights: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        params.check_update(&*weights, grads, &*velocity, len)?;
        if len == 0 {
            return Ok(());
        }
        let bit = |on: bool, flag: u32| if on { flag } else { 0 };
        let args = OptimArgs {
            n: size_t(len),
            lr: params.lr as f32,
            momentum: params.momentum as f32,
            weight_decay: params.weight_decay as f32,
            one_minus_dampening: (1.0 - params.dampening) as f32,
            // Momentum 0 means no velocity at all (PyTorch), decided here on the exact f64 value.
            flags: bit(params.momentum != 0.0, USE_MOMENTUM)
                | bit(params.first_step, FIRST_STEP)
                | bit(params.nesterov, NESTEROV),
            ..OptimArgs::default()
        };
        launch!(
            self,
            "sgd_momentum",
            grid_for(len),
            [&mut weights.slice, &grads.slice, &mut velocity.slice, &args]
        )
    }

    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        ensure(
            momentum.is_finite() && (0.0..=1.0).contains(&momentum),
            "ema_update",
            "momentum must lie in [0, 1]",
        )?;
        check_len("ema source", source.len, len)?;
        check_len("ema target", target.len, len)?;
        if len == 0 {
            return Ok(());
        }
        let args = OptimArgs {
            n: size_t(len),
            momentum: momentum as f32,
            one_minus_momentum: (1.0 - momentum) as f32,
            ..OptimArgs::default()
        };
        launch!(
            self,
            "ema_update",
            grid_for(len),
            [&source.slice, &mut target.slice, &args]
        )
    }
}
