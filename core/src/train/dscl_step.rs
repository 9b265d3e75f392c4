//! The stage-1 training step of DSCL + PBSD (Xuan & Zhang 2024), in R replica groups:
//!
//! 1. query path: the full-size query images through the encoder -> queries q (with gradient);
//!    batch norm per replica group;
//! 2. teachers: the query's last feature map ROI-aligned (2x2) on each crop's box, averaged,
//!    through the same head, normalised -> t (no gradient);
//! 3. crop path: the C small crops through the same encoder -> students s; batch norm per crop
//!    set and replica group (the official `for small_im_q in small_im_qs` loop), or one joint
//!    set of statistics ([`CropNorm::Joint`], one replica only);
//! 4. momentum update of the key encoder, then the key images through it -> keys k; with
//!    several groups the batch brings them shuffled across the groups for the key encoder's
//!    batch norm, and the keys are restored to image order after (MoCo's shuffle BN);
//! 5. per replica group, loss = DSCL(q; k, queue) + lambda * PBSD(t -> s; k, queue) over the
//!    group's own queries, keys and crops plus the shared queue, queued without a read into one
//!    totals buffer; the gradients scaled by 1 / R, as DDP averages the replicas' gradients;
//! 6. backward through the crop path and the query path into one gradient set; then the step's
//!    one read: every group's totals and the fault slot together
//!    ([`Backend::download_with_fault`]), so the host waits for the device once per step, with
//!    the whole forward and backward queued ahead of it, and a fault or overflow (named as each
//!    loss names it alone) stops the step here, before any parameter changes;
//! 7. SGD; 8. every group's keys and labels enter the queue, in group order.
//!
//! The replica groups are the single-device form of the official run's data parallelism (2
//! GPUs under DistributedDataParallel without synchronised batch norm): the batch of B images
//! is R consecutive groups of B / R, each normalised by its own batch statistics in every pass,
//! each its own contrast set. The running statistics are the ones replica 0 leaves, as DDP
//! broadcasts rank 0's buffers to every replica at each forward: replica 0's query pass, its C
//! crop sets in order, and its shuffled key group move them; the other groups never do. With
//! R = 1 the step is the plain single-device step. The per-group work reads each group's rows
//! of the step's buffers, so R processes can later run one group each with a collective
//! (all-reduce of the gradients, all-gather of the keys) in place of the in-memory groups.
//!
//! [`DsclStep::forward_backward`] is steps 1-6 alone, for gradient checks.

mod plan;

use heapless::Vec;

use crate::backend::Backend;
use crate::backend::BufferLen;
use crate::error::{check_len, ensure, Fault, Result};
use crate::loss::diagnose::{explain_fault, LossReadout, Totals, TOTALS_LEN};
use crate::loss::{
    ContrastiveInputs, PbsdInputs, QueryGradient, DEFAULT_BETA, DEFAULT_CROPS, DEFAULT_PBSD_WEIGHT,
    DEFAULT_TEMPERATURE,
};
use crate::nn::encoder::{Encoder, EncoderRecord};
use crate::nn::scratch::Scratch;
use crate::train::model::DsclModel;
use crate::train::optim::SgdConfig;
use crate::train::queue::KeyQueue;

use plan::{CropPath, GroupRows, ReplicaGroup};

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

/// A planned stage-1 step: every record, loss and temporary, allocated once.
pub struct DsclStep<B: Backend> {
    config: DsclConfig,
    shape: StepShape,
    query: EncoderRecord<B>,
    key: EncoderRecord<B>,
    /// With R > 1: the keys in image order (the key encoder's output is in the shuffle's).
    keys_in_order: Option<B::Buffer>,
    crop: Option<CropPath<B>>,
    scratch: Scratch<B>,
    /// One per replica group: its losses and (R > 1) its rows of the step's buffers.
    groups: Vec<ReplicaGroup<B>, MAX_REPLICAS>,
    d_queries: B::Buffer,
    /// Group g's DSCL loss and gradient probe at [`contrastive_slot`]`(g)`, its PBSD's at
    /// [`pbsd_slot`]`(g)`: what the step reads back.
    totals: B::Buffer,
}

/// Where each loss's totals start in [`DsclStep`]'s totals buffer.
const fn contrastive_slot(group: usize) -> usize {
    2 * TOTALS_LEN * group
}
const fn pbsd_slot(group: usize) -> usize {
    2 * TOTALS_LEN * group + TOTALS_LEN
}

impl<B: Backend> DsclStep<B> {
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
        self.query.embeddings()
    }
    /// The key embeddings of the last step (`[B, d]`, in image order).
    pub fn keys(&self) -> &B::Buffer {
        self.keys_in_order.as_ref().unwrap_or(self.key.embeddings())
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
        if let Some(order) = batch.key_shuffle {
            // One group's statistics do not depend on the order, and its keys are never
            // restored: a shuffle there would pair queries with other images' keys.
            ensure(
                self.config.replicas > 1,
                "key shuffle",
                "needs more than one replica group",
            )?;
            check_len("key shuffle", order.len(), s.batch)?;
            // A permutation: every slot names a distinct image. Quadratic, allocation-free,
            // and small next to a step (B^2 / 2 comparisons).
            for (j, &image) in order.iter().enumerate() {
                ensure(
                    (image as usize) < s.batch && !order[..j].contains(&image),
                    "key shuffle",
                    "must be a permutation of the batch's images",
                )?;
            }
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
        // Every group's keys in group order: the official concat_all_gather.
        model
            .queue
            .enqueue(backend, self.keys(), batch.labels, self.shape.batch)?;
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
        let (big_b, replicas) = (self.shape.batch, self.config.replicas);
        let b = big_b / replicas;
        let dim = encoder.embedding_dim();

        // Step 1: queries.
        encoder.forward(
            backend,
            params,
            &mut model.query_state,
            &mut self.query,
            batch.queries,
            &mut self.scratch,
        )?;
        // Steps 2 and 3: teachers and students.
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
        // Step 4: keys (in the shuffle's order when there is one), restored to image order.
        encoder.forward(
            backend,
            &model.key_params,
            &mut model.key_state,
            &mut self.key,
            batch.keys,
            &mut self.scratch,
        )?;
        if let Some(in_order) = &mut self.keys_in_order {
            match batch.key_shuffle {
                Some(order) => {
                    for (slot, &image) in order.iter().enumerate() {
                        let row = image as usize;
                        backend.copy(
                            self.key.embeddings(),
                            slot * dim,
                            in_order,
                            row * dim,
                            dim,
                        )?;
                    }
                }
                None => backend.copy(self.key.embeddings(), 0, in_order, 0, big_b * dim)?,
            }
        }
        let keys = self.keys_in_order.as_ref().unwrap_or(self.key.embeddings());

        // Step 5: each group's losses queued into the step's totals buffer (nothing is read
        // back yet), its gradients scaled by 1 / R into the step's gradient buffers.
        let queue = &model.queue;
        let crops = self.config.crops;
        let inv_r = 1.0 / replicas as f64;
        for (g, group) in self.groups.iter_mut().enumerate() {
            if let Some(rows) = &mut group.rows {
                backend.copy(
                    self.query.embeddings(),
                    g * b * dim,
                    &mut rows.queries,
                    0,
                    b * dim,
                )?;
                backend.copy(keys, g * b * dim, &mut rows.keys, 0, b * dim)?;
                backend.copy_index(batch.labels, g * b, &mut rows.labels, 0, b)?;
                if let Some(c) = &self.crop {
                    for set in 0..crops {
                        let (from, to) = (((set * big_b) + g * b) * dim, set * b * dim);
                        backend.copy(&c.teachers, from, &mut rows.teachers, to, b * dim)?;
                        backend.copy(
                            c.students.embeddings(),
                            from,
                            &mut rows.students,
                            to,
                            b * dim,
                        )?;
                    }
                }
            }
            let (queries, group_keys, labels, d_queries, crop_io) =
                match (&mut group.rows, &mut self.crop) {
                    (Some(r), crop) => {
                        let GroupRows {
                            queries,
                            keys: group_keys,
                            labels,
                            d_queries,
                            teachers,
                            students,
                            d_students,
                        } = r;
                        let crop_io = crop
                            .is_some()
                            .then_some((&*teachers, &*students, d_students));
                        (&*queries, &*group_keys, &*labels, d_queries, crop_io)
                    }
                    (None, crop) => (
                        self.query.embeddings(),
                        keys,
                        batch.labels,
                        &mut self.d_queries,
                        crop.as_mut()
                            .map(|c| (&c.teachers, c.students.embeddings(), &mut c.d_students)),
                    ),
                };
            group.contrastive.record(
                backend,
                &ContrastiveInputs {
                    queries,
                    keys: group_keys,
                    queue: &queue.keys,
                    labels,
                    queue_labels: &queue.labels,
                    queue_filled: queue.filled(),
                },
                QueryGradient::ThroughContrastSet,
                d_queries,
                Totals::At(&mut self.totals, contrastive_slot(g)),
            )?;
            if let (Some(pbsd), Some((teachers, students, d_students))) = (&mut group.pbsd, crop_io)
            {
                pbsd.record(
                    backend,
                    &PbsdInputs {
                        teachers,
                        students,
                        keys: group_keys,
                        queue: &queue.keys,
                        queue_filled: queue.filled(),
                    },
                    d_students,
                    Totals::At(&mut self.totals, pbsd_slot(g)),
                )?;
                let len = d_students.len();
                backend.scale(d_students, len, self.config.pbsd_weight * inv_r)?;
            }
            if let Some(rows) = &mut group.rows {
                backend.scale(&mut rows.d_queries, b * dim, inv_r)?;
                backend.copy(
                    &rows.d_queries,
                    0,
                    &mut self.d_queries,
                    g * b * dim,
                    b * dim,
                )?;
                if let Some(c) = &mut self.crop {
                    for set in 0..crops {
                        let (from, to) = (set * b * dim, ((set * big_b) + g * b) * dim);
                        backend.copy(&rows.d_students, from, &mut c.d_students, to, b * dim)?;
                    }
                }
            }
        }

        // Step 6: backward, the crop path first.
        if let Some(c) = &mut self.crop {
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

        // The step's one read: every group's losses and gradient probes and the fault slot.
        let mut values = [B::Elem::default(); 2 * TOTALS_LEN * MAX_REPLICAS];
        let read = if self.crop.is_some() {
            pbsd_slot(replicas - 1) + TOTALS_LEN
        } else {
            contrastive_slot(replicas - 1) + TOTALS_LEN
        };
        let fault = backend.download_with_fault(&self.totals, 0, &mut values[..read])?;
        self.check_readouts(backend, &model.queue, batch.labels, &values, fault)?;
        let (mut contrastive, mut pbsd) = (0.0, 0.0);
        for g in 0..replicas {
            contrastive += LossReadout::at(&values, contrastive_slot(g)).loss * inv_r;
            if self.crop.is_some() {
                pbsd += LossReadout::at(&values, pbsd_slot(g)).loss * inv_r;
            }
        }
        Ok(StepLosses {
            total: contrastive + self.config.pbsd_weight * pbsd,
            contrastive,
            pbsd,
        })
    }

    /// Turns a fault or a non-finite loss or gradient into the error each loss names alone: the
    /// fault is traced to DSCL's inputs, then PBSD's, over the whole batch (a row index is the
    /// image's, whichever group it fell in); then every group's DSCL outputs are checked, then
    /// every group's PBSD outputs (its gradient as scaled by lambda / R, which keeps a
    /// non-finite value non-finite).
    fn check_readouts(
        &self,
        backend: &B,
        queue: &KeyQueue<B>,
        labels: &B::IndexBuffer,
        values: &[B::Elem],
        fault: Option<Fault>,
    ) -> Result<()> {
        let big_b = self.shape.batch;
        let keys = self.keys();
        let readouts = |slot: fn(usize) -> usize| {
            (0..self.groups.len()).map(move |g| LossReadout::at(values, slot(g)))
        };
        // The readout a fault is blamed on when no input is non-finite: the first group's
        // that overflowed, else group 0's.
        let blamed = |slot: fn(usize) -> usize| {
            readouts(slot)
                .find(|r| !(r.loss.is_finite() && r.gradient_probe.is_finite()))
                .unwrap_or(LossReadout::at(values, slot(0)))
        };
        let first = &self.groups[0];
        let contrastive_named = first.contrastive.named_inputs(
            &ContrastiveInputs {
                queries: self.query.embeddings(),
                keys,
                queue: &queue.keys,
                labels,
                queue_labels: &queue.labels,
                queue_filled: queue.filled(),
            },
            big_b,
        );
        let contrastive_suspect = first
            .contrastive
            .suspect(&contrastive_named, blamed(contrastive_slot));
        match (&first.pbsd, &self.crop) {
            (Some(pbsd), Some(c)) => {
                let pbsd_named = pbsd.named_inputs(
                    &PbsdInputs {
                        teachers: &c.teachers,
                        students: c.students.embeddings(),
                        keys,
                        queue: &queue.keys,
                        queue_filled: queue.filled(),
                    },
                    big_b,
                );
                let pbsd_suspect = pbsd.suspect(&pbsd_named, blamed(pbsd_slot));
                explain_fault(backend, fault, &[contrastive_suspect, pbsd_suspect])?;
            }
            _ => explain_fault(backend, fault, &[contrastive_suspect])?,
        }
        for (group, readout) in self.groups.iter().zip(readouts(contrastive_slot)) {
            let gradient = group
                .rows
                .as_ref()
                .map_or(&self.d_queries, |r| &r.d_queries);
            group
                .contrastive
                .check_outputs(backend, readout, gradient)?;
        }
        if let Some(c) = &self.crop {
            for (group, readout) in self.groups.iter().zip(readouts(pbsd_slot)) {
                let gradient = group.rows.as_ref().map_or(&c.d_students, |r| &r.d_students);
                if let Some(pbsd) = &group.pbsd {
                    pbsd.check_outputs(backend, readout, gradient)?;
                }
            }
        }
        Ok(())
    }
}
