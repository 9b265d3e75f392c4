//! dscl-runtime: everything around the core that needs an operating system: reading data and
//! test vectors, choosing a backend, and the `runtime` command line.

pub mod augment;
pub mod backend_choice;
pub mod bounded_read;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod datasets;
pub mod evaluate;
pub mod image;
pub mod interrupt;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod out_dir;
pub mod plot;
pub mod progress;
pub mod stage1;
pub mod stage2;
pub mod vectors;
pub mod verify;
