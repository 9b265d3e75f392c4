//! On-device fine-tuning with DSCL: the last stage and the projection head of a tiny ResNet
//! learn, its first two stages are frozen.
//!
//! The network is the core's tiny ResNet (`ResNetConfig::tiny`: 3x3 stem of 8 channels, one
//! basic block per stage) with the last stage narrowed from 32 to [`TuneConfig::tail_width`]
//! channels, so that its four copies (weights, gradients, SGD velocity, momentum encoder) fit a
//! 256 KiB part next to everything else. It is the core's encoder cut after `layer2`
//! (`dscl_core::nn::tail`):
//!
//! - **frozen prefix** ([`Prefix`]): stem, `layer1` (8 channels) and `layer2` (16 channels,
//!   stride 2), pretrained on the host (see [`crate::pretrained`]) and run in inference mode
//!   one chunk of images at a time, since no backward needs its activations;
//! - **trainable tail** ([`EncoderTail`]): `layer3.0` (stride 2), global average pooling, the
//!   projection head and L2 normalisation, initialised afresh (torchvision's scheme).
//!
//! The step is the core's [`TailStep`]: DSCL against a momentum copy of the tail and a key
//! queue, with the core's SGD and momentum update. This file adds only what is the device's
//! own: the hyperparameters, the pretrained weights, and batches drawn from the long-tailed
//! subset with a random translation per view. PBSD is off: its crop path would need a third
//! tail record, the crops' features and the teachers' buffers, which the 256 KiB budget does
//! not hold at batch 8.

use dscl_core::backend::{Backend, BufferLen};
use dscl_core::error::{ensure, Result};
use dscl_core::nn::{CutEncoder, EncoderTail, TensorLayout, TensorSet};
use dscl_core::train::{ContrastiveLoss, SgdConfig, TailConfig, TailModel, TailStep, ViewPass};

use crate::data::{self, Sampler, SIDE, VIEW_LEN};
use crate::prefix::{self, Prefix, CUT_STAGE};
use crate::rng::SplitMix64;

/// f32 elements of the arena that [`TuneConfig::default`]'s model and step need, with a
/// little room (the firmware's arena; a host test checks the fit).
pub const ARENA_LEN: usize = 40 * 1024;
/// u32 elements of the index arena: the batch's labels, the queue's, the loss's.
pub const INDEX_ARENA_LEN: usize = 160;

/// Largest batch a step accepts (the step keeps the batch's image indices in a fixed array).
pub const MAX_BATCH: usize = 64;

/// Blocks in the trainable tail (`layer3.0`).
pub const TAIL_BLOCKS: usize = 1;

/// The hyperparameters of the fine-tuning run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TuneConfig {
    /// B: images per step.
    pub batch: usize,
    /// Images per pass of the frozen prefix (a divisor of `batch`): its activations are held
    /// for this many images only.
    pub prefix_chunk: usize,
    /// Channels of the trainable last stage (32 in `ResNetConfig::tiny`).
    pub tail_width: usize,
    /// d: embedding dimension.
    pub embedding_dim: usize,
    /// K: queue length.
    pub queue_len: usize,
    pub temperature: f64,
    /// DSCL's beta: the other positives' total weight against the augmented view's 1.
    pub beta: f64,
    /// m: momentum of the key encoder.
    pub key_momentum: f64,
    pub sgd: SgdConfig,
}

impl Default for TuneConfig {
    /// The firmware's settings: the runtime's digits recipe where it fits (tau 0.2, key
    /// momentum 0.99, beta 8, SGD momentum 0.9 and weight decay 5e-4), sizes cut to a 256 KiB
    /// part. A 16-channel last stage or d = 32 learnt no better on the host (same loss ratio
    /// after 1,000 steps).
    fn default() -> Self {
        TuneConfig {
            batch: 8,
            prefix_chunk: 1,
            tail_width: 12,
            embedding_dim: 16,
            queue_len: 64,
            temperature: 0.2,
            beta: dscl_core::loss::DEFAULT_BETA,
            key_momentum: 0.99,
            sgd: SgdConfig::STAGE1,
        }
    }
}

impl TuneConfig {
    fn check(&self) -> Result<()> {
        ensure(
            (1..=MAX_BATCH).contains(&self.batch),
            "batch",
            "must be 1 to MAX_BATCH",
        )
    }

    /// The core step's settings.
    pub fn tail_config(&self) -> TailConfig {
        TailConfig {
            batch: self.batch,
            prefix_chunk: self.prefix_chunk,
            loss: ContrastiveLoss::Dscl { beta: self.beta },
            temperature: self.temperature,
            key_momentum: self.key_momentum,
            sgd: self.sgd,
        }
    }
}

/// The network's layers, cut after `layer2`: shapes and tensor ids, no tensors (those are in
/// a [`Model`]).
pub type Network = CutEncoder<{ prefix::BLOCKS }, TAIL_BLOCKS>;

/// Everything that persists between steps: the frozen prefix's weights and statistics, the
/// tail's parameters with gradients and velocity, the momentum copy, both tails' batch-norm
/// statistics, and the key queue.
pub type Model<B> = TailModel<B>;

/// An empty model for `config` (no tensors yet), which [`build_network`] fills in place.
pub fn empty_model<B: Backend>(backend: &B, config: &TuneConfig) -> Result<Model<B>> {
    config.check()?;
    TailModel::empty(backend, config.queue_len, config.embedding_dim)
}

/// Trainable parameters (the tail) and frozen ones (the prefix).
pub fn parameter_counts<B: Backend>(model: &Model<B>) -> (usize, usize) {
    let count = |set: &TensorSet<B>| set.buffers().iter().map(BufferLen::len).sum();
    (count(&model.tail.query.params), count(&model.prefix_params))
}

/// Builds the layers and their tensors into `model` (made by [`empty_model`] with the same
/// `config`): the prefix with its pretrained weights, the tail initialised from `rng`
/// (torchvision's scheme), and its copy in the key tail (as MoCo starts).
///
/// The tensor layouts live only in this frame: their stack is free again before training.
#[inline(never)]
pub fn build_network<B: Backend<Elem = f32>>(
    backend: &B,
    config: &TuneConfig,
    model: &mut Model<B>,
    rng: &mut SplitMix64,
) -> Result<Network> {
    config.check()?;
    let mut params = TensorLayout::new();
    let mut state = TensorLayout::new();
    let prefix = Prefix::new(prefix::prefix_config(), &mut params, &mut state)?;
    model.zero_prefix(backend, &params, &state)?;
    let mut weights = crate::pretrained::PREFIX;
    crate::pretrained::load(backend, &mut model.prefix_params, &mut weights)?;
    crate::pretrained::load(backend, &mut model.prefix_state, &mut weights)?;
    ensure(
        weights.is_empty(),
        "pretrained prefix",
        "longer than the prefix's tensors",
    )?;

    params = TensorLayout::new();
    state = TensorLayout::new();
    let tail = EncoderTail::new(
        prefix::network_config(config.tail_width),
        CUT_STAGE,
        config.embedding_dim,
        &mut params,
        &mut state,
    )?;
    model.tail.init(backend, &params, &state, rng)?;
    Ok(CutEncoder { prefix, tail })
}

/// A planned fine-tuning step: the core's [`TailStep`] and the batch's image indices.
pub struct FineTuneStep<B: Backend> {
    config: TuneConfig,
    step: TailStep<B, { prefix::BLOCKS }, TAIL_BLOCKS>,
    images: [usize; MAX_BATCH],
}

impl<B: Backend<Elem = f32>> FineTuneStep<B> {
    #[inline(never)]
    pub fn new(backend: &B, network: &Network, config: TuneConfig) -> Result<Self> {
        config.check()?;
        Ok(FineTuneStep {
            step: TailStep::new(
                backend,
                network,
                config.tail_config(),
                (SIDE, SIDE),
                config.queue_len,
                data::CLASSES as u32,
            )?,
            images: [0; MAX_BATCH],
            config,
        })
    }

    pub fn config(&self) -> &TuneConfig {
        &self.config
    }

    /// One step on the next `batch` images of `sampler` at learning rate `lr`, each view a
    /// fresh random translation of its image by -1, 0 or 1 pixel each way. Returns the DSCL
    /// loss (mean over the batch).
    pub fn step(
        &mut self,
        backend: &B,
        network: &Network,
        model: &mut Model<B>,
        sampler: &mut Sampler,
        rng: &mut SplitMix64,
        lr: f64,
    ) -> Result<f64> {
        let b = self.config.batch;
        let chunk = self.config.prefix_chunk;
        let mut labels = [0u32; MAX_BATCH];
        for (slot, label) in self.images[..b].iter_mut().zip(labels.iter_mut()) {
            *slot = sampler.next(rng);
            *label = data::label(*slot);
        }
        let images = &self.images;
        let mut view = [0.0f32; VIEW_LEN];
        let write_views = |_: ViewPass, first: usize, input: &mut B::Buffer| {
            for (j, &i) in images[first..first + chunk].iter().enumerate() {
                let dx = rng.below(3) as isize - 1;
                let dy = rng.below(3) as isize - 1;
                data::write_view(i, dx, dy, &mut view);
                backend.upload(input, j * VIEW_LEN, &view)?;
            }
            Ok(())
        };
        self.step
            .step(backend, network, model, &labels[..b], write_views, lr)
    }
}
