//! Augmentation: the image views of the paper's recipe (the official code's torchvision
//! pipelines), from an [`Image`](crate::data::Image) to normalised CHW tensors.
//!
//! - [`stage1_views`]: the query view (`RandomResizedCrop` + flip + `ColorJitter(0.4, 0.4, 0.4,
//!   0.1)` p 0.8 + grayscale p 0.2 + Gaussian blur p 0.5), the key view (`RandomResizedCrop` +
//!   flip + `ColorJitter(0.4, 0.4, 0.4, 0)` always) and PBSD's `C` small crops of the query crop
//!   with their boxes in the query view;
//! - [`stage2_view`]: the official linear classifier's `RandomResizedCrop` + `ColorJitter(0.4,
//!   0.4, 0.4, 0.1)` p 0.8 + grayscale p 0.2 + Gaussian blur p 0.5 + flip;
//! - [`eval_view`]: resize and centre crop (or a plain resize for small images).
//!
//! Settings are in [`AugmentConfig`]. One concept per module: [`crop`] (box sampling, flip),
//! [`resize`] (antialiased bilinear), [`colour`] (jitter, grayscale), [`blur`] (Pillow's),
//! [`normalise`], [`config`], [`views`]. All randomness comes from the caller's [`rand::Rng`]:
//! the same RNG state gives the same views.

pub mod blur;
pub mod colour;
pub mod config;
pub mod crop;
pub mod normalise;
mod random;
pub mod resize;
pub mod views;

#[cfg(test)]
mod reference;

pub use colour::Jitter;
pub use config::{AugmentConfig, ViewOps};
pub use normalise::{IMAGENET_MEAN, IMAGENET_STD};
pub use views::{eval_view, stage1_views, stage2_view, Stage1Views};
