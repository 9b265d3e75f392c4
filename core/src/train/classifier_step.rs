//! Steps that train a classifier with softmax cross-entropy on a ResNet's pooled features:
//! stage 2 of DSCL (the backbone frozen, only the linear classifier learns) and the
//! cross-entropy baseline (backbone and classifier learn together). Each step reads the device
//! once: the loss, its gradient probe and the fault slot together, after its backward is
//! queued and before SGD, so a fault stops the step with the parameters unchanged.

use crate::backend::Backend;
use crate::error::Result;
use crate::loss::CrossEntropy;
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
    batch: usize,
    running_statistics: bool,
}

impl<B: Backend> ClassifierStep<B> {
    pub fn new(
        backend: &B,
        backbone: &ResNet,
        fc: &Linear,
        batch: usize,
        image_size: usize,
    ) -> Result<Self> {
        let record = backbone.plan(backend, batch, image_size, image_size)?;
        let scratch = Scratch::new(backend, backbone.needs(backend, &record))?;
        Ok(ClassifierStep {
            backbone: record,
            logits: backend.alloc(batch * fc.out_features)?,
            d_pooled: backend.alloc(batch * fc.in_features)?,
            loss: CrossEntropy::new(backend, batch, fc.out_features)?,
            scratch,
            batch,
            running_statistics: false,
        })
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
        // The step's one read, with the backward queued; an error stops it before SGD.
        let loss = self.loss.read_and_finish(backend, &self.logits)?;
        classifier.sgd_step(backend, sgd, lr)?;
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
        // The step's one read, with the whole backward queued; an error stops it before SGD.
        let loss = self.loss.read_and_finish(backend, &self.logits)?;
        model.sgd_step(backend, sgd, lr)?;
        Ok(loss)
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
            self.batch,
            pooled,
            &mut self.logits,
        )?;
        self.loss.record(backend, &mut self.logits, labels)?;
        let d_pooled = pooled_gradient.then_some(&mut self.d_pooled);
        fc.backward(
            backend,
            &weights.params,
            &mut weights.grads,
            self.batch,
            pooled,
            &self.logits,
            d_pooled,
        )
    }
}
