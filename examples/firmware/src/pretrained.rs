//! The frozen prefix's weights, pretrained on the host by `build.rs` and compiled into the
//! image (flash); [`crate::tune::Model::new`] copies them into the arena.
//!
//! `build.rs` trains the core's tiny ResNet (`ResNetConfig::tiny`, 32-d head) with the core's
//! own stage-1 step (`DsclStep`: DSCL with a momentum encoder and a queue, no PBSD) on the
//! digits of the runtime's train split that are *not* in the firmware's long-tailed subset, so
//! the images fine-tuned on are new to the network. It keeps `conv1`, `bn1`, `layer1.0.*` and
//! `layer2.0.*` (weights, then running statistics, in [`crate::prefix::Prefix`]'s order, as
//! little-endian f32); `layer3` and the head are discarded and trained afresh on the device.

mod generated {
    include!(concat!(env!("OUT_DIR"), "/pretrained.rs"));
}
pub use generated::{BATCH, FINAL_LOSS, IMAGES, STEPS};

/// Parameters then running statistics of the prefix, little-endian f32.
pub static PREFIX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/prefix.f32"));
