//! SGD with momentum and the momentum-encoder EMA: one invocation per element, split into
//! windows by `ops::map` so parameter buffers of any size fit the binding limit.

use dscl_core::backend::OptimOps;
use dscl_core::desc::SgdParams;
use dscl_core::error::check_len;
use dscl_core::Result;

use super::{f32_bits, map};
use crate::kernel::kernel;
use crate::WgpuBackend;

const SGD: &str = include_str!("../shaders/optim_sgd.wgsl");
const EMA: &str = include_str!("../shaders/optim_ema.wgsl");

kernel!(
    SGD_KERNEL,
    SGD,
    "sgd_momentum",
    [ReadWrite, Read, ReadWrite],
    256
);
kernel!(EMA_KERNEL, EMA, "ema", [Read, ReadWrite], 256);

/// Flag bits of the SGD kernel's word 8.
const USE_MOMENTUM: u32 = 1;
const FIRST_STEP: u32 = 2;
const NESTEROV: u32 = 4;

impl OptimOps for WgpuBackend {
    fn sgd_momentum_update(
        &self,
        params: &SgdParams,
        weights: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        params.check_update(&*weights, grads, &*velocity, len)?;
        // Momentum 0 means no velocity at all (PyTorch), decided here on the exact f64 value.
        let mut flags = 0;
        if params.momentum != 0.0 {
            flags |= USE_MOMENTUM;
        }
        if params.first_step {
            flags |= FIRST_STEP;
        }
        if params.nesterov {
            flags |= NESTEROV;
        }
        map(
            self,
            &SGD_KERNEL,
            &[weights.span(0), grads.span(0), velocity.span(0)],
            len,
            &[
                f32_bits(params.lr),
                f32_bits(params.momentum),
                f32_bits(params.weight_decay),
                f32_bits(1.0 - params.dampening),
                flags,
            ],
        )
    }

    fn ema_update(
        &self,
        momentum: f64,
        source: &Self::Buffer,
        target: &mut Self::Buffer,
        len: usize,
    ) -> Result<()> {
        check_len("ema source", source.len, len)?;
        check_len("ema target", target.len, len)?;
        map(
            self,
            &EMA_KERNEL,
            &[source.span(0), target.span(0)],
            len,
            &[f32_bits(momentum), f32_bits(1.0 - momentum)],
        )
    }
}
