//! The settings and values of a stage-1 step: its hyperparameters with the published
//! defaults, its shapes, its inputs and its losses.

use crate::backend::Backend;
use crate::loss::{DEFAULT_BETA, DEFAULT_CROPS, DEFAULT_PBSD_WEIGHT, DEFAULT_TEMPERATURE};
use crate::train::optim::SgdConfig;

/// The most replica groups one step holds (a node of 8 GPUs times 8 nodes).
pub const MAX_REPLICAS: usize = 64;

/// Which supervised contrastive loss stage 1 uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ContrastiveLoss {
    /// DSCL with the augmented view's weight 1 and the other positives' total weight `beta`.
    Dscl { beta: f64 },
    /// The SupCon baseline.
    SupCon,
}

/// How the crop pass's batch norm takes its statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CropNorm {
    /// The official code: each crop set (crop c of every image) its own pass, so statistics
    /// per set and replica group, and the running statistics moved once per set.
    PerSet,
    /// One set of statistics over all C x B crops and one running-statistics move: cheaper to
    /// reason about, but not the official method (a set's statistics mix with the others'),
    /// and defined for one replica only.
    Joint,
}

/// The hyperparameters of a stage-1 step, with the published defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DsclConfig {
    pub loss: ContrastiveLoss,
    pub temperature: f64,
    /// lambda: weight of PBSD in the total loss (0 turns PBSD off and skips the crop path).
    pub pbsd_weight: f64,
    /// C: small crops per image.
    pub crops: usize,
    /// K: queue length.
    pub queue_len: usize,
    /// m: key-encoder momentum.
    pub key_momentum: f64,
    pub sgd: SgdConfig,
    /// R: replica groups of the batch (the official ImageNet-LT run: 2 GPUs).
    pub replicas: usize,
    pub crop_norm: CropNorm,
}

impl Default for DsclConfig {
    fn default() -> Self {
        DsclConfig {
            loss: ContrastiveLoss::Dscl { beta: DEFAULT_BETA },
            temperature: DEFAULT_TEMPERATURE,
            pbsd_weight: DEFAULT_PBSD_WEIGHT,
            crops: DEFAULT_CROPS,
            queue_len: 65536,
            key_momentum: 0.999,
            sgd: SgdConfig::STAGE1,
            replicas: 1,
            crop_norm: CropNorm::PerSet,
        }
    }
}

/// Sizes of one step's inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepShape {
    /// B: images per step, all replica groups together.
    pub batch: usize,
    /// Query and key images are `image_size x image_size`.
    pub image_size: usize,
    /// Crops are `crop_size x crop_size`.
    pub crop_size: usize,
    pub num_classes: u32,
}

/// One step's inputs, on the device.
pub struct DsclBatch<'a, B: Backend> {
    /// `[B, 3, S, S]`
    pub queries: &'a B::Buffer,
    /// `[B, 3, S, S]`, the second view of the same images: in image order, or, with
    /// `key_shuffle`, in its order (the host writes each key image at its shuffled slot as it
    /// assembles the batch, so the device moves no image).
    pub keys: &'a B::Buffer,
    /// `[C * B, 3, s, s]`, crop-major: crop c of image i is item `c * B + i`.
    pub crops: &'a B::Buffer,
    /// `C * B` rows `(i, x1, y1, x2, y2)` in query-image pixels, in the crops' order.
    pub crop_boxes: &'a B::Buffer,
    /// `[B]` labels.
    pub labels: &'a B::IndexBuffer,
    /// Shuffled key batch norm with R > 1 replica groups: slot j of `keys` holds key image
    /// `key_shuffle[j]` (a permutation of `0..B`, drawn anew each step), so group g normalises
    /// key images `key_shuffle[g * B / R..(g + 1) * B / R]`; the step restores the keys to
    /// image order after the key encoder. `None`: `keys` are in image order. With one group
    /// `keys` must be in image order (no order changes its statistics, so none is restored).
    pub key_shuffle: Option<&'a [u32]>,
}

/// The losses of one step (means over the batch).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepLosses {
    pub total: f64,
    pub contrastive: f64,
    pub pbsd: f64,
}
