//! The losses, each written once over the [`Backend`](crate::Backend) trait: SupCon and DSCL
//! ([`SupervisedContrastive`]), PBSD ([`PatchSelfDistillation`]) and softmax cross-entropy
//! ([`CrossEntropy`]).
//!
//! Each loss is a *plan*: built once for its shapes (it allocates its scratch buffers from the
//! backend then), it runs forward and backward together any number of times without allocating,
//! reads back only the scalar loss (with a probe of its gradient and the fault slot, in one
//! read), and turns any value fault recorded by the kernels into an [`Error`](crate::Error)
//! that names the input and row. Inside the crate each loss also runs in two halves, `record`
//! (queue everything, read nothing) and the explanation of what was read (`suspect` and
//! `check_outputs`; `read_and_finish` for cross-entropy), so a training step reads all of its
//! losses at once, after its backward is queued.

mod contrastive;
mod cross_entropy;
pub(crate) mod diagnose;
#[cfg(feature = "alloc")]
pub mod host;
mod normalize;
mod pbsd;

pub use contrastive::{ContrastiveInputs, QueryGradient, SupervisedContrastive};
pub use cross_entropy::CrossEntropy;
pub use normalize::L2Normalize;
pub use pbsd::{PatchSelfDistillation, PbsdInputs};

pub use crate::desc::PositiveWeighting;

use crate::error::{ensure, Result};

/// Published defaults (Xuan & Zhang, AAAI 2024; the official code).
pub const DEFAULT_TEMPERATURE: f64 = 0.07;
/// DSCL's beta: the other positives together get `beta` times the augmented view's weight.
pub const DEFAULT_BETA: f64 = 8.0;
/// The weight of the PBSD term in the total loss.
pub const DEFAULT_PBSD_WEIGHT: f64 = 1.5;
/// Crops per image for PBSD.
pub const DEFAULT_CROPS: usize = 5;

/// Upper bound on the elements of one block of logits a loss keeps at once: 16 Mi elements
/// (64 MiB in f32), all 256 anchor rows of the published batch at K = 65536 in one block. The
/// B x N logits are processed in blocks of anchor rows that fit, so memory stays flat as the
/// queue grows. Every block re-packs the queue for each of its GEMMs: at 4 Mi elements (63 rows)
/// the DSCL + PBSD step packed it 85 times and ran 1.33x slower on the CPU (346-353 against
/// 255-264 ms at K = 65536, `loss_memory --block-elems`), for 48 instead of 193 MiB of scratch.
pub const DEFAULT_MAX_BLOCK_ELEMS: usize = 1 << 24;

/// Dimensions shared by the contrastive losses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContrastiveShape {
    /// B: anchors (queries) per step; the keys are the same B images' other view.
    pub batch: usize,
    /// d: feature dimension (128 in the paper).
    pub dim: usize,
    /// K: queue capacity (65536 in the paper's ImageNet-LT recipe; 0 for no queue).
    pub queue_len: usize,
    /// Labels must lie in `0..num_classes`.
    pub num_classes: u32,
}

impl ContrastiveShape {
    pub(crate) fn check(&self) -> Result<()> {
        ensure(self.batch >= 1, "batch", "must be at least 1")?;
        ensure(self.dim >= 1, "feature dimension", "must be at least 1")?;
        ensure(self.num_classes >= 1, "num_classes", "must be at least 1")?;
        ensure(
            self.batch
                .checked_mul(2)
                .and_then(|b2| b2.checked_add(self.queue_len))
                .and_then(|n| n.checked_mul(self.dim))
                .is_some(),
            "queue length",
            "(2B + K) x d overflows the address space",
        )
    }

    /// N = 2B + K: columns of the contrast set [queries; keys; queue].
    pub fn contrast_len(&self) -> usize {
        2 * self.batch + self.queue_len
    }
}

pub(crate) fn check_temperature(tau: f64) -> Result<()> {
    ensure(
        tau.is_finite() && tau > 0.0,
        "temperature",
        "must be finite and positive",
    )
}

/// Anchor rows per block so that `rows * cols <= max_block_elems` (at least one row).
pub(crate) fn rows_per_block(total_rows: usize, cols: usize, max_block_elems: usize) -> usize {
    (max_block_elems / cols.max(1)).clamp(1, total_rows.max(1))
}
