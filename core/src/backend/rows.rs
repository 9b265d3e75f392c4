//! Row reductions: L2 normalisation, softmax and log-sum-exp over rows, and the three fused
//! loss-and-gradient kernels (supervised contrastive, soft-target and hard-label cross-entropy).

use super::MemoryOps;
use crate::error::{check_len, ensure, Result};

/// Row-wise operation over a `rows x cols` row-major matrix of which only the first
/// `valid_cols` columns take part (the rest are masked: unfilled queue slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowsDesc {
    pub rows: usize,
    /// Row stride (elements per stored row).
    pub cols: usize,
    /// Columns `valid_cols..cols` are ignored and, where the kernel writes a full row, set to 0.
    pub valid_cols: usize,
}

impl RowsDesc {
    pub fn new(rows: usize, cols: usize) -> Self {
        RowsDesc {
            rows,
            cols,
            valid_cols: cols,
        }
    }
    pub fn len(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn check(&self, what: &'static str, matrix_len: usize) -> Result<()> {
        ensure(
            self.valid_cols <= self.cols,
            what,
            "valid_cols exceeds cols",
        )?;
        ensure(
            self.valid_cols >= 1 || self.rows == 0,
            what,
            "a row needs at least one valid column",
        )?;
        check_len(what, matrix_len, self.len())
    }
}

/// How the positives of an anchor are weighted in the supervised contrastive loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PositiveWeighting {
    /// SupCon: weight 1 on every positive.
    SupCon,
    /// DSCL: weight 1 on the augmented view (column `batch + i`) and `beta / (|P(i)| - 1)` on
    /// each other positive.
    Decoupled { beta: f64 },
}

/// One block of anchors of the supervised contrastive loss (SupCon or DSCL), on logits
/// already computed as `s_ij = q_i . z_j / tau`, where `z` is the contrast set `[Q; K; U]`.
/// Anchor `i = row_offset + r` (for block row r) is also column `i` of the contrast set (its
/// self column, excluded everywhere), and its augmented view is column `batch + i`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContrastiveRowsDesc {
    /// Anchors in this block, and the rows of the logits block.
    pub rows: usize,
    /// Global index of the block's first anchor.
    pub row_offset: usize,
    /// B: the number of anchors in the whole batch.
    pub batch: usize,
    /// Row stride of the logits block and length of the contrast labels (N = 2B + K).
    pub cols: usize,
    /// Columns `valid_cols..cols` are masked (unfilled queue entries): excluded from numerator
    /// and denominator, and their gradient is 0.
    pub valid_cols: usize,
    /// Labels must lie in `0..num_classes`; others are a fault.
    pub num_classes: u32,
    pub weighting: PositiveWeighting,
    /// The gradient written is `grad_scale * dL_i/ds_ij` (1/B for a mean over anchors).
    pub grad_scale: f64,
}

impl ContrastiveRowsDesc {
    pub fn check(&self, logits_len: usize, labels_len: usize, loss_len: usize) -> Result<()> {
        ensure(
            self.valid_cols <= self.cols,
            "contrastive_rows",
            "valid_cols exceeds cols",
        )?;
        ensure(
            self.row_offset.saturating_add(self.rows) <= self.batch,
            "contrastive_rows",
            "anchor block extends past the batch",
        )?;
        ensure(
            self.batch.saturating_mul(2) <= self.valid_cols,
            "contrastive_rows",
            "the contrast set must start with the B queries and B keys",
        )?;
        if let PositiveWeighting::Decoupled { beta } = self.weighting {
            ensure(
                beta >= 0.0 && beta.is_finite(),
                "contrastive_rows",
                "beta must be finite and non-negative",
            )?;
        }
        check_len(
            "contrastive_rows logits",
            logits_len,
            self.rows.saturating_mul(self.cols),
        )?;
        check_len("contrastive_rows labels", labels_len, self.cols)?;
        check_len(
            "contrastive_rows loss",
            loss_len,
            self.row_offset.saturating_add(self.rows),
        )
    }
}

pub trait RowOps: MemoryOps {
    /// `norms[r] = ||x_r||`, `y_r = x_r / norms[r]` for a `rows x cols` matrix. Records
    /// `ZeroNormRow` (row index) when a norm is below `f32::MIN_POSITIVE` and `NonFinite` when
    /// it is not finite; such a row's output is 0.
    fn l2_normalize_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        norms: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()>;

    /// `grad_x_r = (grad_y_r - y_r (y_r . grad_y_r)) / norms[r]`, written (0 for a zero-norm row).
    fn l2_normalize_backward(
        &self,
        y: &Self::Buffer,
        norms: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()>;

    /// Numerically stable (max-subtracted) softmax of each row over its valid columns;
    /// masked columns of `y` are set to 0. Records `NonFinite` (row) when a row's
    /// log-sum-exp is not finite.
    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()>;

    /// `out[r] = log sum_{c < valid_cols} exp(x[r][c])`, max-subtracted. Records `NonFinite`.
    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// The supervised contrastive loss (SupCon or DSCL) of a block of anchors, fused with its
    /// gradient. On entry `logits` holds `s_ij` (block row r = anchor `i = row_offset + r`); on
    /// exit it holds `grad_scale * dL_i/ds_ij`.
    ///
    /// With `A(i) = { j < valid_cols : j != i }`, `log p_ij = s_ij - log sum_{a in A(i)}
    /// exp(s_ia)` (max-subtracted), positives `P(i) = { j in A(i) : label_j == label_i }` where
    /// `label_j = labels[j]` (so the anchor's own label is `labels[i]`), weights
    /// `w_ij` per [`crate::desc::PositiveWeighting`] (for DSCL, the augmented view `batch + i`
    /// gets 1 and others `beta / (|P(i)| - 1)`; no others: only the view), `W_i = sum w_ij`:
    /// `loss[i] = -sum_{j in P(i)} w_ij log p_ij / W_i` (written at `row_offset + r`) and
    /// `dL_i/ds_ij = p_ij - w_ij / W_i` for `j in A(i)`, 0 for `j = i` and masked columns.
    /// Records `LabelOutOfRange` (column index) for a label `>= num_classes` among the first
    /// `valid_cols` labels and `NonFinite` (anchor index) for a non-finite log-sum-exp.
    /// An anchor whose positives carry no weight (possible only when `labels[batch + i] !=
    /// labels[i]`, which the losses never build) gets loss 0 and a zero gradient row.
    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()>;

    /// Soft-target cross-entropy fused with its gradient (PBSD's distillation term): with
    /// `log q_rc = log_softmax(logits_r)_c` over valid columns,
    /// `loss[r] = -sum_c targets[r][c] log q_rc`; on exit `logits` holds
    /// `grad_scale * (q_rc * sum_c' targets[r][c'] - targets[r][c])`, 0 on masked columns.
    /// Records `NonFinite` (row).
    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()>;

    /// Hard-label softmax cross-entropy fused with its gradient (the classifier's loss):
    /// `loss[r] = logsumexp(logits_r) - logits[r][labels[r]]`; on exit `logits` holds
    /// `grad_scale * (softmax(logits_r) - onehot(labels[r]))`. Records `LabelOutOfRange` (row)
    /// for a label `>= valid_cols` (that row's loss and gradient are 0) and `NonFinite` (row).
    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()>;
}
