//! SupCon and DSCL: the supervised contrastive loss with self excluded, the gradient flowing
//! through the other queries of the batch, and unfilled queue entries masked.
//!
//! The B x N logits are never all held at once: anchors are processed in blocks of rows; each
//! block's logits are computed by GEMM, turned into the gradient in place by the fused
//! `contrastive_rows` kernel, and consumed by two more GEMMs before the next block.

use super::diagnose::{
    check_outputs, explain_fault, read_own_totals, write_totals, LabelSource, LossReadout,
    NamedRows, Suspect, Totals, TOTALS_LEN,
};
use super::{check_temperature, rows_per_block, ContrastiveShape, DEFAULT_MAX_BLOCK_ELEMS};
use crate::backend::{Backend, BufferLen};
use crate::desc::{ContrastiveRowsDesc, GemmDesc, MatrixLayout, PositiveWeighting};
use crate::error::{check_len, ensure, Result};

/// The inputs of one step. Every feature row must already be L2-normalised (see
/// [`super::L2Normalize`]); the loss itself does not normalise.
pub struct ContrastiveInputs<'a, B: Backend> {
    /// Q, B x d, the anchors (with gradient).
    pub queries: &'a B::Buffer,
    /// Kk, B x d, the momentum encoder's keys of the same images (constant).
    pub keys: &'a B::Buffer,
    /// U, K x d, the queue (constant). Only rows `0..queue_filled` take part.
    pub queue: &'a B::Buffer,
    /// y, B labels of the queries (and keys).
    pub labels: &'a B::IndexBuffer,
    /// K labels of the queue.
    pub queue_labels: &'a B::IndexBuffer,
    /// Queue rows holding real keys; the rest are masked out of numerator and denominator.
    pub queue_filled: usize,
}

/// Which uses of Q the gradient follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryGradient {
    /// Q is both the anchors and rows 0..B of the contrast set (the training case): the
    /// gradient reaches `q_j` also through the other anchors' logits `s_ij`.
    ThroughContrastSet,
    /// The contrast set's copy of Q is treated as constant (PyTorch `q.detach()` in the set).
    AnchorOnly,
}

/// SupCon or DSCL over a fixed shape: allocated once, run any number of times.
pub struct SupervisedContrastive<B: Backend> {
    shape: ContrastiveShape,
    weighting: PositiveWeighting,
    temperature: f64,
    block_rows: usize,
    /// One block of logits, `block_rows x N`; becomes the block's gradient in place.
    logits: B::Buffer,
    /// Labels of the contrast set: [y; y; queue labels].
    contrast_labels: B::IndexBuffer,
    per_anchor: B::Buffer,
    /// The mean loss and the gradient's overflow probe.
    totals: B::Buffer,
}

impl<B: Backend> SupervisedContrastive<B> {
    /// DSCL with weight `beta` on the other positives (paper: 8, so alpha = 1/9).
    pub fn dscl(backend: &B, shape: ContrastiveShape, temperature: f64, beta: f64) -> Result<Self> {
        ensure(
            beta.is_finite() && beta >= 0.0,
            "beta",
            "must be finite and non-negative",
        )?;
        Self::new(
            backend,
            shape,
            PositiveWeighting::Decoupled { beta },
            temperature,
            DEFAULT_MAX_BLOCK_ELEMS,
        )
    }

    /// SupCon (every positive weighted equally).
    pub fn supcon(backend: &B, shape: ContrastiveShape, temperature: f64) -> Result<Self> {
        Self::new(
            backend,
            shape,
            PositiveWeighting::SupCon,
            temperature,
            DEFAULT_MAX_BLOCK_ELEMS,
        )
    }

    /// Full control: `max_block_elems` bounds the logits held at once (at least one row).
    pub fn new(
        backend: &B,
        shape: ContrastiveShape,
        weighting: PositiveWeighting,
        temperature: f64,
        max_block_elems: usize,
    ) -> Result<Self> {
        shape.check()?;
        check_temperature(temperature)?;
        if let PositiveWeighting::Decoupled { beta } = weighting {
            ensure(
                beta.is_finite() && beta >= 0.0,
                "beta",
                "must be finite and non-negative",
            )?;
        }
        let cols = shape.contrast_len();
        let block_rows = rows_per_block(shape.batch, cols, max_block_elems);
        Ok(SupervisedContrastive {
            shape,
            weighting,
            temperature,
            block_rows,
            logits: backend.alloc(block_rows * cols)?,
            contrast_labels: backend.alloc_index(cols)?,
            per_anchor: backend.alloc(shape.batch)?,
            totals: backend.alloc(TOTALS_LEN)?,
        })
    }

    pub fn shape(&self) -> ContrastiveShape {
        self.shape
    }

    /// Anchor rows processed per block.
    pub fn block_rows(&self) -> usize {
        self.block_rows
    }

    /// The loss of each anchor from the last call (B values on the device).
    pub fn per_anchor_loss(&self) -> &B::Buffer {
        &self.per_anchor
    }

    fn check_inputs(&self, inputs: &ContrastiveInputs<'_, B>, grad_len: usize) -> Result<()> {
        let s = self.shape;
        check_len("queries", inputs.queries.len(), s.batch * s.dim)?;
        check_len("keys", inputs.keys.len(), s.batch * s.dim)?;
        check_len("labels", inputs.labels.len(), s.batch)?;
        ensure(
            inputs.queue_filled <= s.queue_len,
            "queue_filled",
            "exceeds the queue length",
        )?;
        check_len("queue", inputs.queue.len(), inputs.queue_filled * s.dim)?;
        check_len(
            "queue_labels",
            inputs.queue_labels.len(),
            inputs.queue_filled,
        )?;
        check_len("query gradient", grad_len, s.batch * s.dim)
    }

    /// Computes the mean loss over the B anchors and writes `dLoss/dQ` into `grad_queries`
    /// (B x d, overwritten). Returns the loss; the only value read back from the device (with
    /// a probe of the gradient and the fault slot, in one read). A loss or gradient that
    /// overflows is `NonFinite`.
    pub fn forward_backward(
        &mut self,
        backend: &B,
        inputs: &ContrastiveInputs<'_, B>,
        mode: QueryGradient,
        grad_queries: &mut B::Buffer,
    ) -> Result<f64> {
        self.record(backend, inputs, mode, grad_queries, Totals::Own)?;
        let (readout, fault) = read_own_totals(backend, &self.totals)?;
        let named = self.named_inputs(inputs, self.shape.batch);
        explain_fault(backend, fault, &[self.suspect(&named, readout)])?;
        self.check_outputs(backend, readout, grad_queries)?;
        Ok(readout.loss)
    }

    /// The first half of [`Self::forward_backward`]: queues every kernel, the mean loss and the
    /// gradient probe into `totals` included, and reads nothing back. The values read back
    /// then go to [`Self::suspect`] and [`Self::check_outputs`], with
    /// the inputs and the gradient unchanged in between.
    pub(crate) fn record(
        &mut self,
        backend: &B,
        inputs: &ContrastiveInputs<'_, B>,
        mode: QueryGradient,
        grad_queries: &mut B::Buffer,
        totals: Totals<'_, B>,
    ) -> Result<()> {
        self.check_inputs(inputs, grad_queries.len())?;
        let s = self.shape;
        let (b, d, filled) = (s.batch, s.dim, inputs.queue_filled);
        let cols = s.contrast_len();
        let inv_tau = 1.0 / self.temperature;

        backend.copy_index(inputs.labels, 0, &mut self.contrast_labels, 0, b)?;
        backend.copy_index(inputs.labels, 0, &mut self.contrast_labels, b, b)?;
        if filled > 0 {
            backend.copy_index(
                inputs.queue_labels,
                0,
                &mut self.contrast_labels,
                2 * b,
                filled,
            )?;
        }
        backend.fill(grad_queries, 0, b * d, 0.0)?;

        // The contrast set as three column ranges of each logits row: (rows, buffer, column).
        let contrast: [(usize, &B::Buffer, usize); 3] = [
            (b, inputs.queries, 0),
            (b, inputs.keys, b),
            (filled, inputs.queue, 2 * b),
        ];

        let mut row0 = 0;
        while row0 < b {
            let rows = self.block_rows.min(b - row0);
            let anchors = MatrixLayout::at(row0 * d, d);

            // logits[r][col + j] = q_(row0+r) . z_j / tau
            for &(n, z, col) in contrast.iter().filter(|c| c.0 > 0) {
                let desc = GemmDesc {
                    a: anchors,
                    b: MatrixLayout::dense(d),
                    c: MatrixLayout::at(col, cols),
                    ..GemmDesc::new(rows, n, d, false, true).alpha(inv_tau)
                };
                backend.gemm(&desc, inputs.queries, z, &mut self.logits)?;
            }

            let rows_desc = ContrastiveRowsDesc {
                rows,
                row_offset: row0,
                batch: b,
                cols,
                valid_cols: 2 * b + filled,
                num_classes: s.num_classes,
                weighting: self.weighting,
                grad_scale: 1.0 / b as f64,
            };
            backend.contrastive_rows(
                &rows_desc,
                &mut self.logits,
                &self.contrast_labels,
                &mut self.per_anchor,
            )?;

            // dQ[anchor rows] += G z / tau, over every column range of the contrast set.
            for &(n, z, col) in contrast.iter().filter(|c| c.0 > 0) {
                let desc = GemmDesc {
                    a: MatrixLayout::at(col, cols),
                    c: MatrixLayout::at(row0 * d, d),
                    ..GemmDesc::new(rows, d, n, false, false)
                        .alpha(inv_tau)
                        .beta(1.0)
                };
                backend.gemm(&desc, &self.logits, z, grad_queries)?;
            }
            // dQ[all rows] += G[:, 0..B]^T q_anchors / tau: q_j's role in the contrast set.
            if mode == QueryGradient::ThroughContrastSet {
                let desc = GemmDesc {
                    a: MatrixLayout::dense(cols),
                    b: anchors,
                    ..GemmDesc::new(b, d, rows, true, false)
                        .alpha(inv_tau)
                        .beta(1.0)
                };
                backend.gemm(&desc, &self.logits, inputs.queries, grad_queries)?;
            }
            row0 += rows;
        }

        write_totals(
            backend,
            &self.per_anchor,
            b,
            1.0 / b as f64,
            grad_queries,
            b * d,
            totals,
            &mut self.totals,
        )
    }

    /// The inputs a non-finite fault is traced to, in order, holding `batch` queries and keys
    /// (this loss's batch, or a whole step's when its replica groups are traced together).
    pub(crate) fn named_inputs<'a>(
        &self,
        inputs: &ContrastiveInputs<'a, B>,
        batch: usize,
    ) -> [NamedRows<'a, B>; 3] {
        let (b, d) = (batch, self.shape.dim);
        [
            NamedRows::new("queries", inputs.queries, b, d),
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
            what: self.loss_name(),
            inputs: named,
            num_classes: self.shape.num_classes,
            labels: LabelSource::ContrastSet {
                batch: self.shape.batch,
            },
            readout,
        }
    }

    /// A loss or gradient that overflowed with no fault recorded is `NonFinite` (see
    /// [`check_outputs`]); call after the fault is explained.
    pub(crate) fn check_outputs(
        &self,
        backend: &B,
        readout: LossReadout,
        grad_queries: &B::Buffer,
    ) -> Result<()> {
        let (b, d) = (self.shape.batch, self.shape.dim);
        let per_anchor = NamedRows::new(self.loss_name(), &self.per_anchor, b, 1);
        let gradient = NamedRows::new("query gradient", grad_queries, b, d);
        check_outputs(backend, readout, &per_anchor, &gradient)
    }

    fn loss_name(&self) -> &'static str {
        match self.weighting {
            PositiveWeighting::SupCon => "supcon loss",
            PositiveWeighting::Decoupled { .. } => "dscl loss",
        }
    }
}
