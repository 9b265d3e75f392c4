//! The DSCL step of an encoder cut at a stage ([`crate::nn::tail`]): the tail learns, the
//! prefix stays as it was pretrained. For fine-tuning where memory is short, on a device:
//!
//! 1. momentum update of the key tail from the query tail;
//! 2. the key views through the frozen prefix, in inference mode (running statistics, nothing
//!    kept for a backward), `prefix_chunk` images per pass, into one feature buffer;
//! 3. the features through the key tail (training-mode batch norm; its running statistics
//!    advance) -> keys k;
//! 4. the query views through the prefix into the same feature buffer (the keys' features are
//!    no longer needed);
//! 5. the features through the query tail -> queries q;
//! 6. the contrastive loss (DSCL or SupCon) of q against k and the queue, and its gradient at q
//!    (the step's one read);
//! 7. backward through the query tail alone: the prefix gets no gradient, and its weights and
//!    statistics never change;
//! 8. SGD on the tail; 9. the batch's keys and labels enter the queue.
//!
//! This is [`DsclStep`](crate::train::DsclStep) with one replica group and PBSD off, for a
//! tail. The keys are encoded first, where `DsclStep` encodes the queries first: the
//! momentum update reads only the query tail's parameters, which the queries' forward does not
//! change, so the order changes no value, and keys first lets the two passes share one tail
//! record and one feature buffer. The caller writes each chunk's input views (its own
//! augmentation, on the host or the device) through a callback, so a batch never has to be
//! held as images.

use crate::backend::Backend;
use crate::error::{check_len, ensure, Result};
use crate::loss::{ContrastiveInputs, ContrastiveShape, QueryGradient, SupervisedContrastive};
use crate::nn::resnet::{ResNet, ResNetRecord};
use crate::nn::scratch::Scratch;
use crate::nn::tail::{CutEncoder, TailRecord};
use crate::nn::tensors::{TensorLayout, TensorSet};
use crate::train::dscl_step::ContrastiveLoss;
use crate::train::model::{replace, DsclModel};
use crate::train::optim::SgdConfig;

/// The hyperparameters of a tail step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TailConfig {
    /// B: images per step.
    pub batch: usize,
    /// Images per pass of the frozen prefix (a divisor of `batch`): its activations are held
    /// for this many images only.
    pub prefix_chunk: usize,
    pub loss: ContrastiveLoss,
    pub temperature: f64,
    /// m: momentum of the key tail.
    pub key_momentum: f64,
    pub sgd: SgdConfig,
}

impl TailConfig {
    fn check(&self) -> Result<()> {
        ensure(self.batch >= 1, "batch", "must be at least 1")?;
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

/// Which of a step's two encodings a view is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewPass {
    Key,
    Query,
}

/// Everything a tail fine-tuning run keeps between steps: the frozen prefix's weights and
/// statistics, and the tail's as a stage-1 model (its parameters with gradients and velocity,
/// the key tail, both tails' batch-norm statistics, the key queue).
pub struct TailModel<B: Backend> {
    pub prefix_params: TensorSet<B>,
    pub prefix_state: TensorSet<B>,
    pub tail: DsclModel<B>,
}

impl<B: Backend> TailModel<B> {
    /// No tensors yet and an empty queue of `queue_len` keys of `embedding_dim`:
    /// [`Self::zero_prefix`] and the tail's [`DsclModel::init`] make them in place (see
    /// [`DsclModel::empty`]).
    #[inline(never)]
    pub fn empty(backend: &B, queue_len: usize, embedding_dim: usize) -> Result<Self> {
        let none = TensorLayout::new();
        Ok(TailModel {
            prefix_params: TensorSet::zeros(backend, &none)?,
            prefix_state: TensorSet::zeros(backend, &none)?,
            tail: DsclModel::empty(backend, queue_len, embedding_dim)?,
        })
    }

    /// Zeroed tensors of the prefix's layouts, for the caller to load its pretrained weights
    /// and statistics into.
    #[inline(never)]
    pub fn zero_prefix(
        &mut self,
        backend: &B,
        params: &TensorLayout,
        state: &TensorLayout,
    ) -> Result<()> {
        replace(&mut self.prefix_params, || {
            TensorSet::zeros(backend, params)
        })?;
        replace(&mut self.prefix_state, || TensorSet::zeros(backend, state))
    }
}

/// A planned tail step: every record, loss and temporary allocated once from the backend; a
/// step allocates nothing. `PREFIX` and `TAIL` are the two networks' block capacities.
pub struct TailStep<B: Backend, const PREFIX: usize, const TAIL: usize> {
    config: TailConfig,
    /// One chunk's input views `[chunk, 3, h, w]` and the prefix's activations for them.
    prefix_input: B::Buffer,
    prefix: ResNetRecord<B, PREFIX>,
    /// `[batch, c, h', w']` prefix feature maps: of the key views, then of the query views.
    features: B::Buffer,
    /// The tail's pass: the key tail's first (only its embeddings are kept, in `keys`), then
    /// the query tail's, which the backward reads.
    tail: TailRecord<B, TAIL>,
    /// `[batch, d]`, the key tail's embeddings of this step.
    keys: B::Buffer,
    /// Shared by the prefix passes and the tail's forward and backward.
    scratch: Scratch<B>,
    contrastive: SupervisedContrastive<B>,
    d_queries: B::Buffer,
    labels: B::IndexBuffer,
}

impl<B: Backend, const PREFIX: usize, const TAIL: usize> TailStep<B, PREFIX, TAIL> {
    /// Plans a step over `image_size` (height, width) views for a queue of `queue_len` keys
    /// and labels below `num_classes`.
    #[inline(never)]
    pub fn new(
        backend: &B,
        encoder: &CutEncoder<PREFIX, TAIL>,
        config: TailConfig,
        image_size: (usize, usize),
        queue_len: usize,
        num_classes: u32,
    ) -> Result<Self> {
        config.check()?;
        let CutEncoder { prefix, tail } = encoder;
        let (height, width) = image_size;
        ensure(
            prefix.feature_channels() == tail.in_channels(),
            "encoder cut",
            "the tail does not read the prefix's channels",
        )?;
        let b = config.batch;
        let prefix_record = prefix.plan(backend, config.prefix_chunk, height, width)?;
        let (channels, h, w) = prefix_record.feature_dims();
        let tail_record = tail.plan(backend, b, h, w)?;
        let needs = prefix
            .needs(backend, &prefix_record)
            .max(tail.needs(backend, &tail_record));
        let dim = tail.embedding_dim();
        let shape = ContrastiveShape {
            batch: b,
            dim,
            queue_len,
            num_classes,
        };
        Ok(TailStep {
            prefix_input: backend.alloc(prefix_record.input_len())?,
            features: backend.alloc(b * channels * h * w)?,
            scratch: Scratch::new(backend, needs)?,
            keys: backend.alloc(b * dim)?,
            contrastive: config.loss.plan(backend, shape, config.temperature)?,
            d_queries: backend.alloc(b * dim)?,
            labels: backend.alloc_index(b)?,
            config,
            prefix: prefix_record,
            tail: tail_record,
        })
    }

    pub fn config(&self) -> &TailConfig {
        &self.config
    }

    /// One step over a batch with `labels` at learning rate `lr`. `views(pass, first, input)`
    /// writes the input views of images `first..first + prefix_chunk` of the batch into
    /// `input` (`[prefix_chunk, 3, h, w]`), for the key pass and then for the query pass.
    /// Returns the loss (mean over the batch).
    pub fn step(
        &mut self,
        backend: &B,
        encoder: &CutEncoder<PREFIX, TAIL>,
        model: &mut TailModel<B>,
        labels: &[u32],
        mut views: impl FnMut(ViewPass, usize, &mut B::Buffer) -> Result<()>,
        lr: f64,
    ) -> Result<f64> {
        let CutEncoder { prefix, tail } = encoder;
        let b = self.config.batch;
        check_len("labels", labels.len(), b)?;
        backend.upload_index(&mut self.labels, 0, labels)?;

        // 1. Momentum update (MoCo order: before the key tail encodes this step's keys).
        model.tail.key_params.ema_from(
            backend,
            self.config.key_momentum,
            &model.tail.query.params,
        )?;
        // 2-3. Keys.
        self.encode_prefix(backend, prefix, model, ViewPass::Key, &mut views)?;
        tail.forward(
            backend,
            &model.tail.key_params,
            &mut model.tail.key_state,
            &mut self.tail,
            &self.features,
            &mut self.scratch,
        )?;
        backend.copy(
            self.tail.embeddings(),
            0,
            &mut self.keys,
            0,
            b * tail.embedding_dim(),
        )?;
        // 4-5. Queries.
        self.encode_prefix(backend, prefix, model, ViewPass::Query, &mut views)?;
        model.tail.query.zero_grads(backend)?;
        tail.forward(
            backend,
            &model.tail.query.params,
            &mut model.tail.query_state,
            &mut self.tail,
            &self.features,
            &mut self.scratch,
        )?;
        // 6. Loss and its gradient at the queries.
        let loss = self.contrastive.forward_backward(
            backend,
            &ContrastiveInputs {
                queries: self.tail.embeddings(),
                keys: &self.keys,
                queue: &model.tail.queue.keys,
                labels: &self.labels,
                queue_labels: &model.tail.queue.labels,
                queue_filled: model.tail.queue.filled(),
            },
            QueryGradient::ThroughContrastSet,
            &mut self.d_queries,
        )?;
        // 7. Backward through the query tail.
        tail.backward(
            backend,
            &model.tail.query.params,
            &mut model.tail.query.grads,
            &mut self.tail,
            &self.features,
            &self.d_queries,
            &mut self.scratch,
        )?;
        // 8-9. SGD, enqueue.
        model.tail.query.sgd_step(backend, &self.config.sgd, lr)?;
        model
            .tail
            .queue
            .enqueue(backend, &self.keys, &self.labels, b)?;
        Ok(loss)
    }

    /// Every chunk of the batch's `pass` views through the frozen prefix into `features`.
    fn encode_prefix(
        &mut self,
        backend: &B,
        prefix: &ResNet<PREFIX>,
        model: &TailModel<B>,
        pass: ViewPass,
        views: &mut impl FnMut(ViewPass, usize, &mut B::Buffer) -> Result<()>,
    ) -> Result<()> {
        let chunk = self.config.prefix_chunk;
        let (c, h, w) = self.prefix.feature_dims();
        let per_image = c * h * w;
        for first in (0..self.config.batch).step_by(chunk) {
            views(pass, first, &mut self.prefix_input)?;
            prefix.forward_inference(
                backend,
                &model.prefix_params,
                &model.prefix_state,
                &mut self.prefix,
                &self.prefix_input,
                &mut self.scratch,
            )?;
            backend.copy(
                self.prefix.feature_map(),
                0,
                &mut self.features,
                first * per_image,
                chunk * per_image,
            )?;
        }
        Ok(())
    }
}
