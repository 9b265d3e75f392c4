//! PBSD: patch-based self distillation. For each of C crops, the teacher's similarity profile
//! to [its own key; the queue] (constant) is the soft target of the student's profile.
//!
//! Per crop c and anchor i: `a = [t_ci . k_i, t_ci . U] / tau`, `b = [s_ci . k_i, s_ci . U] /
//! tau`, `L_ci = -sum_j softmax(a)_j log softmax(b)_j`; `L = (1/C) sum_c mean_i L_ci`.
//! Unfilled queue entries are masked out of both softmaxes. Only the students get gradient.

use super::diagnose::{
    check_outputs, explain_fault, read_own_totals, write_totals, LabelSource, LossReadout,
    NamedRows, Suspect, Totals, TOTALS_LEN,
};
use super::{check_temperature, rows_per_block, ContrastiveShape, DEFAULT_MAX_BLOCK_ELEMS};
use crate::backend::{Backend, BufferLen};
use crate::desc::{GemmDesc, MatrixLayout, RowsDesc};
use crate::error::{check_len, ensure, Result};

/// The inputs of one step; every row L2-normalised.
pub struct PbsdInputs<'a, B: Backend> {
    /// C x B x d teacher embeddings (ROI-aligned from the query's feature map; constant).
    pub teachers: &'a B::Buffer,
    /// C x B x d student embeddings (the small crops through the encoder; with gradient).
    pub students: &'a B::Buffer,
    /// B x d keys: column 0 of anchor i's profile is its own key k_i.
    pub keys: &'a B::Buffer,
    /// K x d queue; rows `0..queue_filled` take part.
    pub queue: &'a B::Buffer,
    pub queue_filled: usize,
}

/// PBSD over a fixed shape and crop count: allocated once, run any number of times.
pub struct PatchSelfDistillation<B: Backend> {
    shape: ContrastiveShape,
    crops: usize,
    temperature: f64,
    block_rows: usize,
    /// Teacher logits of one block, then (once the targets are taken) the student logits,
    /// then their gradient: `block_rows x (1 + K)`.
    logits: B::Buffer,
    /// softmax of the teacher logits: the soft targets.
    targets: B::Buffer,
    block_loss: B::Buffer,
    /// Loss of each (crop, anchor), C x B.
    per_anchor: B::Buffer,
    /// The mean loss and the gradient's overflow probe.
    totals: B::Buffer,
}

impl<B: Backend> PatchSelfDistillation<B> {
    pub fn new(
        backend: &B,
        shape: ContrastiveShape,
        crops: usize,
        temperature: f64,
    ) -> Result<Self> {
        Self::with_max_block_elems(backend, shape, crops, temperature, DEFAULT_MAX_BLOCK_ELEMS)
    }

    /// As [`Self::new`], with `max_block_elems` bounding each of the two logits blocks.
    pub fn with_max_block_elems(
        backend: &B,
        shape: ContrastiveShape,
        crops: usize,
        temperature: f64,
        max_block_elems: usize,
    ) -> Result<Self> {
        shape.check()?;
        check_temperature(temperature)?;
        ensure(crops >= 1, "crops", "must be at least 1")?;
        ensure(
            crops
                .checked_mul(shape.batch)
                .and_then(|n| n.checked_mul(shape.dim))
                .is_some(),
            "crops",
            "C x B x d overflows the address space",
        )?;
        let cols = 1 + shape.queue_len;
        let block_rows = rows_per_block(shape.batch, cols, max_block_elems);
        Ok(PatchSelfDistillation {
            shape,
            crops,
            temperature,
            block_rows,
            logits: backend.alloc(block_rows * cols)?,
            targets: backend.alloc(block_rows * cols)?,
            block_loss: backend.alloc(block_rows)?,
            per_anchor: backend.alloc(crops * shape.batch)?,
            totals: backend.alloc(TOTALS_LEN)?,
        })
    }

    pub fn crops(&self) -> usize {
        self.crops
    }

    /// The loss of each (crop, anchor) from the last call: C x B values on the device.
    pub fn per_anchor_loss(&self) -> &B::Buffer {
        &self.per_anchor
    }

    /// `logits[r] = [e_(row0+r) . k_(row0+r), e_(row0+r) . U] / tau` for the crop whose
    /// embeddings start at element `emb_offset` of `embeddings`.
    fn profile_logits(
        backend: &B,
        logits: &mut B::Buffer,
        embeddings: &B::Buffer,
        emb_offset: usize,
        inputs: &PbsdInputs<'_, B>,
        (row0, rows, d, cols, inv_tau): (usize, usize, usize, usize, f64),
    ) -> Result<()> {
        // Column 0: one dot product per row, as a batch of 1 x d by d x 1 products.
        let own_key = GemmDesc {
            batch: rows,
            a: MatrixLayout::strided(emb_offset, d, d),
            b: MatrixLayout::strided(row0 * d, d, d),
            c: MatrixLayout::strided(0, 1, cols),
            ..GemmDesc::new(1, 1, d, false, true).alpha(inv_tau)
        };
        backend.gemm(&own_key, embeddings, inputs.keys, logits)?;
        if inputs.queue_filled > 0 {
            let queue = GemmDesc {
                a: MatrixLayout::at(emb_offset, d),
                b: MatrixLayout::dense(d),
                c: MatrixLayout::at(1, cols),
                ..GemmDesc::new(rows, inputs.queue_filled, d, false, true).alpha(inv_tau)
            };
            backend.gemm(&queue, embeddings, inputs.queue, logits)?;
        }
        Ok(())
    }

    /// Computes the PBSD loss (mean over crops and anchors) and writes `dLoss/dstudents`
    /// (C x B x d, overwritten). Returns the loss (read back with a probe of the gradient and
    /// the fault slot, in one read). A loss or gradient that overflows is `NonFinite`.
    pub fn forward_backward(
        &mut self,
        backend: &B,
        inputs: &PbsdInputs<'_, B>,
        grad_students: &mut B::Buffer,
    ) -> Result<f64> {
        self.record(backend, inputs, grad_students, Totals::Own)?;
        let (readout, fault) = read_own_totals(backend, &self.totals)?;
        let named = self.named_inputs(inputs, self.shape.batch);
        explain_fault(backend, fault, &[self.suspect(&named, readout)])?;
        self.check_outputs(backend, readout, grad_students)?;
        Ok(readout.loss)
    }

    /// The first half of [`Self::forward_backward`]: queues every kernel, the mean loss and the
    /// gradient probe into `totals` included, and reads nothing back. The values read back
    /// then go to [`Self::suspect`] and [`Self::check_outputs`].
    pub(crate) fn record(
        &mut self,
        backend: &B,
        inputs: &PbsdInputs<'_, B>,
        grad_students: &mut B::Buffer,
        totals: Totals<'_, B>,
    ) -> Result<()> {
        let s = self.shape;
        let (b, d, c_count, filled) = (s.batch, s.dim, self.crops, inputs.queue_filled);
        let crop_len = c_count * b * d;
        check_len("teachers", inputs.teachers.len(), crop_len)?;
        check_len("students", inputs.students.len(), crop_len)?;
        check_len("keys", inputs.keys.len(), b * d)?;
        ensure(
            filled <= s.queue_len,
            "queue_filled",
            "exceeds the queue length",
        )?;
        check_len("queue", inputs.queue.len(), filled * d)?;
        check_len("student gradient", grad_students.len(), crop_len)?;

        let cols = 1 + s.queue_len;
        let inv_tau = 1.0 / self.temperature;
        let grad_scale = 1.0 / (c_count * b) as f64;
        backend.fill(grad_students, 0, crop_len, 0.0)?;

        for crop in 0..c_count {
            let mut row0 = 0;
            while row0 < b {
                let rows = self.block_rows.min(b - row0);
                let emb_offset = (crop * b + row0) * d;
                let geometry = (row0, rows, d, cols, inv_tau);
                let rows_desc = RowsDesc {
                    rows,
                    cols,
                    valid_cols: 1 + filled,
                };

                Self::profile_logits(
                    backend,
                    &mut self.logits,
                    inputs.teachers,
                    emb_offset,
                    inputs,
                    geometry,
                )?;
                backend.row_softmax(&rows_desc, &self.logits, &mut self.targets)?;
                Self::profile_logits(
                    backend,
                    &mut self.logits,
                    inputs.students,
                    emb_offset,
                    inputs,
                    geometry,
                )?;
                backend.soft_cross_entropy(
                    &rows_desc,
                    grad_scale,
                    &mut self.logits,
                    &self.targets,
                    &mut self.block_loss,
                )?;
                backend.copy(
                    &self.block_loss,
                    0,
                    &mut self.per_anchor,
                    crop * b + row0,
                    rows,
                )?;

                // d students += G[:, 0] k_i / tau (row by row) + G[:, 1..] U / tau.
                let own_key = GemmDesc {
                    batch: rows,
                    a: MatrixLayout::strided(0, 1, cols),
                    b: MatrixLayout::strided(row0 * d, d, d),
                    c: MatrixLayout::strided(emb_offset, d, d),
                    ..GemmDesc::new(1, d, 1, false, false)
                        .alpha(inv_tau)
                        .beta(1.0)
                };
                backend.gemm(&own_key, &self.logits, inputs.keys, grad_students)?;
                if filled > 0 {
                    let queue = GemmDesc {
                        a: MatrixLayout::at(1, cols),
                        c: MatrixLayout::at(emb_offset, d),
                        ..GemmDesc::new(rows, d, filled, false, false)
                            .alpha(inv_tau)
                            .beta(1.0)
                    };
                    backend.gemm(&queue, &self.logits, inputs.queue, grad_students)?;
                }
                row0 += rows;
            }
        }

        write_totals(
            backend,
            &self.per_anchor,
            c_count * b,
            grad_scale,
            grad_students,
            crop_len,
            totals,
            &mut self.totals,
        )
    }

    /// The inputs a non-finite fault is traced to, in order, for `batch` images (this loss's
    /// batch, or a whole step's when its replica groups are traced together).
    pub(crate) fn named_inputs<'a>(
        &self,
        inputs: &PbsdInputs<'a, B>,
        batch: usize,
    ) -> [NamedRows<'a, B>; 4] {
        let (rows, b, d) = (self.crops * batch, batch, self.shape.dim);
        [
            NamedRows::new("teachers", inputs.teachers, rows, d),
            NamedRows::new("students", inputs.students, rows, d),
            NamedRows::new("keys", inputs.keys, b, d),
            NamedRows::new("queue", inputs.queue, inputs.queue_filled, d),
        ]
    }

    /// This loss as a suspect of a fault (see [`explain_fault`]).
    pub(crate) fn suspect<'a>(
        &self,
        named: &'a [NamedRows<'a, B>],
        readout: LossReadout,
    ) -> Suspect<'a, B> {
        Suspect {
            what: "pbsd loss",
            inputs: named,
            num_classes: self.shape.num_classes,
            labels: LabelSource::Rows("pbsd"),
            readout,
        }
    }

    /// A loss or gradient that overflowed with no fault recorded is `NonFinite` (see
    /// [`check_outputs`]); call after the fault is explained.
    pub(crate) fn check_outputs(
        &self,
        backend: &B,
        readout: LossReadout,
        grad_students: &B::Buffer,
    ) -> Result<()> {
        let rows = self.crops * self.shape.batch;
        let per_anchor = NamedRows::new("pbsd loss", &self.per_anchor, rows, 1);
        let gradient = NamedRows::new("student gradient", grad_students, rows, self.shape.dim);
        check_outputs(backend, readout, &per_anchor, &gradient)
    }
}
