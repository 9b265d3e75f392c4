//! dscl-runtime: everything around the core that needs an operating system: a run's settings,
//! its data and augmentation, the training stages and the evaluation, the memory they need,
//! and the files a run reads and writes. The `runtime` command (`main.rs`, `cli.rs`,
//! `commands/`) is the binary's own: it parses the command line and runs each command over
//! this library in checked phases.

pub mod augment;
pub mod backend_choice;
pub mod cluster;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod interrupt;
pub mod io;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod train;
pub mod verify;
