//! Steps that train a classifier with softmax cross-entropy on a ResNet's pooled features:
//! stage 2 of DSCL (the backbone frozen, only the linear classifier learns) and the
//! cross-entropy baseline (backbone and classifier learn together). Each step reads the device
//! once: the loss, its gradient probe and the fault slot together, after its backward is
//! queued and before SGD, so a fault stops the step with the parameters unchanged.
//!
//! Like the stage-1 step, a classifier step runs in R replica groups, the single-device form of
//! a data-parallel run without synchronised batch norm: the backbone's training-mode passes
//! normalise each group of batch / R images by its own statistics, and only group 0 moves the
//! running statistics (DDP broadcasts rank 0's buffers). The loss stays the mean over the whole
//! batch: DDP averages the replicas' mean losses, which for equal groups is the batch mean, so
//! one process computes it as one cross-entropy over every row.
//!
//! R processes can run one group each ([`ClassifierStep::placed`] and the `_across` steps):
//! each rank's cross-entropy is its rows' mean scaled by 1 / R, its gradients are all-reduced
//! after backward (before SGD), the losses summed over ranks, and rank 0's running statistics
//! broadcast after the step. In exact arithmetic that is the one-process step with R groups; in
//! floating point the gradient sums group in another order.

use crate::backend::Backend;
use crate::collective::{Collective, Placement, Solo};
use crate::error::{ensure, Result};
use crate::loss::CrossEntropy;
use crate::nn::batch_norm::StatGroups;
use crate::nn::linear::Linear;
use crate::nn::resnet::{ResNet, ResNetRecord};
use crate::nn::scratch::Scratch;
use crate::nn::tensors::TensorSet;
use crate::train::optim::{SgdConfig, Trainable};

/// A planned classifier step for `batch` images of `image_size` pixels.
pub struct ClassifierStep<B: Backend> {
    backbone: ResNetRecord<B>,
    logits: B::Buffer,
    d_pooled: B::Buffer,
    loss: CrossEntropy<B>,
    scratch: Scratch<B>,
    /// The images this process holds: the batch, or batch / R on each of R processes.
    rows: usize,
    replicas: usize,
    placement: Placement,
    running_statistics: bool,
}

impl<B: Backend> ClassifierStep<B> {
    /// The step of a one-process run with one replica group.
    pub fn new(
        backend: &B,
        backbone: &ResNet,
        fc: &Linear,
        batch: usize,
        image_size: usize,
    ) -> Result<Self> {
        Self::plan(backend, backbone, fc, batch, image_size, 1, Placement::SOLO)
    }

    /// The step of a one-process run with `replicas` groups of `batch / replicas` images.
    pub fn replicated(
        backend: &B,
        backbone: &ResNet,
        fc: &Linear,
        batch: usize,
        image_size: usize,
        replicas: usize,
    ) -> Result<Self> {
        Self::plan(
            backend,
            backbone,
            fc,
            batch,
            image_size,
            replicas,
            Placement::SOLO,
        )
    }

    /// The step of rank `placement.rank` of a run of `placement.world` processes, one replica
    /// group each: it holds `batch / world` of the run's `batch` images, and the `_across`
    /// steps exchange the rest through a [`Collective`] of that placement.
    pub fn placed(
        backend: &B,
        backbone: &ResNet,
        fc: &Linear,
        batch: usize,
        image_size: usize,
        placement: Placement,
    ) -> Result<Self> {
        Self::plan(
            backend,
            backbone,
            fc,
            batch,
            image_size,
            placement.world,
            placement,
        )
    }

    fn plan(
        backend: &B,
        backbone: &ResNet,
        fc: &Linear,
        batch: usize,
        image_size: usize,
        replicas: usize,
        placement: Placement,
    ) -> Result<Self> {
        placement.check()?;
        ensure(replicas >= 1, "replicas", "must be at least 1")?;
        ensure(batch >= 1, "batch", "must be at least 1")?;
        ensure(
            batch.is_multiple_of(replicas),
            "batch",
            "must be a multiple of the replica count (each replica group takes batch / replicas images)",
        )?;
        let groups = replicas / placement.world;
        let rows = batch / placement.world;
        // As DDP without synchronised batch norm: each replica normalises by its own
        // statistics, and rank 0's running statistics are the ones every rank keeps.
        let stat_groups = StatGroups {
            groups,
            running_every: groups,
        };
        let record = backbone.plan_grouped(backend, rows, image_size, image_size, stat_groups)?;
        let scratch = Scratch::new(backend, backbone.needs(backend, &record))?;
        Ok(ClassifierStep {
            backbone: record,
            logits: backend.alloc(rows * fc.out_features)?,
            d_pooled: backend.alloc(rows * fc.in_features)?,
            loss: CrossEntropy::new(backend, rows, fc.out_features)?,
            scratch,
            rows,
            replicas,
            placement,
            running_statistics: false,
        })
    }

    /// The images this process holds: the batch, or batch / R on each of R processes.
    pub fn local_batch(&self) -> usize {
        self.rows
    }

    /// Replica groups of the run (over all its processes).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Stage 2 with the backbone's batch norm in inference mode (the stage-1 running
    /// statistics, left unchanged) instead of the official code's training mode.
    pub fn use_running_statistics(&mut self, running: bool) {
        self.running_statistics = running;
    }

    /// Stage 2: the backbone (parameters `backbone_params`, unchanged) runs in training mode,
    /// so its batch-norm running statistics are re-estimated on these images, as the official
    /// code does; only `classifier` (which holds `fc`'s tensors) takes an SGD step.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_probe_step(
        &mut self,
        backend: &B,
        backbone: &ResNet,
        backbone_params: &TensorSet<B>,
        backbone_state: &mut TensorSet<B>,
        fc: &Linear,
        classifier: &mut Trainable<B>,
        images: &B::Buffer,
        labels: &B::IndexBuffer,
        sgd: &SgdConfig,
        lr: f64,
    ) -> Result<f64> {
        self.linear_probe_step_across(
            backend,
            &Solo,
            backbone,
            backbone_params,
            backbone_state,
            fc,
            classifier,
            images,
            labels,
            sgd,
            lr,
        )
    }

    /// [`Self::linear_probe_step`] as one rank of the run `collective` connects (the placement
    /// this step was planned for): `images` and `labels` are this rank's, the loss is the whole
    /// batch's.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_probe_step_across(
        &mut self,
        backend: &B,
        collective: &impl Collective<B>,
        backbone: &ResNet,
        backbone_params: &TensorSet<B>,
        backbone_state: &mut TensorSet<B>,
        fc: &Linear,
        classifier: &mut Trainable<B>,
        images: &B::Buffer,
        labels: &B::IndexBuffer,
        sgd: &SgdConfig,
        lr: f64,
    ) -> Result<f64> {
        self.check_collective(collective)?;
        if self.running_statistics {
            backbone.forward_inference(
                backend,
                backbone_params,
                backbone_state,
                &mut self.backbone,
                images,
                &mut self.scratch,
            )?;
        } else {
            backbone.forward(
                backend,
                backbone_params,
                backbone_state,
                &mut self.backbone,
                images,
                &mut self.scratch,
            )?;
        }
        classifier.zero_grads(backend)?;
        self.classify(backend, fc, classifier, labels, false)?;
        collective.all_reduce_sum(backend, classifier.grads.buffers_mut())?;
        let loss = self.finish(backend, collective)?;
        classifier.sgd_step(backend, sgd, lr)?;
        // Inference mode moved no running statistic, so there is nothing to make the run's.
        if !self.running_statistics {
            collective.broadcast(backend, backbone_state.buffers_mut(), 0)?;
        }
        Ok(loss)
    }

    /// The cross-entropy baseline: `model` holds the backbone's and `fc`'s tensors (a
    /// [`crate::nn::classifier::ResNetClassifier`] layout); all of them take an SGD step.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_step(
        &mut self,
        backend: &B,
        backbone: &ResNet,
        fc: &Linear,
        model: &mut Trainable<B>,
        state: &mut TensorSet<B>,
        images: &B::Buffer,
        labels: &B::IndexBuffer,
        sgd: &SgdConfig,
        lr: f64,
    ) -> Result<f64> {
        self.cross_entropy_step_across(
            backend, &Solo, backbone, fc, model, state, images, labels, sgd, lr,
        )
    }

    /// [`Self::cross_entropy_step`] as one rank of the run `collective` connects (the placement
    /// this step was planned for): `images` and `labels` are this rank's, the loss is the whole
    /// batch's.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_step_across(
        &mut self,
        backend: &B,
        collective: &impl Collective<B>,
        backbone: &ResNet,
        fc: &Linear,
        model: &mut Trainable<B>,
        state: &mut TensorSet<B>,
        images: &B::Buffer,
        labels: &B::IndexBuffer,
        sgd: &SgdConfig,
        lr: f64,
    ) -> Result<f64> {
        self.check_collective(collective)?;
        model.zero_grads(backend)?;
        backbone.forward(
            backend,
            &model.params,
            state,
            &mut self.backbone,
            images,
            &mut self.scratch,
        )?;
        self.classify(backend, fc, model, labels, true)?;
        backbone.backward(
            backend,
            &model.params,
            &mut model.grads,
            &self.backbone,
            &self.d_pooled,
            images,
            &mut self.scratch,
        )?;
        collective.all_reduce_sum(backend, model.grads.buffers_mut())?;
        let loss = self.finish(backend, collective)?;
        model.sgd_step(backend, sgd, lr)?;
        collective.broadcast(backend, state.buffers_mut(), 0)?;
        Ok(loss)
    }

    fn check_collective(&self, collective: &impl Collective<B>) -> Result<()> {
        ensure(
            collective.placement() == self.placement,
            "collective",
            "connects another placement than the step was planned for",
        )
    }

    /// Each rank's share of the batch's mean: 1 / R across R processes, 1 on one process
    /// (whose one cross-entropy already averages over the whole batch).
    fn share(&self) -> f64 {
        1.0 / self.placement.world as f64
    }

    /// The classifier on the pooled features: logits, cross-entropy, and `fc`'s backward
    /// (gradients into `weights`, which holds `fc`'s tensors); with `pooled_gradient`, the
    /// gradient at the pooled features goes to `d_pooled` for the backbone's backward. Reads
    /// nothing back: the caller reads the loss once its backward is queued.
    fn classify(
        &mut self,
        backend: &B,
        fc: &Linear,
        weights: &mut Trainable<B>,
        labels: &B::IndexBuffer,
        pooled_gradient: bool,
    ) -> Result<()> {
        let pooled = &self.backbone.pooled;
        fc.forward(
            backend,
            &weights.params,
            self.rows,
            pooled,
            &mut self.logits,
        )?;
        self.loss.record(backend, &mut self.logits, labels)?;
        if self.placement.world > 1 {
            // The loss averaged this rank's rows; its gradient is this rank's part of the
            // batch's, which the all-reduce sums.
            let (len, share) = (self.rows * fc.out_features, self.share());
            backend.scale(&mut self.logits, len, share)?;
        }
        let d_pooled = pooled_gradient.then_some(&mut self.d_pooled);
        fc.backward(
            backend,
            &weights.params,
            &mut weights.grads,
            self.rows,
            pooled,
            &self.logits,
            d_pooled,
        )
    }

    /// The step's one read, with the whole backward queued (an error stops the step before
    /// SGD), and the batch's loss summed over the ranks.
    fn finish(&self, backend: &B, collective: &impl Collective<B>) -> Result<f64> {
        let mut loss = [self.loss.read_and_finish(backend, &self.logits)? * self.share()];
        collective.all_reduce_sum_host(&mut loss)?;
        Ok(loss[0])
    }
}
