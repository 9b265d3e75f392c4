//! DSCL fine-tuning on a microcontroller: dscl-core's `no_std` layers, loss, optimizer and
//! queue over dscl-cpu's arena backend, with no allocator. `main.rs` runs it on a Cortex-M4F
//! under QEMU; the library builds for the host too, where its tests run the same steps.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod data;
pub mod prefix;
pub mod pretrained;
pub mod rng;
pub mod tune;
pub mod view;

pub use tune::{FineTuneStep, Model, Network, TuneConfig};

#[cfg(test)]
mod tests;
