//! On-device fine-tuning with DSCL: the last stage and the projection head of a tiny ResNet
//! learn, its first two stages are frozen.
//!
//! The network is the core's tiny ResNet (`ResNetConfig::tiny`: 3x3 stem of 8 channels, one
//! basic block per stage) with the last stage narrowed from 32 to [`TuneConfig::tail_width`]
//! channels, so that its four copies (weights, gradients, SGD velocity, momentum encoder) fit a
//! 256 KiB part next to everything else:
//!
//! - **frozen prefix** ([`Prefix`]): stem, `layer1` (8 channels) and `layer2` (16 channels,
//!   stride 2), pretrained on the host (see [`crate::pretrained`]) and run in inference mode
//!   one chunk of images at a time, since no backward needs its activations;
//! - **trainable tail**: `layer3.0` (a [`ResidualBlock`], stride 2), global average pooling,
//!   the [`ProjectionHead`] and L2 normalisation, initialised afresh (torchvision's scheme)
//!   and trained by the core's DSCL loss
//!   ([`SupervisedContrastive::dscl`]) against a momentum copy of the tail and a [`KeyQueue`],
//!   with the core's SGD ([`Trainable`]) and momentum update ([`TensorSet::ema_from`]).
//!
//! [`FineTuneStep::step`] is `dscl_core::train::DsclStep::step` restricted to the tail, in the
//! MoCo order: momentum update, keys, queries, DSCL, backward, SGD, enqueue. `DsclStep` itself
//! trains a whole `Encoder` (a ResNet from its 3-channel stem), so it cannot leave a prefix
//! frozen. PBSD is off: its crop path would need a third tail record, the crops' features and
//! the teachers' buffers, which the 256 KiB budget does not hold at batch 8.
//!
//! As in the core, the layers ([`Network`], like `Encoder`), the tensors that persist between
//! steps ([`Model`], like `DsclModel`) and the planned step ([`FineTuneStep`], like
//! `DsclStep`) are separate values; the caller holds each in place (see [`Model::new`]).

use dscl_core::backend::{Backend, BufferLen};
use dscl_core::error::{ensure, Result};
use dscl_core::loss::{
    ContrastiveInputs, ContrastiveShape, L2Normalize, QueryGradient, SupervisedContrastive,
};
use dscl_core::nn::batch_norm::StatGroups;
use dscl_core::nn::block::BlockRecord;
use dscl_core::nn::{
    BlockKind, BnMode, GlobalAvgPool, HeadRecord, ProjectionHead, ResidualBlock, Scratch,
    ScratchNeeds, TensorLayout, TensorSet,
};
use dscl_core::train::{KeyQueue, SgdConfig, Trainable};

use crate::data::{self, Sampler, SIDE, VIEW_LEN};
use crate::prefix::{Prefix, PrefixRecord};
use crate::rng::SplitMix64;

/// f32 elements of the arena that [`TuneConfig::default`]'s model and step need, with a
/// little room (the firmware's arena; a host test checks the fit).
pub const ARENA_LEN: usize = 44 * 1024;
/// u32 elements of the index arena: the batch's labels, the queue's, the loss's.
pub const INDEX_ARENA_LEN: usize = 160;

/// Largest batch a step accepts (the step keeps the batch's image indices in a fixed array).
pub const MAX_BATCH: usize = 64;

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
        )?;
        ensure(
            self.prefix_chunk >= 1 && self.batch.is_multiple_of(self.prefix_chunk),
            "prefix chunk",
            "must divide the batch",
        )?;
        ensure(
            (0.0..=1.0).contains(&self.key_momentum),
            "key momentum",
            "must lie in [0, 1]",
        )
    }
}

/// The trainable part: `layer3.0`, global average pooling, the projection head.
#[derive(Clone, Debug, PartialEq)]
pub struct Tail {
    pub block: ResidualBlock,
    pub head: ProjectionHead,
}

/// The network's layers: shapes and tensor ids, no tensors (those are in a [`Model`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub prefix: Prefix,
    pub tail: Tail,
}

/// Everything that persists between steps: the frozen prefix's weights and statistics, the
/// tail's parameters with gradients and velocity, the momentum copy, both tails' batch-norm
/// statistics, and the key queue.
pub struct Model<B: Backend> {
    pub prefix_params: TensorSet<B>,
    pub prefix_state: TensorSet<B>,
    pub query: Trainable<B>,
    pub query_state: TensorSet<B>,
    pub key_params: TensorSet<B>,
    pub key_state: TensorSet<B>,
    pub queue: KeyQueue<B>,
}

impl<B: Backend<Elem = f32>> Model<B> {
    /// An empty queue of `config.queue_len` keys and no tensors yet: [`Network::new`] builds
    /// them into this model.
    ///
    /// Two phases because a model is large (each tensor set keeps room for 192 tensors, about
    /// 1.5 KB on a 32-bit target) and moving a finished one would need a second copy on the
    /// stack, next to the tensor layouts `Network::new` needs (17 KB each); filled in place,
    /// planning fits in 72 KB of stack instead of 88 KB.
    #[inline(never)]
    pub fn new(backend: &B, config: &TuneConfig) -> Result<Self> {
        config.check()?;
        let none = TensorLayout::new();
        let empty = || TensorSet::zeros(backend, &none);
        Ok(Model {
            prefix_params: empty()?,
            prefix_state: empty()?,
            query: Trainable::initialised(backend, &none, &mut SplitMix64::new(0))?,
            query_state: empty()?,
            key_params: empty()?,
            key_state: empty()?,
            queue: KeyQueue::new(backend, config.queue_len, config.embedding_dim)?,
        })
    }

    /// Trainable parameters (the tail) and frozen ones (the prefix).
    pub fn parameter_counts(&self) -> (usize, usize) {
        let count = |set: &TensorSet<B>| set.buffers().iter().map(BufferLen::len).sum();
        (count(&self.query.params), count(&self.prefix_params))
    }
}

impl Network {
    /// Builds the layers and their tensors into `model` (made by [`Model::new`] with the same
    /// `config`): the prefix with its pretrained weights, the tail initialised from `rng`
    /// (torchvision's scheme), and its copy in the key encoder (as MoCo starts).
    ///
    /// The tensor layouts live only in this frame: their stack is free again before training.
    #[inline(never)]
    pub fn new<B: Backend<Elem = f32>>(
        backend: &B,
        config: &TuneConfig,
        model: &mut Model<B>,
        rng: &mut SplitMix64,
    ) -> Result<Self> {
        config.check()?;
        let mut params = TensorLayout::new();
        let mut state = TensorLayout::new();
        let prefix = Prefix::new(&mut params, &mut state)?;
        replace(&mut model.prefix_params, || {
            TensorSet::zeros(backend, &params)
        })?;
        replace(&mut model.prefix_state, || {
            TensorSet::zeros(backend, &state)
        })?;
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
        let block = ResidualBlock::new(
            &mut params,
            &mut state,
            "layer3.0",
            BlockKind::Basic,
            crate::prefix::WIDTHS[1],
            config.tail_width,
            2,
            true,
        )?;
        let head = ProjectionHead::new(&mut params, config.tail_width, config.embedding_dim)?;
        replace(&mut model.query, || {
            Trainable::initialised(backend, &params, rng)
        })?;
        replace(&mut model.query_state, || {
            TensorSet::initialised(backend, &state, rng)
        })?;
        replace(&mut model.key_params, || TensorSet::zeros(backend, &params))?;
        model.key_params.copy_from(backend, &model.query.params)?;
        replace(&mut model.key_state, || {
            TensorSet::initialised(backend, &state, rng)
        })?;
        Ok(Network {
            prefix,
            tail: Tail { block, head },
        })
    }
}

/// `*slot = make()?` in a frame of its own, so that the new value's temporary (1.5 KB for a
/// tensor set, 4.6 KB for a trainable one) is not kept beside the layouts for the whole of
/// [`Network::new`] (the compiler does not overlap those temporaries).
#[inline(never)]
fn replace<T>(slot: &mut T, make: impl FnOnce() -> Result<T>) -> Result<()> {
    *slot = make()?;
    Ok(())
}

/// One pass through the tail for a batch: the block's activations, the pooled features, the
/// head's activations, the normalised embeddings and the backward's temporaries.
pub struct TailRecord<B: Backend> {
    block: BlockRecord<B>,
    gap: GlobalAvgPool,
    pooled: B::Buffer,
    head: HeadRecord<B>,
    normalize: L2Normalize<B>,
    /// `[batch, d]`, unit rows.
    pub embeddings: B::Buffer,
    d_head_out: B::Buffer,
    d_pooled: B::Buffer,
}

/// What the tail's backward needs beyond a [`Scratch`] sized for its outputs: the two
/// temporaries as large as its input (the block's input gradient, discarded, and the
/// gradient that flows through its shortcut).
struct TailGrads<B: Backend> {
    unit_in: B::Buffer,
    dx: B::Buffer,
}

impl Tail {
    /// Plans a pass over `[batch, in_channels, height, width]` prefix features.
    fn plan<B: Backend>(
        &self,
        backend: &B,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<TailRecord<B>> {
        let block = self
            .block
            .plan(backend, batch, height, width, StatGroups::WHOLE)?;
        let (channels, h, w) = block.out_dims;
        let dim = self.head.out_dim();
        Ok(TailRecord {
            block,
            gap: GlobalAvgPool {
                batch,
                channels,
                spatial: h * w,
            },
            pooled: backend.alloc(batch * channels)?,
            head: self.head.plan(backend, batch)?,
            normalize: L2Normalize::new(backend, batch, dim)?,
            embeddings: backend.alloc(batch * dim)?,
            d_head_out: backend.alloc(batch * dim)?,
            d_pooled: backend.alloc(batch * channels)?,
        })
    }

    /// Training-mode forward of features `x` (batch statistics; the running statistics in
    /// `state` advance), as `Encoder::forward` after the backbone's earlier stages.
    fn forward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        state: &mut TensorSet<B>,
        record: &mut TailRecord<B>,
        x: &B::Buffer,
        scratch: &mut Scratch<B>,
    ) -> Result<()> {
        self.block.forward(
            backend,
            params,
            BnMode::Train(state),
            &mut record.block,
            x,
            &mut scratch.tmp,
            &mut scratch.conv_workspace,
        )?;
        record
            .gap
            .forward(backend, &record.block.out, &mut record.pooled)?;
        self.head
            .forward(backend, params, &mut record.head, &record.pooled)?;
        record
            .normalize
            .forward(backend, &record.head.out, &mut record.embeddings)
    }

    /// Backward from the gradient at the embeddings, accumulating into `grads`, as
    /// `Encoder::backward` down to the tail's input.
    // Every buffer is passed explicitly, as the core's layers take them.
    #[allow(clippy::too_many_arguments)]
    fn backward<B: Backend>(
        &self,
        backend: &B,
        params: &TensorSet<B>,
        grads: &mut TensorSet<B>,
        record: &mut TailRecord<B>,
        x: &B::Buffer,
        d_embeddings: &B::Buffer,
        scratch: &mut Scratch<B>,
        big: &mut TailGrads<B>,
    ) -> Result<()> {
        record.normalize.backward(
            backend,
            &record.embeddings,
            d_embeddings,
            &mut record.d_head_out,
        )?;
        self.head.backward(
            backend,
            params,
            grads,
            &mut record.head,
            &record.pooled,
            &record.d_head_out,
            &mut record.d_pooled,
        )?;
        let Scratch {
            tmp,
            grad: [dy, _],
            conv_workspace,
            ..
        } = scratch;
        record.gap.backward(backend, &record.d_pooled, dy)?;
        // The block's third temporary receives the gradient through the shortcut, which is
        // input-sized: lend it the large buffer for this call (buffers are handles; nothing
        // is copied) and take it back whatever the outcome.
        core::mem::swap(&mut tmp[2], &mut big.unit_in);
        let result = self.block.backward(
            backend,
            params,
            grads,
            &record.block,
            x,
            dy,
            &mut big.dx,
            tmp,
            conv_workspace,
        );
        core::mem::swap(&mut tmp[2], &mut big.unit_in);
        result
    }
}

/// A planned fine-tuning step: every record, loss and temporary, allocated once from the
/// backend; a step allocates nothing.
pub struct FineTuneStep<B: Backend> {
    config: TuneConfig,
    /// One chunk's activations of the frozen prefix, and its input views `[chunk, 3, 8, 8]`.
    prefix: PrefixRecord<B>,
    prefix_input: B::Buffer,
    /// The tail's pass: first the key encoder's (only its embeddings are kept, in `keys`),
    /// then the query encoder's, which the backward reads. `DsclStep` encodes the queries
    /// first and so needs two records; keys first needs one.
    tail: TailRecord<B>,
    /// `[batch, d]`, the key encoder's embeddings of this step.
    keys: B::Buffer,
    /// `[batch, 16, 4, 4]` prefix features: of the key views, then of the query views (the
    /// key pass is done with them before the query views overwrite them).
    features: B::Buffer,
    /// Shared by the prefix passes and the tail's forward and backward.
    scratch: Scratch<B>,
    tail_grads: TailGrads<B>,
    contrastive: SupervisedContrastive<B>,
    d_queries: B::Buffer,
    labels: B::IndexBuffer,
    images: [usize; MAX_BATCH],
}

impl<B: Backend<Elem = f32>> FineTuneStep<B> {
    #[inline(never)]
    pub fn new(backend: &B, network: &Network, config: TuneConfig) -> Result<Self> {
        config.check()?;
        let b = config.batch;
        let prefix = network
            .prefix
            .plan(backend, config.prefix_chunk, SIDE, SIDE)?;
        let (channels, h, w) = prefix.feature_dims();
        let tail = network.tail.plan(backend, b, h, w)?;
        // The scratch covers the prefix and the tail's outputs; the tail's two input-sized
        // gradients are separate buffers (a scratch of five input-sized buffers would be
        // 3.6 k elements larger).
        let tail_needs = network.tail.block.needs(backend, &tail.block);
        let needs = network.prefix.needs(backend, &prefix).max(ScratchNeeds {
            activation: tail.block.out_len,
            conv_workspace: tail_needs.conv_workspace,
        });
        let shape = ContrastiveShape {
            batch: b,
            dim: config.embedding_dim,
            queue_len: config.queue_len,
            num_classes: data::CLASSES as u32,
        };
        Ok(FineTuneStep {
            prefix_input: backend.alloc(config.prefix_chunk * VIEW_LEN)?,
            features: backend.alloc(b * channels * h * w)?,
            scratch: Scratch::new(backend, needs)?,
            tail_grads: TailGrads {
                unit_in: backend.alloc(tail.block.in_len)?,
                dx: backend.alloc(tail.block.in_len)?,
            },
            keys: backend.alloc(b * config.embedding_dim)?,
            contrastive: SupervisedContrastive::dscl(
                backend,
                shape,
                config.temperature,
                config.beta,
            )?,
            d_queries: backend.alloc(b * config.embedding_dim)?,
            labels: backend.alloc_index(b)?,
            images: [0; MAX_BATCH],
            config,
            prefix,
            tail,
        })
    }

    pub fn config(&self) -> &TuneConfig {
        &self.config
    }

    /// One step on the next `batch` images of `sampler` at learning rate `lr`: momentum
    /// update, the keys' and the queries' embeddings, DSCL against the keys and the queue,
    /// backward through the tail, SGD, enqueue. Returns the DSCL loss (mean over the batch).
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
        let mut labels = [0u32; MAX_BATCH];
        for (slot, label) in self.images[..b].iter_mut().zip(labels.iter_mut()) {
            *slot = sampler.next(rng);
            *label = data::label(*slot);
        }
        backend.upload_index(&mut self.labels, 0, &labels[..b])?;

        // MoCo order: the key encoder moves before it encodes this step's keys.
        model
            .key_params
            .ema_from(backend, self.config.key_momentum, &model.query.params)?;
        self.encode_views(backend, network, model, rng)?;
        network.tail.forward(
            backend,
            &model.key_params,
            &mut model.key_state,
            &mut self.tail,
            &self.features,
            &mut self.scratch,
        )?;
        let len = b * self.config.embedding_dim;
        backend.copy(&self.tail.embeddings, 0, &mut self.keys, 0, len)?;

        self.encode_views(backend, network, model, rng)?;
        model.query.zero_grads(backend)?;
        network.tail.forward(
            backend,
            &model.query.params,
            &mut model.query_state,
            &mut self.tail,
            &self.features,
            &mut self.scratch,
        )?;
        let loss = self.contrastive.forward_backward(
            backend,
            &ContrastiveInputs {
                queries: &self.tail.embeddings,
                keys: &self.keys,
                queue: &model.queue.keys,
                labels: &self.labels,
                queue_labels: &model.queue.labels,
                queue_filled: model.queue.filled(),
            },
            QueryGradient::ThroughContrastSet,
            &mut self.d_queries,
        )?;
        network.tail.backward(
            backend,
            &model.query.params,
            &mut model.query.grads,
            &mut self.tail,
            &self.features,
            &self.d_queries,
            &mut self.scratch,
            &mut self.tail_grads,
        )?;
        model.query.sgd_step(backend, &self.config.sgd, lr)?;
        model.queue.enqueue(backend, &self.keys, &self.labels, b)?;
        Ok(loss)
    }

    /// A fresh random view of each image of the batch (a translation by -1, 0 or 1 pixel
    /// each way) through the frozen prefix, `prefix_chunk` images per pass, into `features`.
    fn encode_views(
        &mut self,
        backend: &B,
        network: &Network,
        model: &Model<B>,
        rng: &mut SplitMix64,
    ) -> Result<()> {
        let chunk = self.config.prefix_chunk;
        let (c, h, w) = self.prefix.feature_dims();
        let per_image = c * h * w;
        let mut view = [0.0f32; VIEW_LEN];
        for (k, images) in self.images[..self.config.batch].chunks(chunk).enumerate() {
            for (j, &i) in images.iter().enumerate() {
                let dx = rng.below(3) as isize - 1;
                let dy = rng.below(3) as isize - 1;
                data::write_view(i, dx, dy, &mut view);
                backend.upload(&mut self.prefix_input, j * VIEW_LEN, &view)?;
            }
            network.prefix.forward_inference(
                backend,
                &model.prefix_params,
                &model.prefix_state,
                &mut self.prefix,
                &self.prefix_input,
                &mut self.scratch,
            )?;
            backend.copy(
                self.prefix.features(),
                0,
                &mut self.features,
                k * chunk * per_image,
                chunk * per_image,
            )?;
        }
        Ok(())
    }
}
