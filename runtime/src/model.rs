//! From the run's configuration to the core's network descriptions.

use dscl_core::nn::{Encoder, ResNetClassifier, ResNetConfig};
use dscl_core::train::{ContrastiveLoss, DsclConfig, SgdConfig};

use crate::config::{Arch, LossKind, RunConfig};

pub fn resnet_config(arch: Arch, image_size: usize) -> ResNetConfig {
    let base = match arch {
        Arch::Resnet18 => ResNetConfig::resnet18(),
        Arch::Resnet32 => ResNetConfig::resnet32(),
        Arch::Resnet50 => ResNetConfig::resnet50(),
        Arch::Tiny => ResNetConfig::tiny(),
    };
    // The ImageNet stem divides by 4 before the stages: on small images use the CIFAR stem.
    if image_size < 64 {
        base.with_cifar_stem()
    } else {
        base
    }
}

pub fn encoder(cfg: &RunConfig) -> dscl_core::Result<Encoder> {
    Encoder::new(resnet_config(cfg.arch, cfg.image_size), cfg.embedding_dim)
}

pub fn classifier(cfg: &RunConfig, num_classes: usize) -> dscl_core::Result<ResNetClassifier> {
    ResNetClassifier::new(resnet_config(cfg.arch, cfg.image_size), num_classes)
}

pub fn sgd(cfg: &RunConfig) -> SgdConfig {
    SgdConfig {
        weight_decay: cfg.weight_decay,
        ..SgdConfig::STAGE1
    }
}

pub fn dscl_config(cfg: &RunConfig) -> DsclConfig {
    DsclConfig {
        loss: match cfg.loss {
            LossKind::Scl => ContrastiveLoss::SupCon,
            _ => ContrastiveLoss::Dscl { beta: cfg.beta },
        },
        temperature: cfg.tau,
        pbsd_weight: cfg.pbsd_weight,
        crops: cfg.crops,
        queue_len: cfg.queue,
        key_momentum: cfg.momentum_encoder,
        sgd: sgd(cfg),
    }
}
