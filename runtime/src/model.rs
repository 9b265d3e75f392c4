//! From the run's configuration to the core's network descriptions.

use dscl_core::nn::{Encoder, ResNet, ResNetClassifier, ResNetConfig, TensorLayout};
use dscl_core::train::{ContrastiveLoss, CropNorm, DsclConfig, SgdConfig};

use crate::config::{self, Arch, LossKind, RunConfig};

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

/// The backbone alone, with the layouts of its own parameters and running statistics. Its
/// tensors come first, under the same names, in both the encoder's and the classifier's
/// layouts, so it reads the backbone of a contrastive or a cross-entropy checkpoint.
pub struct Backbone {
    pub net: ResNet,
    pub params: TensorLayout,
    pub state: TensorLayout,
}

pub fn backbone(cfg: &RunConfig) -> dscl_core::Result<Backbone> {
    let mut params = TensorLayout::new();
    let mut state = TensorLayout::new();
    let net = ResNet::new(
        resnet_config(cfg.arch, cfg.image_size),
        &mut params,
        &mut state,
    )?;
    Ok(Backbone { net, params, state })
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
        replicas: cfg.replicas,
        crop_norm: match cfg.crop_norm {
            config::CropNorm::PerSet => CropNorm::PerSet,
            config::CropNorm::Joint => CropNorm::Joint,
        },
    }
}
