//! Training: stage 1 ([`stage1`]: DSCL or SupCon with PBSD, or the cross-entropy baseline) and
//! stage 2 ([`stage2`]: the linear classifier on the frozen backbone), generic over
//! `Backend<Elem = f32>`.
//!
//! Every stage is a [`Stage`](epochs::Stage): its step on one batch, what that step reports
//! ([`report`]) and what it keeps. One epoch driver ([`epochs::run`]) runs them all: the
//! loader of each epoch, the learning rate of each step, the log and progress, checkpoints and
//! stops. Host batches are assembled into preallocated vectors and uploaded into
//! preallocated device buffers.

pub mod epochs;
pub mod report;
pub mod stage1;
pub mod stage2;

mod contrastive;
mod cross_entropy;
mod group_input;

use crate::augment::AugmentConfig;
use crate::config::RunConfig;

/// Where a run is: the next step to take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub epoch: usize,
    /// Steps of `epoch` already taken.
    pub step_in_epoch: usize,
    pub global_step: u64,
}

/// The augmentation settings of a run.
pub fn augment_config(cfg: &RunConfig) -> AugmentConfig {
    let mut a = AugmentConfig {
        crop_size: cfg.crop_size,
        crops: cfg.crops.max(1),
        ..AugmentConfig::for_image_size(cfg.image_size)
    };
    a.image_scale.0 = cfg.min_scale;
    if !cfg.flip {
        for ops in [&mut a.query, &mut a.key, &mut a.crop, &mut a.stage2] {
            ops.flip_p = 0.0;
        }
    }
    a
}
