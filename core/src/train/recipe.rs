//! The published training recipe (Xuan & Zhang 2024, ImageNet-LT, ResNet-50) as data: every
//! hyperparameter a field, every default the published value. The runtime's defaults for
//! image files are these, and its presets for smaller data are written as changes to them; the
//! step-level ones live in [`DsclConfig`].

use crate::train::dscl_step::DsclConfig;
use crate::train::optim::SgdConfig;
use crate::train::schedule::LrSchedule;

/// Stage 1: representation learning with DSCL + PBSD.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage1Recipe {
    pub step: DsclConfig,
    pub batch: usize,
    pub epochs: usize,
    pub warmup_epochs: usize,
    /// Learning rate for a batch of 256 (scaled linearly with the batch).
    pub lr_per_256: f64,
    /// Query and key crops (RandomResizedCrop size).
    pub image_size: usize,
    /// RandomResizedCrop scale range of the query and key views.
    pub image_scale: (f64, f64),
    /// PBSD's small crops: size and scale range within the query crop.
    pub crop_size: usize,
    pub crop_scale: (f64, f64),
}

impl Default for Stage1Recipe {
    fn default() -> Self {
        Stage1Recipe {
            // The published run: 2 GPUs under DistributedDataParallel, each its own group.
            step: DsclConfig {
                replicas: 2,
                ..DsclConfig::default()
            },
            batch: 256,
            epochs: 200,
            warmup_epochs: 10,
            lr_per_256: 0.1,
            image_size: 224,
            image_scale: (0.08, 1.0),
            crop_size: 64,
            crop_scale: (0.05, 0.6),
        }
    }
}

impl Stage1Recipe {
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule::WarmupCosine {
            lr: self.lr_per_256 * self.batch as f64 / 256.0,
            warmup_epochs: (self.warmup_epochs as f64).min(self.epochs as f64),
            epochs: self.epochs as f64,
        }
    }
}

/// Stage 2: a linear classifier on the frozen backbone, class-balanced sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage2Recipe {
    pub sgd: SgdConfig,
    pub batch: usize,
    pub epochs: usize,
    pub lr: f64,
    /// The rate is multiplied by `gamma` at these epochs.
    pub milestones: [usize; 2],
    pub gamma: f64,
}

impl Default for Stage2Recipe {
    fn default() -> Self {
        Stage2Recipe {
            sgd: SgdConfig::STAGE2,
            batch: 2048,
            epochs: 40,
            lr: 10.0,
            milestones: [20, 30],
            gamma: 0.1,
        }
    }
}

impl Stage2Recipe {
    pub fn schedule(&self) -> LrSchedule {
        let [a, b] = self.milestones;
        LrSchedule::Step {
            lr: self.lr,
            milestones: heapless::Vec::from_slice(&[a as f64, b as f64]).unwrap_or_default(),
            gamma: self.gamma,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::dscl_step::ContrastiveLoss;

    #[test]
    fn defaults_are_the_published_recipe() {
        let s1 = Stage1Recipe::default();
        assert_eq!(s1.step.loss, ContrastiveLoss::Dscl { beta: 8.0 });
        assert_eq!(
            (s1.step.temperature, s1.step.pbsd_weight, s1.step.crops),
            (0.07, 1.5, 5)
        );
        assert_eq!((s1.step.queue_len, s1.step.key_momentum), (65536, 0.999));
        assert_eq!(s1.step.replicas, 2);
        assert_eq!(
            (s1.step.sgd.momentum, s1.step.sgd.weight_decay),
            (0.9, 5e-4)
        );
        assert_eq!((s1.batch, s1.epochs, s1.warmup_epochs), (256, 200, 10));
        assert_eq!(s1.schedule().lr_at(10.0), 0.1);
        let s2 = Stage2Recipe::default();
        assert_eq!((s2.batch, s2.epochs, s2.lr), (2048, 40, 10.0));
        assert_eq!(s2.sgd.weight_decay, 0.0);
        assert!((s2.schedule().lr_at(35.0) - 0.1).abs() < 1e-12);
    }
}
