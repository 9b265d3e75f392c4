//! What a stage-1 step checks: its batch and its collective before anything runs, and after
//! the step's one read, the values read back (a fault or overflow named as each loss names it
//! alone).

use crate::backend::{Backend, BufferLen};
use crate::collective::{Collective, Placement};
use crate::error::{check_len, ensure, Fault, Result};
use crate::loss::diagnose::{explain_fault, LossReadout};
use crate::loss::{ContrastiveInputs, PbsdInputs};
use crate::train::queue::KeyQueue;

use super::{contrastive_slot, pbsd_slot, DsclBatch, DsclStep};

impl<B: Backend> DsclStep<B> {
    pub(super) fn check_batch(&self, batch: &DsclBatch<'_, B>) -> Result<()> {
        let s = self.shape;
        let rows = self.local_batch();
        let image = rows * 3 * s.image_size * s.image_size;
        check_len("query images", batch.queries.len(), image)?;
        check_len("key images", batch.keys.len(), image)?;
        check_len("labels", batch.labels.len(), rows)?;
        if self.crop.is_some() {
            let n = self.config.crops * rows;
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

    pub(super) fn check_collective(&self, collective: &impl Collective<B>) -> Result<()> {
        let planned = self
            .across
            .as_ref()
            .map_or(Placement::SOLO, |a| a.placement);
        ensure(
            Collective::<B>::placement(collective) == planned,
            "collective",
            "connects another placement than the step was planned for",
        )
    }

    /// Turns a fault or a non-finite loss or gradient into the error each loss names alone: the
    /// fault is traced to DSCL's inputs, then PBSD's, over the whole batch (a row index is the
    /// image's, whichever group it fell in); then every group's DSCL outputs are checked, then
    /// every group's PBSD outputs (its gradient as scaled by lambda / R, which keeps a
    /// non-finite value non-finite).
    pub(super) fn check_readouts(
        &self,
        backend: &B,
        queue: &KeyQueue<B>,
        labels: &B::IndexBuffer,
        values: &[B::Elem],
        fault: Option<Fault>,
    ) -> Result<()> {
        let rows = self.local_batch();
        let keys = self.own_keys();
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
            rows,
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
                    rows,
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
