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
//! R = 1 the step is the plain single-device step.
//!
//! R processes can run one group each ([`DsclStep::placed`], [`DsclStep::step_across`]): rank
//! r holds group r's images (its key images those of slot group r of the shuffle), and a
//! [`Collective`] stands where the groups shared memory: the keys and labels are all-gathered
//! after step 4 (each rank then holds the whole batch's keys in image order, and the queue
//! takes them all), the gradients are all-reduced after step 6, the losses summed over ranks,
//! and rank 0's running statistics (group 0's) broadcast after step 8. In exact arithmetic
//! this is the one-process step with R groups; in floating point the gradient sums group in
//! another order.
//!
//! [`DsclStep::forward_backward`] is steps 1-6 alone, for gradient checks.

mod checks;
mod config;
mod plan;

use heapless::Vec;

use crate::backend::Backend;
use crate::backend::BufferLen;
use crate::collective::{Collective, Solo};
use crate::error::Result;
use crate::loss::diagnose::{LossReadout, Totals, TOTALS_LEN};
use crate::loss::{ContrastiveInputs, PbsdInputs, QueryGradient};
use crate::nn::encoder::{Encoder, EncoderRecord};
use crate::nn::scratch::Scratch;
use crate::train::model::DsclModel;

pub use config::{
    ContrastiveLoss, CropNorm, DsclBatch, DsclConfig, StepLosses, StepShape, MAX_REPLICAS,
};
use plan::{Across, CropPath, GroupRows, ReplicaGroup};

/// A planned stage-1 step: every record, loss and temporary, allocated once.
pub struct DsclStep<B: Backend> {
    config: DsclConfig,
    shape: StepShape,
    query: EncoderRecord<B>,
    key: EncoderRecord<B>,
    /// With R > 1: the whole batch's keys in image order (the key encoder's output is in the
    /// shuffle's, and across processes holds only this rank's slots).
    keys_in_order: Option<B::Buffer>,
    /// With more than one process: what the ranks gather.
    across: Option<Across<B>>,
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

    /// The images this process holds: B, or B / R on each of R processes.
    pub fn local_batch(&self) -> usize {
        let world = self.across.as_ref().map_or(1, |a| a.placement.world);
        self.shape.batch / world
    }

    /// The query embeddings of the last step (`[B, d]`; this rank's `[B / R, d]` across
    /// processes).
    pub fn queries(&self) -> &B::Buffer {
        self.query.embeddings()
    }
    /// The key embeddings of the last step (`[B, d]`, in image order; the whole batch's, on
    /// every rank, across processes).
    pub fn keys(&self) -> &B::Buffer {
        self.keys_in_order.as_ref().unwrap_or(self.key.embeddings())
    }
    /// The keys this process's losses contrast its queries with: its own images' rows of
    /// [`Self::keys`].
    fn own_keys(&self) -> &B::Buffer {
        own_keys(&self.across, &self.keys_in_order, &self.key)
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
        self.step_across(backend, &Solo, encoder, model, batch, lr)
    }

    /// [`Self::step`] as one rank of the run `collective` connects (the placement this step was
    /// planned for): `batch` holds this rank's images, and the losses are the whole batch's.
    pub fn step_across(
        &mut self,
        backend: &B,
        collective: &impl Collective<B>,
        encoder: &Encoder,
        model: &mut DsclModel<B>,
        batch: &DsclBatch<'_, B>,
        lr: f64,
    ) -> Result<StepLosses> {
        self.check_batch(batch)?;
        self.check_collective(collective)?;
        // MoCo order: the key encoder moves before it encodes this step's keys.
        model
            .key_params
            .ema_from(backend, self.config.key_momentum, &model.query.params)?;
        let losses = self.losses_and_gradients(backend, collective, encoder, model, batch)?;
        model.query.sgd_step(backend, &self.config.sgd, lr)?;
        // Every group's keys in group order: the official concat_all_gather.
        let labels = self.across.as_ref().map_or(batch.labels, |a| &a.labels);
        model
            .queue
            .enqueue(backend, self.keys(), labels, self.shape.batch)?;
        // Group 0's running statistics are the run's (DDP's broadcast_buffers).
        collective.broadcast(backend, model.query_state.buffers_mut(), 0)?;
        collective.broadcast(backend, model.key_state.buffers_mut(), 0)?;
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
        self.forward_backward_across(backend, &Solo, encoder, model, batch)
    }

    /// [`Self::forward_backward`] as one rank of the run `collective` connects: the gradients
    /// and losses are the whole batch's.
    pub fn forward_backward_across(
        &mut self,
        backend: &B,
        collective: &impl Collective<B>,
        encoder: &Encoder,
        model: &mut DsclModel<B>,
        batch: &DsclBatch<'_, B>,
    ) -> Result<StepLosses> {
        self.check_batch(batch)?;
        self.check_collective(collective)?;
        self.losses_and_gradients(backend, collective, encoder, model, batch)
    }

    /// [`Self::forward_backward`] on a batch already checked.
    fn losses_and_gradients(
        &mut self,
        backend: &B,
        collective: &impl Collective<B>,
        encoder: &Encoder,
        model: &mut DsclModel<B>,
        batch: &DsclBatch<'_, B>,
    ) -> Result<StepLosses> {
        let params = &model.query.params;
        model.query.grads.zero(backend)?;
        let (big_b, replicas) = (self.shape.batch, self.config.replicas);
        // `local` of the batch's images are on this process, in its groups of `b`.
        let (local, b) = (self.local_batch(), big_b / replicas);
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
        // Step 4: keys (in the shuffle's order when there is one), gathered from every rank
        // across processes, restored to image order.
        encoder.forward(
            backend,
            &model.key_params,
            &mut model.key_state,
            &mut self.key,
            batch.keys,
            &mut self.scratch,
        )?;
        match (&mut self.across, &mut self.keys_in_order) {
            (Some(a), Some(in_order)) => {
                collective.all_gather(backend, self.key.embeddings(), local * dim, &mut a.slots)?;
                collective.all_gather_index(backend, batch.labels, local, &mut a.labels)?;
                restore_image_order(backend, &a.slots, batch.key_shuffle, in_order, big_b, dim)?;
                let first = a.placement.rank * local * dim;
                backend.copy(in_order, first, &mut a.own_keys, 0, local * dim)?;
            }
            (None, Some(in_order)) => {
                let slots = self.key.embeddings();
                restore_image_order(backend, slots, batch.key_shuffle, in_order, big_b, dim)?;
            }
            // One group: the keys are already in image order.
            (_, None) => {}
        }
        let keys = own_keys(&self.across, &self.keys_in_order, &self.key);

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
                        let (from, to) = (((set * local) + g * b) * dim, set * b * dim);
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
            // Each group's gradient carries its 1 / R, as PBSD's below (DDP's average).
            if replicas > 1 {
                backend.scale(d_queries, b * dim, inv_r)?;
            }
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
                backend.copy(
                    &rows.d_queries,
                    0,
                    &mut self.d_queries,
                    g * b * dim,
                    b * dim,
                )?;
                if let Some(c) = &mut self.crop {
                    for set in 0..crops {
                        let (from, to) = (set * b * dim, ((set * local) + g * b) * dim);
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
        // Every rank's gradients summed: each group's already carry its 1 / R.
        collective.all_reduce_sum(backend, model.query.grads.buffers_mut())?;

        // The step's one read: every group's losses and gradient probes and the fault slot.
        let mut values = [B::Elem::default(); 2 * TOTALS_LEN * MAX_REPLICAS];
        let last = self.groups.len() - 1;
        let read = if self.crop.is_some() {
            pbsd_slot(last) + TOTALS_LEN
        } else {
            contrastive_slot(last) + TOTALS_LEN
        };
        let fault = backend.download_with_fault(&self.totals, 0, &mut values[..read])?;
        self.check_readouts(backend, &model.queue, batch.labels, &values, fault)?;
        let mut means = [0.0; 2];
        for g in 0..self.groups.len() {
            means[0] += LossReadout::at(&values, contrastive_slot(g)).loss * inv_r;
            if self.crop.is_some() {
                means[1] += LossReadout::at(&values, pbsd_slot(g)).loss * inv_r;
            }
        }
        collective.all_reduce_sum_host(&mut means)?;
        let [contrastive, pbsd] = means;
        Ok(StepLosses {
            total: contrastive + self.config.pbsd_weight * pbsd,
            contrastive,
            pbsd,
        })
    }
}

/// Writes the keys `slots` (`[B, d]` in slot order) to `in_order` in image order: slot j holds
/// image `shuffle[j]`, or image j without a shuffle.
fn restore_image_order<B: Backend>(
    backend: &B,
    slots: &B::Buffer,
    shuffle: Option<&[u32]>,
    in_order: &mut B::Buffer,
    batch: usize,
    dim: usize,
) -> Result<()> {
    match shuffle {
        Some(order) => {
            for (slot, &image) in order.iter().enumerate() {
                let row = image as usize;
                backend.copy(slots, slot * dim, in_order, row * dim, dim)?;
            }
            Ok(())
        }
        None => backend.copy(slots, 0, in_order, 0, batch * dim),
    }
}

/// [`DsclStep::own_keys`] over the step's fields, so the step can borrow its others meanwhile.
fn own_keys<'a, B: Backend>(
    across: &'a Option<Across<B>>,
    keys_in_order: &'a Option<B::Buffer>,
    key: &'a EncoderRecord<B>,
) -> &'a B::Buffer {
    match (across, keys_in_order) {
        (Some(a), _) => &a.own_keys,
        (None, Some(in_order)) => in_order,
        (None, None) => key.embeddings(),
    }
}
