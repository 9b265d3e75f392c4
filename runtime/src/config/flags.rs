//! The flags of the data, the two stages and the evaluation, as `train`, `linear`, `eval` and
//! `run` take them (their names are part of the contract). Left out, they take the defaults of
//! [`super::presets`]. A run records its data flags in every checkpoint, as the `data` of its
//! [`RunConfig`](super::RunConfig).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::{at_least_one, positive, Arch, CropNorm, DataKind, LossKind, QueueInit};
use crate::metrics::SplitThresholds;

/// Where the images come from. With none of the training flags, the built-in digits.
#[derive(Args, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DataArgs {
    /// Training list: one `relative/path label` per line, resolved against --root.
    #[arg(long, value_name = "FILE")]
    pub train_list: Option<PathBuf>,
    /// Test list for evaluation (same format).
    #[arg(long, value_name = "FILE")]
    pub test_list: Option<PathBuf>,
    /// Directory the list and JSON paths are resolved against.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// CIFAR-10 or CIFAR-100 binary directory (long-tailed by --imbalance for training; the
    /// balanced test split for evaluation).
    #[arg(long, value_name = "DIR")]
    pub cifar: Option<PathBuf>,
    /// Ratio of the largest to the smallest class after long-tailed subsampling (CIFAR and
    /// the built-in digits).
    #[arg(long, value_name = "R")]
    pub imbalance: Option<f64>,
    /// ImageNet-LT training JSON as the official code ships it.
    #[arg(long, value_name = "FILE")]
    pub imagenet_lt_json: Option<PathBuf>,
    /// ImageNet-LT test JSON (same format) for evaluation.
    #[arg(long, value_name = "FILE")]
    pub imagenet_lt_test_json: Option<PathBuf>,
    /// Training images, one subdirectory per class.
    #[arg(long, value_name = "DIR")]
    pub image_folder: Option<PathBuf>,
    /// Test images, one subdirectory per class (same class names).
    #[arg(long, value_name = "DIR")]
    pub test_image_folder: Option<PathBuf>,
    /// Square side of the query/key images fed to the network (default: 224 for image files,
    /// 32 for CIFAR, 16 for the digits).
    #[arg(long, value_name = "PX")]
    pub image_size: Option<usize>,
    /// Side of PBSD's small crops (default: 64 at 224 px, scaled with --image-size).
    #[arg(long, value_name = "PX")]
    pub crop_size: Option<usize>,
    /// Smallest area fraction of RandomResizedCrop for the query, key and stage-2 views
    /// (default 0.08 as published; 0.5 for the 8x8 digits, which a smaller crop destroys).
    #[arg(long, value_name = "FRACTION")]
    pub min_scale: Option<f64>,
    /// No horizontal flips (default for the digits, whose classes flips confuse).
    #[arg(long)]
    #[serde(default)]
    pub no_flip: bool,
    /// Image-decoding worker threads (default: the number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Report and skip unreadable images instead of stopping.
    #[arg(long)]
    #[serde(default)]
    pub skip_bad: bool,
}

impl DataArgs {
    /// `--workers`, the one data flag every command that decodes images checks as given.
    pub fn check_workers(&self) -> Result<()> {
        if self.workers == Some(0) {
            bail!("--workers must be at least 1 (or left out: one per CPU)");
        }
        Ok(())
    }

    /// The kind of training data named by the flags.
    pub fn kind(&self) -> Result<DataKind> {
        let named = [
            self.train_list.is_some(),
            self.cifar.is_some(),
            self.imagenet_lt_json.is_some(),
            self.image_folder.is_some(),
        ];
        if named.iter().filter(|&&b| b).count() > 1 {
            bail!(
                "give one training source: --train-list, --cifar, --imagenet-lt-json or \
                 --image-folder"
            );
        }
        Ok(if self.train_list.is_some() {
            DataKind::List
        } else if self.cifar.is_some() {
            DataKind::Cifar
        } else if self.imagenet_lt_json.is_some() {
            DataKind::ImageNetLt
        } else if self.image_folder.is_some() {
            DataKind::ImageFolder
        } else {
            DataKind::Digits
        })
    }
}

/// Stage-1 flags (`runtime train`).
#[derive(Args, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainArgs {
    /// Backbone (default: resnet50 for image files, resnet32 for CIFAR, tiny for the digits).
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    #[arg(long, value_enum, default_value = "dscl")]
    pub loss: LossKind,
    /// lambda, the weight of PBSD (0 turns it off).
    #[arg(long)]
    pub pbsd_weight: Option<f64>,
    /// DSCL's beta: the other positives' total weight relative to the augmented view's.
    #[arg(long)]
    pub beta: Option<f64>,
    /// Temperature.
    #[arg(long)]
    pub tau: Option<f64>,
    /// Queue length K.
    #[arg(long)]
    pub queue: Option<usize>,
    /// How the queue starts: `random` (the official start: K random unit keys with random
    /// labels, a full queue from the first step) or `empty` (unfilled rows masked).
    #[arg(long, value_enum, default_value = "random")]
    #[serde(default)]
    pub queue_init: QueueInit,
    /// Key-encoder momentum m.
    #[arg(long)]
    pub momentum_encoder: Option<f64>,
    /// PBSD crops per image.
    #[arg(long)]
    pub crops: Option<usize>,
    /// R: replica groups of each stage-1 batch, each with its own batch-norm statistics and
    /// contrast set and the keys' batch norm shuffled across them, as R GPUs of the official
    /// DDP run (default: 2 for the ImageNet-LT recipe, as published; 1 otherwise).
    #[arg(long)]
    #[serde(default)]
    pub replicas: Option<usize>,
    /// How the PBSD crops are batch-normalised: `per-set` (the official code: one pass per
    /// crop set) or `joint` (one pass over all crops; one replica only).
    #[arg(long, value_enum, default_value = "per-set")]
    #[serde(default)]
    pub crop_norm: CropNorm,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (default 0.1 x batch / 256).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Also write a checkpoint every N steps (besides every epoch's end).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
}

/// Stage-2 flags (`runtime linear`).
#[derive(Args, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LinearArgs {
    #[arg(long)]
    pub linear_epochs: Option<usize>,
    #[arg(long)]
    pub linear_batch_size: Option<usize>,
    #[arg(long)]
    pub linear_lr: Option<f64>,
    /// Keep the backbone's batch-norm statistics from stage 1 (inference mode) instead of
    /// re-estimating them on the class-balanced stage-2 batches as the official code does.
    #[arg(long)]
    #[serde(default)]
    pub linear_frozen_bn: bool,
    /// Evaluate on the test set after every stage-2 epoch, as the official stage 2 does, and
    /// also report the best epoch (selected on the test set, so optimistic) besides the final
    /// model; writes OUT/linear_epochs.json. Costs a test-set pass per epoch.
    #[arg(long)]
    #[serde(default)]
    pub eval_every_epoch: bool,
}

/// Evaluation flags.
#[derive(Args, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EvalArgs {
    /// Class-size thresholds MANY,FEW: Many has more than MANY training images, Few fewer
    /// than FEW.
    #[arg(long, value_name = "MANY,FEW", default_value = "100,20")]
    #[serde(with = "thresholds_serde")]
    pub split_thresholds: SplitThresholds,
}

mod thresholds_serde {
    use super::SplitThresholds;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SplitThresholds, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{},{}", t.many, t.few))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SplitThresholds, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl LinearArgs {
    /// The stage-2 values given on the command line, before any checkpoint is read.
    pub fn check(&self) -> Result<()> {
        if let Some(v) = self.linear_epochs {
            at_least_one("--linear-epochs", v)?;
        }
        if let Some(v) = self.linear_batch_size {
            at_least_one("--linear-batch-size", v)?;
        }
        if let Some(v) = self.linear_lr {
            positive("--linear-lr", v)?;
        }
        Ok(())
    }
}
