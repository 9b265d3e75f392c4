//! dscl-runtime: everything around the core that needs an operating system: reading data and
//! test vectors, choosing a backend, and the `runtime` command line.

pub mod augment;
pub mod backend_choice;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod interrupt;
pub mod io;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod stage1;
pub mod stage2;
pub mod verify;
