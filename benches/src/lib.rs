//! Shared set-up of the benchmarks.
//!
//! [`loss`]: one training step of the losses (DSCL + PBSD, forward and backward) at the paper's
//! shapes, on seeded random L2-normalised rows with long-tailed labels. Used by
//! `benches/loss.rs` (criterion timing) and `src/bin/loss_memory.rs` (peak memory, per-part
//! timing); `compare/loss_torch.py` builds the same problem in PyTorch.
//!
//! [`cli`]: what the training-step binaries (`train_step`, `dscl_step`) share: flag parsing,
//! network names, backend opening, timing summary.

pub mod cli;
pub mod loss;
pub mod rss;
