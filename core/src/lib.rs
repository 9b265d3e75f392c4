//! dscl-core: Decoupled Supervised Contrastive Learning (DSCL) and Patch-based Self
//! Distillation (PBSD) over one [`Backend`] trait, for every device from a Cortex-M to a GPU.
//!
//! `#![no_std]`; without the default `alloc` feature it needs no global allocator: every buffer
//! comes from the backend. With `alloc`, [`reference`] adds the scalar f64-accumulating oracle
//! that every backend is tested against.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod backend;
pub mod collective;
pub mod desc;
pub mod element;
pub mod error;
pub mod loss;
pub mod nn;
#[cfg(feature = "alloc")]
pub mod reference;
pub mod train;

pub use backend::{Backend, BufferLen};
pub use collective::{Collective, Placement, Solo};
pub use element::Element;
pub use error::{Error, Fault, FaultKind, Result};
