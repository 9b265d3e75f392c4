//! The defaults a run's flags leave to its data, and the resolution of the flags into the
//! run's [`RunConfig`].
//!
//! Image files get the published ImageNet-LT recipe, which is the core's [`Stage1Recipe`] and
//! [`Stage2Recipe`] as they stand; CIFAR a CIFAR-sized one; the built-in digits a small, fast
//! one, so `runtime run` with no flags finishes in minutes on two cores. All three are written
//! as the core's recipes, in its names, with what a recipe leaves to the data beside them.

use anyhow::{bail, Result};
use dscl_core::loss::DEFAULT_BETA;
use dscl_core::train::{ContrastiveLoss, DsclConfig, Stage1Recipe, Stage2Recipe};

use super::{Arch, DataArgs, DataKind, LinearArgs, LossKind, RunConfig, TrainArgs};

/// The defaults that depend on the data set: the recipe of each stage, and what a recipe
/// leaves to the data.
pub struct Preset {
    pub stage1: Stage1Recipe,
    pub stage2: Stage2Recipe,
    pub arch: Arch,
    /// The projection head's output dimension.
    pub embedding_dim: usize,
    /// Ratio of the largest to the smallest class after long-tailed subsampling.
    pub imbalance: f64,
    /// Horizontal flips in the views.
    pub flip: bool,
}

pub fn preset(kind: DataKind) -> Preset {
    let published = Stage1Recipe::default();
    match kind {
        DataKind::List | DataKind::ImageNetLt | DataKind::ImageFolder => Preset {
            stage1: published,
            stage2: Stage2Recipe::default(),
            arch: Arch::Resnet50,
            embedding_dim: 128,
            imbalance: 1.0,
            flip: true,
        },
        DataKind::Cifar => Preset {
            stage1: Stage1Recipe {
                step: DsclConfig {
                    queue_len: 8192,
                    replicas: 1,
                    ..published.step
                },
                image_size: 32,
                crop_size: default_crop_size(32),
                ..published
            },
            stage2: Stage2Recipe {
                batch: 512,
                lr: 1.0,
                ..Stage2Recipe::default()
            },
            arch: Arch::Resnet32,
            embedding_dim: 128,
            imbalance: 100.0,
            flip: true,
        },
        // Small and quick: a few minutes on two cores for both stages. Tuned on the digits
        // (see README, "Long-tailed digits"): a warmer temperature and a longer linear stage
        // than the ImageNet recipe suit 500 images of 16 px.
        DataKind::Digits => Preset {
            stage1: Stage1Recipe {
                step: DsclConfig {
                    temperature: 0.2,
                    queue_len: 1024,
                    key_momentum: 0.99,
                    replicas: 1,
                    ..published.step
                },
                batch: 64,
                // 200 epochs left DSCL + PBSD level with cross-entropy on top-1 (5-seed mean
                // 93.2 vs 93.6); at 400 the contrastive stage pulls ahead (94.8 vs 93.5).
                epochs: 400,
                warmup_epochs: 2,
                lr_per_256: 1.2,
                image_size: 16,
                // A smaller crop destroys the 8x8 digits.
                image_scale: (0.5, 1.0),
                crop_size: default_crop_size(16),
                ..published
            },
            stage2: Stage2Recipe {
                batch: 64,
                epochs: 100,
                lr: 1.0,
                // The published 20 and 30 of 40 epochs, as stage 2 scales them.
                milestones: [50, 75],
                ..Stage2Recipe::default()
            },
            arch: Arch::Tiny,
            embedding_dim: 32,
            imbalance: 10.0,
            flip: false,
        },
    }
}

/// PBSD's crop side: the paper's 64/224 of the image for large images; half the image for
/// small ones, where 64/224 would leave the network a feature map under 2x2.
pub fn default_crop_size(image_size: usize) -> usize {
    if image_size >= 64 {
        (image_size * 64 + 112) / 224
    } else {
        (image_size / 2).max(4)
    }
}

impl RunConfig {
    /// The run's configuration from its flags: each setting as given, else as the preset of
    /// its data; then checked.
    pub fn resolve(
        data: &DataArgs,
        train: &TrainArgs,
        linear: &LinearArgs,
        seed: u64,
    ) -> Result<RunConfig> {
        let kind = data.kind()?;
        let p = preset(kind);
        let (s1, s2) = (&p.stage1, &p.stage2);
        let image_size = data.image_size.unwrap_or(s1.image_size);
        let crop_size = data
            .crop_size
            .unwrap_or_else(|| default_crop_size(image_size));
        if train.checkpoint_every == Some(0) {
            bail!(
                "--checkpoint-every must be at least 1 (left out, a checkpoint is written at \
                 each epoch's end only)"
            );
        }
        let batch_size = train.batch_size.unwrap_or(s1.batch);
        let epochs = train.epochs.unwrap_or(s1.epochs);
        let beta = match s1.step.loss {
            ContrastiveLoss::Dscl { beta } => beta,
            ContrastiveLoss::SupCon => DEFAULT_BETA,
        };
        let cfg = RunConfig {
            data: data.clone(),
            data_kind: kind,
            arch: train.arch.unwrap_or(p.arch),
            loss: train.loss,
            image_size,
            crop_size,
            crops: train.crops.unwrap_or(s1.step.crops),
            pbsd_weight: train.pbsd_weight.unwrap_or(s1.step.pbsd_weight),
            beta: train.beta.unwrap_or(beta),
            tau: train.tau.unwrap_or(s1.step.temperature),
            queue: train.queue.unwrap_or(s1.step.queue_len),
            queue_init: train.queue_init,
            // The cross-entropy baseline trains as one group unless told otherwise.
            replicas: match train.loss {
                LossKind::Ce => train.replicas.unwrap_or(1),
                _ => train.replicas.unwrap_or(s1.step.replicas),
            },
            crop_norm: train.crop_norm,
            momentum_encoder: train.momentum_encoder.unwrap_or(s1.step.key_momentum),
            embedding_dim: p.embedding_dim,
            epochs,
            batch_size,
            lr: train
                .lr
                .unwrap_or(s1.lr_per_256 * batch_size as f64 / 256.0),
            // The preset's warm-up shortens with a short run; a warm-up given longer than the
            // run is refused in check().
            warmup_epochs: train.warmup_epochs.unwrap_or(s1.warmup_epochs.min(epochs)),
            weight_decay: train.weight_decay.unwrap_or(s1.step.sgd.weight_decay),
            checkpoint_every: train.checkpoint_every.unwrap_or(0),
            linear_epochs: linear.linear_epochs.unwrap_or(s2.epochs),
            linear_batch_size: linear.linear_batch_size.unwrap_or(s2.batch),
            linear_lr: linear.linear_lr.unwrap_or(s2.lr),
            linear_frozen_bn: linear.linear_frozen_bn,
            seed,
            imbalance: data.imbalance.unwrap_or(p.imbalance),
            min_scale: data.min_scale.unwrap_or(s1.image_scale.0),
            flip: p.flip && !data.no_flip,
        };
        cfg.check()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueInit;

    #[test]
    fn digits_defaults_and_round_trip() {
        let cfg = RunConfig::resolve(
            &DataArgs::default(),
            &TrainArgs::default(),
            &LinearArgs::default(),
            1,
        )
        .unwrap();
        assert_eq!(cfg.data_kind, DataKind::Digits);
        assert_eq!(
            (cfg.arch, cfg.image_size, cfg.crop_size),
            (Arch::Tiny, 16, 8)
        );
        assert_eq!(RunConfig::from_json(&cfg.to_json()).unwrap(), cfg);
        // The official random start is the default; a config recorded before --queue-init
        // existed started with an empty queue, and reads so.
        assert_eq!(cfg.queue_init, QueueInit::Random);
        let json = cfg.to_json();
        assert!(json.contains(r#""queue_init":"random""#), "{json}");
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old.as_object_mut().unwrap().remove("queue_init");
        let old = RunConfig::from_json(&old.to_string()).unwrap();
        assert_eq!(old.queue_init, QueueInit::Empty);
    }

    #[test]
    fn imagenet_defaults_are_the_recipe_and_bad_values_are_refused() {
        let data = DataArgs {
            train_list: Some("train.txt".into()),
            ..DataArgs::default()
        };
        let cfg =
            RunConfig::resolve(&data, &TrainArgs::default(), &LinearArgs::default(), 0).unwrap();
        assert_eq!(
            (cfg.arch, cfg.image_size, cfg.crop_size),
            (Arch::Resnet50, 224, 64)
        );
        assert_eq!((cfg.batch_size, cfg.lr, cfg.queue), (256, 0.1, 65536));
        let bad = TrainArgs {
            tau: Some(-1.0),
            ..TrainArgs::default()
        };
        assert!(RunConfig::resolve(&data, &bad, &LinearArgs::default(), 0).is_err());
        let two = DataArgs {
            cifar: Some("c".into()),
            ..data
        };
        assert!(two.kind().is_err());
    }

    /// Every preset's resolved defaults, setting by setting: the ImageNet-LT column is the
    /// published recipe, the others the numbers the runtime has always used for them.
    #[test]
    fn every_preset_resolves_to_its_numbers() {
        let resolve = |data: DataArgs| {
            RunConfig::resolve(&data, &TrainArgs::default(), &LinearArgs::default(), 0).unwrap()
        };
        let imagenet = resolve(DataArgs {
            imagenet_lt_json: Some("train.json".into()),
            ..DataArgs::default()
        });
        let cifar = resolve(DataArgs {
            cifar: Some("cifar".into()),
            ..DataArgs::default()
        });
        let digits = resolve(DataArgs::default());
        let sizes = |c: &RunConfig| {
            (
                c.arch,
                c.image_size,
                c.crop_size,
                c.embedding_dim,
                c.epochs,
                c.batch_size,
                c.warmup_epochs,
                c.queue,
                c.replicas,
                c.linear_epochs,
                c.linear_batch_size,
            )
        };
        let rates = |c: &RunConfig| {
            (
                c.lr,
                c.tau,
                c.momentum_encoder,
                c.linear_lr,
                c.imbalance,
                c.min_scale,
                c.flip,
            )
        };
        assert_eq!(
            sizes(&imagenet),
            (
                Arch::Resnet50,
                224,
                64,
                128,
                200,
                256,
                10,
                65536,
                2,
                40,
                2048
            )
        );
        assert_eq!(rates(&imagenet), (0.1, 0.07, 0.999, 10.0, 1.0, 0.08, true));
        assert_eq!(
            sizes(&cifar),
            (Arch::Resnet32, 32, 16, 128, 200, 256, 10, 8192, 1, 40, 512)
        );
        assert_eq!(rates(&cifar), (0.1, 0.07, 0.999, 1.0, 100.0, 0.08, true));
        assert_eq!(
            sizes(&digits),
            (Arch::Tiny, 16, 8, 32, 400, 64, 2, 1024, 1, 100, 64)
        );
        assert_eq!(
            rates(&digits),
            (1.2 * 64.0 / 256.0, 0.2, 0.99, 1.0, 10.0, 0.5, false)
        );
        for c in [&imagenet, &cifar, &digits] {
            assert_eq!(
                (c.crops, c.pbsd_weight, c.beta, c.weight_decay),
                (5, 1.5, 8.0, 5e-4)
            );
        }
        // What the recipes hold beyond the flags agrees with how the runtime derives it.
        for kind in [DataKind::ImageNetLt, DataKind::Cifar, DataKind::Digits] {
            let p = preset(kind);
            assert_eq!(p.stage1.crop_size, default_crop_size(p.stage1.image_size));
            let [a, b] = p.stage2.milestones;
            assert_eq!((2 * a, 4 * b), (p.stage2.epochs, 3 * p.stage2.epochs));
        }
    }
}
