//! What defines a ResNet backbone's shape: the [`ResNetConfig`] (stem, block kind, blocks and
//! width per stage) with the published presets, and the figures that follow from it alone
//! (final channels, overall stride). Kept apart from the planned network and its passes in
//! `resnet.rs`, which validates a configuration when it registers the tensors.

use crate::nn::block::BlockKind;

/// Most stages.
pub const MAX_STAGES: usize = 4;

/// The first layers before the residual stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stem {
    /// 7x7 stride-2 convolution, norm, ReLU, 3x3 stride-2 max-pool: overall stride 4.
    ImageNet,
    /// 3x3 stride-1 convolution, norm, ReLU: overall stride 1 (32 px data).
    Cifar,
}

/// Everything that defines a backbone's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    pub stem: Stem,
    pub stem_channels: usize,
    pub block: BlockKind,
    /// Blocks in each stage (only the first `stages` entries count).
    pub blocks: [usize; MAX_STAGES],
    /// Width of each stage (its output has `width * expansion` channels).
    pub widths: [usize; MAX_STAGES],
    pub stages: usize,
    /// Start the last norm of every residual branch with gamma 0 (torchvision's
    /// `zero_init_residual`), so each block starts as the identity.
    pub zero_init_residual: bool,
}

impl ResNetConfig {
    pub fn resnet18() -> Self {
        Self::imagenet(BlockKind::Basic, [2, 2, 2, 2])
    }
    pub fn resnet34() -> Self {
        Self::imagenet(BlockKind::Basic, [3, 4, 6, 3])
    }
    pub fn resnet50() -> Self {
        Self::imagenet(BlockKind::Bottleneck, [3, 4, 6, 3])
    }
    fn imagenet(block: BlockKind, blocks: [usize; 4]) -> Self {
        ResNetConfig {
            stem: Stem::ImageNet,
            stem_channels: 64,
            block,
            blocks,
            widths: [64, 128, 256, 512],
            stages: 4,
            zero_init_residual: true,
        }
    }
    /// The CIFAR ResNet-32 of the long-tailed literature: 3x3 stem of 16 channels, three
    /// stages of five basic blocks (16, 32, 64 channels), overall stride 4. Shortcuts that
    /// change shape are 1x1 projections (option B).
    pub fn resnet32() -> Self {
        ResNetConfig {
            stem: Stem::Cifar,
            stem_channels: 16,
            block: BlockKind::Basic,
            blocks: [5, 5, 5, 0],
            widths: [16, 32, 64, 0],
            stages: 3,
            zero_init_residual: true,
        }
    }
    /// A microcontroller-sized network: 3x3 stem of 8 channels and three stages of one basic
    /// block (8, 16, 32 channels), overall stride 4, about 25 k parameters.
    pub fn tiny() -> Self {
        ResNetConfig {
            stem: Stem::Cifar,
            stem_channels: 8,
            block: BlockKind::Basic,
            blocks: [1, 1, 1, 0],
            widths: [8, 16, 32, 0],
            stages: 3,
            zero_init_residual: true,
        }
    }
    /// The same network with the CIFAR stem (3x3 stride 1, no max-pool) for 32 px images.
    pub fn with_cifar_stem(mut self) -> Self {
        self.stem = Stem::Cifar;
        self
    }
    /// The backbone's first `stages` stages alone (with the stem): the prefix of an encoder
    /// cut after stage `stages` (see [`crate::nn::tail`]).
    pub fn cut(self, stages: usize) -> Self {
        ResNetConfig { stages, ..self }
    }
    /// Channels of the final feature map.
    pub fn feature_channels(&self) -> usize {
        self.widths[self.stages.max(1) - 1] * self.block.expansion()
    }
    /// Overall stride from image to final feature map.
    pub fn stride(&self) -> usize {
        let stem = match self.stem {
            Stem::ImageNet => 4,
            Stem::Cifar => 1,
        };
        stem << self.stages.saturating_sub(1)
    }
}
