//! SGD with momentum and weight decay (PyTorch's `torch.optim.SGD`) over a tensor set.

use rand_core::Rng;

use crate::backend::Backend;
use crate::desc::SgdParams;
use crate::error::Result;
use crate::nn::tensors::{TensorLayout, TensorSet};

/// The optimizer's constants; the learning rate comes from the schedule at each step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
    pub dampening: f64,
    pub nesterov: bool,
}

impl SgdConfig {
    /// Stage 1 of the published recipe: momentum 0.9, weight decay 5e-4.
    pub const STAGE1: SgdConfig = SgdConfig {
        momentum: 0.9,
        weight_decay: 5e-4,
        dampening: 0.0,
        nesterov: false,
    };
    /// Stage 2 (the linear classifier): momentum 0.9, no weight decay.
    pub const STAGE2: SgdConfig = SgdConfig {
        momentum: 0.9,
        weight_decay: 0.0,
        dampening: 0.0,
        nesterov: false,
    };
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig::STAGE1
    }
}

/// Parameters with their gradient and velocity sets: everything SGD touches.
pub struct Trainable<B: Backend> {
    pub params: TensorSet<B>,
    pub grads: TensorSet<B>,
    pub velocity: TensorSet<B>,
    steps: u64,
}

impl<B: Backend> Trainable<B> {
    /// Freshly initialised parameters (see [`TensorSet::initialised`]), zero gradients and
    /// velocity.
    pub fn initialised(backend: &B, layout: &TensorLayout, rng: &mut impl Rng) -> Result<Self> {
        Ok(Trainable {
            params: TensorSet::initialised(backend, layout, rng)?,
            grads: TensorSet::zeros(backend, layout)?,
            velocity: TensorSet::zeros(backend, layout)?,
            steps: 0,
        })
    }

    /// Optimizer steps taken so far (the velocity is initialised on the first).
    /// Zero parameters, gradients and velocity (for parameters loaded or made afterwards).
    pub fn zeros(backend: &B, layout: &TensorLayout) -> Result<Self> {
        Ok(Trainable {
            params: TensorSet::zeros(backend, layout)?,
            grads: TensorSet::zeros(backend, layout)?,
            velocity: TensorSet::zeros(backend, layout)?,
            steps: 0,
        })
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Restores the step count (when resuming with a saved velocity).
    pub fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    pub fn zero_grads(&mut self, backend: &B) -> Result<()> {
        self.grads.zero(backend)
    }

    /// One SGD step on every tensor with learning rate `lr`.
    pub fn sgd_step(&mut self, backend: &B, config: &SgdConfig, lr: f64) -> Result<()> {
        let params = SgdParams {
            lr,
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            dampening: config.dampening,
            nesterov: config.nesterov,
            first_step: self.steps == 0,
        };
        params.check()?;
        let tensors = self
            .params
            .buffers_mut()
            .iter_mut()
            .zip(self.grads.buffers())
            .zip(self.velocity.buffers_mut().iter_mut());
        for ((w, g), v) in tensors {
            let len = crate::backend::BufferLen::len(g);
            backend.sgd_momentum_update(&params, w, g, v, len)?;
        }
        self.steps += 1;
        Ok(())
    }
}
