//! Row reductions: L2 normalisation, softmax and log-sum-exp over rows, and the three fused
//! loss-and-gradient kernels (supervised contrastive, soft-target and hard-label cross-entropy).

use super::MemoryOps;
use crate::desc::{ContrastiveRowsDesc, RowsDesc};
use crate::error::Result;

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
