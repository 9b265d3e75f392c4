//! The stage-1 training step of DSCL + PBSD (Xuan & Zhang 2024):
//!
//! 1. query path: the full-size query images through the encoder -> queries q (with gradient);
//! 2. teachers: the query's last feature map ROI-aligned (2x2) on each crop's box, averaged,
//!    through the same head, normalised -> t (no gradient);
//! 3. crop path: the C small crops, batched, through the same encoder -> students s;
//! 4. momentum update of the key encoder, then the key images through it -> keys k;
//! 5. loss = DSCL(q; k, queue) + lambda * PBSD(t -> s; k, queue), queued without a read: both
//!    losses and their gradient probes go to one four-element totals buffer;
//! 6. backward through the crop path and the query path into one gradient set; then the step's
//!    one read: the totals and the fault slot together ([`Backend::download_with_fault`]), so
//!    the host waits for the device once per step, with the whole forward and backward queued
//!    ahead of it, and a fault or overflow (named as each loss names it alone) stops the step
//!    here, before any parameter changes;
//! 7. SGD; 8. the keys and labels enter the queue.
//!
//! [`DsclStep::forward_backward`] is steps 1-6 alone, for gradient checks.

use crate::backend::Backend;
use crate::backend::BufferLen;
use crate::error::{check_len, ensure, Result};
use crate::loss::diagnose::{explain_fault, LossReadout, Totals, TOTALS_LEN};
use crate::loss::L2Normalize;
use crate::loss::{
    ContrastiveInputs, ContrastiveShape, PatchSelfDistillation, PbsdInputs, QueryGradient,
    SupervisedContrastive, DEFAULT_BETA, DEFAULT_CROPS, DEFAULT_PBSD_WEIGHT, DEFAULT_TEMPERATURE,
};
use crate::nn::encoder::{Encoder, EncoderRecord};
use crate::nn::head::HeadRecord;
use crate::nn::pool::GlobalAvgPool;
use crate::nn::roi_align::RoiAlign;
use crate::nn::scratch::Scratch;
use crate::train::model::DsclModel;
use crate::train::optim::SgdConfig;

/// Which supervised contrastive loss stage 1 uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ContrastiveLoss {
    /// DSCL with the augmented view's weight 1 and the other positives' total weight `beta`.
    Dscl { beta: f64 },
    /// The SupCon baseline.
    SupCon,
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
        }
    }
}

/// Sizes of one step's inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepShape {
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
    /// `[B, 3, S, S]`, the second view of the same images.
    pub keys: &'a B::Buffer,
    /// `[C * B, 3, s, s]`, crop-major: crop c of image i is item `c * B + i`.
    pub crops: &'a B::Buffer,
    /// `C * B` rows `(i, x1, y1, x2, y2)` in query-image pixels, in the crops' order.
    pub crop_boxes: &'a B::Buffer,
    /// `[B]` labels.
    pub labels: &'a B::IndexBuffer,
}

/// The losses of one step (means over the batch).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepLosses {
    pub total: f64,
    pub contrastive: f64,
    pub pbsd: f64,
}

/// A planned stage-1 step: every record, loss and temporary, allocated once.
pub struct DsclStep<B: Backend> {
    config: DsclConfig,
    shape: StepShape,
    query: EncoderRecord<B>,
    key: EncoderRecord<B>,
    crop: Option<CropPath<B>>,
    scratch: Scratch<B>,
    contrastive: SupervisedContrastive<B>,
    d_queries: B::Buffer,
    /// DSCL's loss and gradient probe at [`CONTRASTIVE_SLOT`], PBSD's at [`PBSD_SLOT`]: what
    /// the step reads back.
    totals: B::Buffer,
}

/// Where each loss's totals start in [`DsclStep`]'s totals buffer.
const CONTRASTIVE_SLOT: usize = 0;
const PBSD_SLOT: usize = TOTALS_LEN;

/// What PBSD adds: the crops' pass, the teachers and the distillation loss.
struct CropPath<B: Backend> {
    students: EncoderRecord<B>,
    roi: RoiAlign,
    roi_out: B::Buffer,
    roi_pool: GlobalAvgPool,
    teacher_pooled: B::Buffer,
    teacher_head: HeadRecord<B>,
    teacher_norm: L2Normalize<B>,
    teachers: B::Buffer,
    loss: PatchSelfDistillation<B>,
    d_students: B::Buffer,
    frozen_teachers: bool,
}

impl<B: Backend> DsclStep<B> {
    pub fn new(
        backend: &B,
        encoder: &Encoder,
        config: DsclConfig,
        shape: StepShape,
    ) -> Result<Self> {
        ensure(shape.batch >= 1, "batch", "must be at least 1")?;
        ensure(
            config.pbsd_weight.is_finite() && config.pbsd_weight >= 0.0,
            "pbsd weight",
            "must be finite and non-negative",
        )?;
        ensure(
            (0.0..=1.0).contains(&config.key_momentum),
            "key momentum",
            "must lie in [0, 1]",
        )?;
        let b = shape.batch;
        let dim = encoder.embedding_dim();
        let loss_shape = ContrastiveShape {
            batch: b,
            dim,
            queue_len: config.queue_len,
            num_classes: shape.num_classes,
        };
        let contrastive = match config.loss {
            ContrastiveLoss::Dscl { beta } => {
                SupervisedContrastive::dscl(backend, loss_shape, config.temperature, beta)?
            }
            ContrastiveLoss::SupCon => {
                SupervisedContrastive::supcon(backend, loss_shape, config.temperature)?
            }
        };
        let query = encoder.plan(backend, b, shape.image_size, shape.image_size)?;
        let key = encoder.plan(backend, b, shape.image_size, shape.image_size)?;
        let mut needs = encoder.needs(backend, &query);
        let crop = if config.pbsd_weight > 0.0 {
            ensure(
                config.crops >= 1,
                "crops",
                "must be at least 1 when PBSD is on",
            )?;
            let n = config.crops * b;
            let students = encoder.plan(backend, n, shape.crop_size, shape.crop_size)?;
            needs = needs.max(encoder.needs(backend, &students));
            let (channels, h, w) = query.backbone.feature_dims();
            let roi = RoiAlign::new(b, channels, h, w, n, encoder.backbone.config.stride())?;
            Some(CropPath {
                students,
                roi_out: backend.alloc(roi.shape.output_len())?,
                roi,
                roi_pool: GlobalAvgPool {
                    batch: n,
                    channels,
                    spatial: 4,
                },
                teacher_pooled: backend.alloc(n * channels)?,
                teacher_head: encoder.head.plan(backend, n)?,
                teacher_norm: L2Normalize::new(backend, n, dim)?,
                teachers: backend.alloc(n * dim)?,
                loss: PatchSelfDistillation::new(
                    backend,
                    loss_shape,
                    config.crops,
                    config.temperature,
                )?,
                d_students: backend.alloc(n * dim)?,
                frozen_teachers: false,
            })
        } else {
            None
        };
        Ok(DsclStep {
            config,
            shape,
            query,
            key,
            crop,
            scratch: Scratch::new(backend, needs)?,
            contrastive,
            d_queries: backend.alloc(b * dim)?,
            totals: backend.alloc(2 * TOTALS_LEN)?,
        })
    }

    pub fn config(&self) -> &DsclConfig {
        &self.config
    }
    pub fn shape(&self) -> StepShape {
        self.shape
    }

    /// For gradient checks: keep the teachers of the last call instead of recomputing them,
    /// so the loss is a function of the parameters through the students and queries only
    /// (the teachers carry no gradient by design).
    pub fn freeze_teachers(&mut self, frozen: bool) {
        if let Some(c) = &mut self.crop {
            c.frozen_teachers = frozen;
        }
    }

    /// The query embeddings of the last step (`[B, d]`).
    pub fn queries(&self) -> &B::Buffer {
        &self.query.embeddings
    }
    /// The key embeddings of the last step (`[B, d]`).
    pub fn keys(&self) -> &B::Buffer {
        &self.key.embeddings
    }

    fn check_batch(&self, batch: &DsclBatch<'_, B>) -> Result<()> {
        let s = self.shape;
        let image = s.batch * 3 * s.image_size * s.image_size;
        check_len("query images", batch.queries.len(), image)?;
        check_len("key images", batch.keys.len(), image)?;
        check_len("labels", batch.labels.len(), s.batch)?;
        if self.crop.is_some() {
            let n = self.config.crops * s.batch;
            check_len(
                "crops",
                batch.crops.len(),
                n * 3 * s.crop_size * s.crop_size,
            )?;
            check_len("crop boxes", batch.crop_boxes.len(), n * 5)?;
        }
        Ok(())
    }

    /// One complete step: forward, loss, backward, SGD at rate `lr`, momentum update, enqueue.
    pub fn step(
        &mut self,
        backend: &B,
        encoder: &Encoder,
        model: &mut DsclModel<B>,
        batch: &DsclBatch<'_, B>,
        lr: f64,
    ) -> Result<StepLosses> {
        self.check_batch(batch)?;
        // MoCo order: the key encoder moves before it encodes this step's keys.
        model
            .key_params
            .ema_from(backend, self.config.key_momentum, &model.query.params)?;
        let losses = self.losses_and_gradients(backend, encoder, model, batch)?;
        model.query.sgd_step(backend, &self.config.sgd, lr)?;
        model.queue.enqueue(
            backend,
            &self.key.embeddings,
            batch.labels,
            self.shape.batch,
        )?;
        Ok(losses)
    }

    /// Steps 1-6: the losses, with `model.query.grads` set to their gradient (zeroed first;
    /// unspecified after an error). Parameters, key encoder and queue are left as they are;
    /// batch-norm running statistics advance as in any training-mode forward.
    pub fn forward_backward(
        &mut self,
        backend: &B,
        encoder: &Encoder,
        model: &mut DsclModel<B>,
        batch: &DsclBatch<'_, B>,
    ) -> Result<StepLosses> {
        self.check_batch(batch)?;
        self.losses_and_gradients(backend, encoder, model, batch)
    }

    /// [`Self::forward_backward`] on a batch already checked.
    fn losses_and_gradients(
        &mut self,
        backend: &B,
        encoder: &Encoder,
        model: &mut DsclModel<B>,
        batch: &DsclBatch<'_, B>,
    ) -> Result<StepLosses> {
        let params = &model.query.params;
        model.query.grads.zero(backend)?;

        encoder.forward(
            backend,
            params,
            &mut model.query_state,
            &mut self.query,
            batch.queries,
            &mut self.scratch,
        )?;
        if let Some(c) = &mut self.crop {
            if !c.frozen_teachers {
                c.roi.forward(
                    backend,
                    self.query.backbone.feature_map(),
                    batch.crop_boxes,
                    &mut c.roi_out,
                )?;
                c.roi_pool
                    .forward(backend, &c.roi_out, &mut c.teacher_pooled)?;
                encoder
                    .head
                    .forward(backend, params, &mut c.teacher_head, &c.teacher_pooled)?;
                c.teacher_norm
                    .forward(backend, &c.teacher_head.out, &mut c.teachers)?;
            }
            encoder.forward(
                backend,
                params,
                &mut model.query_state,
                &mut c.students,
                batch.crops,
                &mut self.scratch,
            )?;
        }
        encoder.forward(
            backend,
            &model.key_params,
            &mut model.key_state,
            &mut self.key,
            batch.keys,
            &mut self.scratch,
        )?;

        // Steps 5 and 6: each loss queued into the step's totals buffer (nothing is read back
        // yet) and backward, the crop path first.
        let queue = &model.queue;
        self.contrastive.record(
            backend,
            &ContrastiveInputs {
                queries: &self.query.embeddings,
                keys: &self.key.embeddings,
                queue: &queue.keys,
                labels: batch.labels,
                queue_labels: &queue.labels,
                queue_filled: queue.filled(),
            },
            QueryGradient::ThroughContrastSet,
            &mut self.d_queries,
            Totals::At(&mut self.totals, CONTRASTIVE_SLOT),
        )?;
        if let Some(c) = &mut self.crop {
            c.loss.record(
                backend,
                &PbsdInputs {
                    teachers: &c.teachers,
                    students: &c.students.embeddings,
                    keys: &self.key.embeddings,
                    queue: &queue.keys,
                    queue_filled: queue.filled(),
                },
                &mut c.d_students,
                Totals::At(&mut self.totals, PBSD_SLOT),
            )?;
            let len = c.d_students.len();
            backend.scale(&mut c.d_students, len, self.config.pbsd_weight)?;
            encoder.backward(
                backend,
                params,
                &mut model.query.grads,
                &mut c.students,
                batch.crops,
                &c.d_students,
                &mut self.scratch,
            )?;
        }
        encoder.backward(
            backend,
            params,
            &mut model.query.grads,
            &mut self.query,
            batch.queries,
            &self.d_queries,
            &mut self.scratch,
        )?;

        // The step's one read: both losses, both gradient probes and the fault slot.
        let mut values = [B::Elem::default(); 2 * TOTALS_LEN];
        let read = if self.crop.is_some() {
            2 * TOTALS_LEN
        } else {
            TOTALS_LEN
        };
        let fault = backend.download_with_fault(&self.totals, 0, &mut values[..read])?;
        let contrastive = LossReadout::at(&values, CONTRASTIVE_SLOT);
        let contrastive_inputs = ContrastiveInputs {
            queries: &self.query.embeddings,
            keys: &self.key.embeddings,
            queue: &queue.keys,
            labels: batch.labels,
            queue_labels: &queue.labels,
            queue_filled: queue.filled(),
        };
        let mut pbsd = 0.0;
        match &self.crop {
            None => {
                self.contrastive.finish(
                    backend,
                    &contrastive_inputs,
                    &self.d_queries,
                    contrastive,
                    fault,
                )?;
            }
            Some(c) => {
                // As if each loss had read its own values and the fault slot in turn: the
                // fault is traced to DSCL's inputs, then PBSD's; then DSCL's outputs are
                // checked, then PBSD's (its gradient as scaled by lambda, which keeps a
                // non-finite value non-finite).
                let pbsd_readout = LossReadout::at(&values, PBSD_SLOT);
                let pbsd_inputs = PbsdInputs {
                    teachers: &c.teachers,
                    students: &c.students.embeddings,
                    keys: &self.key.embeddings,
                    queue: &queue.keys,
                    queue_filled: queue.filled(),
                };
                let contrastive_named = self.contrastive.named_inputs(&contrastive_inputs);
                let pbsd_named = c.loss.named_inputs(&pbsd_inputs);
                explain_fault(
                    backend,
                    fault,
                    &[
                        self.contrastive.suspect(&contrastive_named, contrastive),
                        c.loss.suspect(&pbsd_named, pbsd_readout),
                    ],
                )?;
                self.contrastive
                    .check_outputs(backend, contrastive, &self.d_queries)?;
                c.loss.check_outputs(backend, pbsd_readout, &c.d_students)?;
                pbsd = pbsd_readout.loss;
            }
        }
        Ok(StepLosses {
            total: contrastive.loss + self.config.pbsd_weight * pbsd,
            contrastive: contrastive.loss,
            pbsd,
        })
    }
}
