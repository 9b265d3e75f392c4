//! The frozen prefix: the stem, `layer1` and `layer2` of the core's tiny ResNet
//! (`ResNetConfig::tiny`), the core's `ResNet` of the tiny configuration cut after stage 2
//! (see `dscl_core::nn::tail`), with room for its two blocks rather than ResNet-50's 16 (the
//! sixteen-block capacity would cost about 10 KB of this firmware's stack). Shared with
//! `build.rs`, which pretrains it and writes its weights in this network's tensor order.

use dscl_core::nn::{ResNet, ResNetConfig};

/// Stages in the prefix: the encoder is cut after `layer2`.
pub const CUT_STAGE: usize = 2;
/// Blocks in the prefix (`layer1.0` and `layer2.0`).
pub const BLOCKS: usize = 2;

/// The frozen prefix's network.
pub type Prefix = ResNet<BLOCKS>;

/// The tiny ResNet with its last stage `tail_width` channels wide: the network the firmware
/// fine-tunes, prefix and tail.
pub fn network_config(tail_width: usize) -> ResNetConfig {
    let mut config = ResNetConfig::tiny();
    config.widths[CUT_STAGE] = tail_width;
    config
}

/// The prefix's configuration: the tiny ResNet's stem and first two stages (the tail's width
/// is not part of it).
pub fn prefix_config() -> ResNetConfig {
    ResNetConfig::tiny().cut(CUT_STAGE)
}
