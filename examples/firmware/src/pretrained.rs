//! The frozen prefix's weights, pretrained on the host by `build.rs` and compiled into the
//! image (flash); [`load`] copies them into the arena when [`crate::tune::build_network`] builds
//! the model.
//!
//! `build.rs` trains the core's tiny ResNet (`ResNetConfig::tiny`, 32-d head) with the core's
//! own stage-1 step (`DsclStep`: DSCL with a momentum encoder and a queue, no PBSD) on the
//! digits of the runtime's train split that are *not* in the firmware's long-tailed subset, so
//! the images fine-tuned on are new to the network. It keeps `conv1`, `bn1`, `layer1.0.*` and
//! `layer2.0.*` (weights, then running statistics, in [`crate::prefix::Prefix`]'s order, as
//! little-endian f32); `layer3` and the head are discarded and trained afresh on the device.

use dscl_core::backend::{Backend, BufferLen};
use dscl_core::error::{Error, Result};
use dscl_core::nn::TensorSet;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/pretrained.rs"));
}
pub use generated::{BATCH, FINAL_LOSS, IMAGES, STEPS};

/// Parameters then running statistics of the prefix, little-endian f32.
pub static PREFIX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/prefix.f32"));

/// Fills every tensor of `set` in order from little-endian f32 `bytes`, advancing `bytes`.
pub fn load<B: Backend<Elem = f32>>(
    backend: &B,
    set: &mut TensorSet<B>,
    bytes: &mut &[u8],
) -> Result<()> {
    const CHUNK: usize = 64;
    let mut staging = [0.0f32; CHUNK];
    for buf in set.buffers_mut() {
        let len = buf.len();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let (chunk, rest) = bytes
                .split_at_checked(n * 4)
                .ok_or(Error::InvalidArgument {
                    what: "pretrained prefix",
                    reason: "shorter than the prefix's tensors",
                })?;
            for (v, b) in staging.iter_mut().zip(chunk.chunks_exact(4)) {
                *v = f32::from_le_bytes(b.try_into().unwrap_or([0; 4]));
            }
            backend.upload(buf, done, &staging[..n])?;
            *bytes = rest;
            done += n;
        }
    }
    Ok(())
}
