//! Row-wise kernels: L2 normalisation (forward and backward), softmax, log-sum-exp, and the
//! fused loss-and-gradient rows of the contrastive, soft-target and hard-label losses.

use super::bounds::product;
use super::fault::FaultSlot;
use super::ReferenceBackend;
use crate::desc::{ContrastiveRowsDesc, PositiveWeighting, RowsDesc};
use crate::element::Element;
use crate::error::{check_len, Result};

/// Below this a norm has no usable direction in f32, the precision every device computes in.
const MIN_NORM: f64 = f32::MIN_POSITIVE as f64;

/// The largest of `values`, or NaN when one is NaN (as `torch.max` reports it).
fn nan_max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(
        f64::NEG_INFINITY,
        |m, v| {
            if v > m || v.is_nan() {
                v
            } else {
                m
            }
        },
    )
}

/// `log sum exp` of `values` as `torch.logsumexp` computes it: shifted by the maximum, except
/// that an infinite maximum shifts by 0, so an all `-inf` row gives `-inf` and a `+inf` entry
/// gives `+inf` rather than NaN.
fn logsumexp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = nan_max(values.clone());
    let shift = if max.is_infinite() { 0.0 } else { max };
    shift + libm::log(values.map(|v| libm::exp(v - shift)).sum::<f64>())
}

// ---- L2 normalisation ---------------------------------------------------------------------

/// `norms[r] = ||x_r||`, `y_r = x_r / norms[r]`; a row whose norm is below the smallest normal
/// f32 (recorded `ZeroNormRow`) or not finite (recorded `NonFinite`) outputs 0.
pub fn l2_normalize_forward<T: Element>(
    x: &[T],
    y: &mut [T],
    norms: &mut [T],
    rows: usize,
    cols: usize,
    faults: &FaultSlot,
) -> Result<()> {
    let len = product("l2_normalize", &[rows, cols])?;
    check_len("l2_normalize x", x.len(), len)?;
    check_len("l2_normalize y", y.len(), len)?;
    check_len("l2_normalize norms", norms.len(), rows)?;
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let out = &mut y[r * cols..(r + 1) * cols];
        let norm = libm::sqrt(row.iter().map(|&v| v.widen() * v.widen()).sum::<f64>());
        norms[r] = T::from_f64(norm);
        if !norm.is_finite() {
            faults.non_finite(r);
            out.fill(T::zero());
        } else if norm < MIN_NORM {
            faults.zero_norm_row(r);
            out.fill(T::zero());
        } else {
            for (o, &v) in out.iter_mut().zip(row) {
                *o = T::from_f64(v.widen() / norm);
            }
        }
    }
    Ok(())
}

/// `grad_x_r = (grad_y_r - y_r (y_r . grad_y_r)) / norms[r]`; 0 for a row the forward could not
/// normalise.
pub fn l2_normalize_backward<T: Element>(
    y: &[T],
    norms: &[T],
    grad_y: &[T],
    grad_x: &mut [T],
    rows: usize,
    cols: usize,
) -> Result<()> {
    let len = product("l2_normalize", &[rows, cols])?;
    check_len("l2_normalize y", y.len(), len)?;
    check_len("l2_normalize norms", norms.len(), rows)?;
    check_len("l2_normalize grad_y", grad_y.len(), len)?;
    check_len("l2_normalize grad_x", grad_x.len(), len)?;
    for r in 0..rows {
        let yr = &y[r * cols..(r + 1) * cols];
        let gr = &grad_y[r * cols..(r + 1) * cols];
        let out = &mut grad_x[r * cols..(r + 1) * cols];
        let norm = norms[r].widen();
        if !(norm.is_finite() && norm >= MIN_NORM) {
            out.fill(T::zero());
            continue;
        }
        let dot: f64 = yr
            .iter()
            .zip(gr)
            .map(|(&a, &b)| a.widen() * b.widen())
            .sum();
        for ((o, &yv), &gv) in out.iter_mut().zip(yr).zip(gr) {
            *o = T::from_f64((gv.widen() - yv.widen() * dot) / norm);
        }
    }
    Ok(())
}

// ---- softmax and log-sum-exp --------------------------------------------------------------

/// Softmax of each row over its valid columns, max-subtracted; masked columns get 0. Records
/// `NonFinite` (row) when the row's log-sum-exp is not finite.
pub fn row_softmax<T: Element>(
    desc: &RowsDesc,
    x: &[T],
    y: &mut [T],
    faults: &FaultSlot,
) -> Result<()> {
    desc.check("row_softmax x", x.len())?;
    desc.check("row_softmax y", y.len())?;
    let (cols, valid) = (desc.cols, desc.valid_cols);
    for r in 0..desc.rows {
        let row = &x[r * cols..r * cols + valid];
        let out = &mut y[r * cols..(r + 1) * cols];
        let values = row.iter().map(|&v| v.widen());
        // Plain max subtraction, as torch.softmax: a row with an infinity comes out NaN.
        let max = nan_max(values.clone());
        let sum: f64 = values.map(|v| libm::exp(v - max)).sum();
        if !(max + libm::log(sum)).is_finite() {
            faults.non_finite(r);
        }
        for (o, &v) in out.iter_mut().zip(row) {
            *o = T::from_f64(libm::exp(v.widen() - max) / sum);
        }
        out[valid..].fill(T::zero());
    }
    Ok(())
}

/// `out[r] = log sum_{c < valid_cols} exp(x[r][c])`. Records `NonFinite` (row).
pub fn row_logsumexp<T: Element>(
    desc: &RowsDesc,
    x: &[T],
    out: &mut [T],
    faults: &FaultSlot,
) -> Result<()> {
    desc.check("row_logsumexp x", x.len())?;
    check_len("row_logsumexp out", out.len(), desc.rows)?;
    for (r, o) in out[..desc.rows].iter_mut().enumerate() {
        let row = &x[r * desc.cols..r * desc.cols + desc.valid_cols];
        let lse = logsumexp(row.iter().map(|&v| v.widen()));
        if !lse.is_finite() {
            faults.non_finite(r);
        }
        *o = T::from_f64(lse);
    }
    Ok(())
}

// ---- the supervised contrastive loss -------------------------------------------------------

/// Per-column weights `w_ij` of anchor `i`'s positives (0 for non-positives), given its
/// positives `P(i)` and augmented-view column.
fn positive_weight(
    weighting: PositiveWeighting,
    is_positive: bool,
    is_view: bool,
    other_positives: usize,
) -> f64 {
    if !is_positive {
        return 0.0;
    }
    match weighting {
        PositiveWeighting::SupCon => 1.0,
        PositiveWeighting::Decoupled { .. } if is_view => 1.0,
        PositiveWeighting::Decoupled { beta } => beta / other_positives as f64,
    }
}

/// SupCon / DSCL loss of a block of anchors fused with its gradient, as the trait doc defines:
/// over `A(i)` (valid columns except the anchor's own), `log p_ij = s_ij - logsumexp_A(i)`,
/// `loss[i] = -sum_{j in P(i)} w_ij log p_ij / W_i`, and the logits row is overwritten with
/// `grad_scale * (p_ij - w_ij / W_i)` (0 on the self column and masked columns).
///
/// Under DSCL the "other positives" are `P(i)` minus the augmented view, so `beta` is shared
/// among exactly those. An anchor without any positive weight (`W_i = 0`: only possible when
/// the view's label differs from the anchor's) has nothing to attract: its loss and gradient
/// row are 0.
pub fn contrastive_rows<T: Element>(
    desc: &ContrastiveRowsDesc,
    logits: &mut [T],
    labels: &[u32],
    loss: &mut [T],
    faults: &FaultSlot,
) -> Result<()> {
    desc.check(logits.len(), labels.len(), loss.len())?;
    let (cols, valid) = (desc.cols, desc.valid_cols);
    for (j, &label) in labels[..valid].iter().enumerate() {
        if label >= desc.num_classes {
            faults.label_out_of_range(j, label);
        }
    }
    for r in 0..desc.rows {
        let anchor = desc.row_offset + r;
        let view = desc.batch + anchor;
        let anchor_label = labels[anchor];
        let row = &mut logits[r * cols..(r + 1) * cols];
        let contrast = || (0..valid).filter(move |&j| j != anchor);
        let is_positive = |j: usize| labels[j] == anchor_label;

        let lse = logsumexp(contrast().map(|j| row[j].widen()));
        if !lse.is_finite() {
            faults.non_finite(anchor);
        }
        let positives = contrast().filter(|&j| is_positive(j)).count();
        let other_positives = positives - usize::from(is_positive(view));
        let weight =
            |j: usize| positive_weight(desc.weighting, is_positive(j), j == view, other_positives);
        let total_weight: f64 = contrast().map(weight).sum();

        if total_weight == 0.0 {
            loss[anchor] = T::zero();
            row.fill(T::zero());
            continue;
        }
        let weighted_log_p: f64 = contrast().map(|j| weight(j) * (row[j].widen() - lse)).sum();
        loss[anchor] = T::from_f64(-weighted_log_p / total_weight);
        for j in contrast() {
            let p = libm::exp(row[j].widen() - lse);
            row[j] = T::from_f64(desc.grad_scale * (p - weight(j) / total_weight));
        }
        row[anchor] = T::zero();
        row[valid..].fill(T::zero());
    }
    Ok(())
}

// ---- cross-entropy -------------------------------------------------------------------------

/// Soft-target cross-entropy with its gradient: `loss[r] = -sum_c t_rc log q_rc` over valid
/// columns, and the logits row becomes `grad_scale * (q_rc * sum_c t_rc - t_rc)`, 0 on masked
/// columns. Records `NonFinite` (row).
pub fn soft_cross_entropy<T: Element>(
    desc: &RowsDesc,
    grad_scale: f64,
    logits: &mut [T],
    targets: &[T],
    loss: &mut [T],
    faults: &FaultSlot,
) -> Result<()> {
    desc.check("soft_cross_entropy logits", logits.len())?;
    desc.check("soft_cross_entropy targets", targets.len())?;
    check_len("soft_cross_entropy loss", loss.len(), desc.rows)?;
    let (cols, valid) = (desc.cols, desc.valid_cols);
    for r in 0..desc.rows {
        let row = &mut logits[r * cols..(r + 1) * cols];
        let target = &targets[r * cols..r * cols + valid];
        let lse = logsumexp(row[..valid].iter().map(|&v| v.widen()));
        if !lse.is_finite() {
            faults.non_finite(r);
        }
        let target_total: f64 = target.iter().map(|&t| t.widen()).sum();
        let cross: f64 = row[..valid]
            .iter()
            .zip(target)
            .map(|(&x, &t)| t.widen() * (x.widen() - lse))
            .sum();
        loss[r] = T::from_f64(-cross);
        for (x, &t) in row[..valid].iter_mut().zip(target) {
            let q = libm::exp(x.widen() - lse);
            *x = T::from_f64(grad_scale * (q * target_total - t.widen()));
        }
        row[valid..].fill(T::zero());
    }
    Ok(())
}

/// Hard-label softmax cross-entropy with its gradient: `loss[r] = logsumexp(x_r) -
/// x_r[label]`, and the logits row becomes `grad_scale * (softmax(x_r) - onehot(label))`, 0 on
/// masked columns. A label `>= valid_cols` is recorded as `LabelOutOfRange` (row) and zeroes
/// that row's loss and gradient; a non-finite log-sum-exp records `NonFinite` (row).
pub fn softmax_cross_entropy<T: Element>(
    desc: &RowsDesc,
    grad_scale: f64,
    logits: &mut [T],
    labels: &[u32],
    loss: &mut [T],
    faults: &FaultSlot,
) -> Result<()> {
    desc.check("softmax_cross_entropy logits", logits.len())?;
    check_len("softmax_cross_entropy labels", labels.len(), desc.rows)?;
    check_len("softmax_cross_entropy loss", loss.len(), desc.rows)?;
    let (cols, valid) = (desc.cols, desc.valid_cols);
    for r in 0..desc.rows {
        let row = &mut logits[r * cols..(r + 1) * cols];
        let label = labels[r];
        let Some(target) = usize::try_from(label).ok().filter(|&c| c < valid) else {
            faults.label_out_of_range(r, label);
            loss[r] = T::zero();
            row.fill(T::zero());
            continue;
        };
        let lse = logsumexp(row[..valid].iter().map(|&v| v.widen()));
        if !lse.is_finite() {
            faults.non_finite(r);
        }
        loss[r] = T::from_f64(lse - row[target].widen());
        for (c, x) in row[..valid].iter_mut().enumerate() {
            let q = libm::exp(x.widen() - lse);
            let onehot = if c == target { 1.0 } else { 0.0 };
            *x = T::from_f64(grad_scale * (q - onehot));
        }
        row[valid..].fill(T::zero());
    }
    Ok(())
}

impl<T: Element> crate::backend::RowOps for ReferenceBackend<T> {
    fn l2_normalize_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        norms: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        l2_normalize_forward(x, y, norms, rows, cols, &self.faults)
    }

    fn l2_normalize_backward(
        &self,
        y: &Self::Buffer,
        norms: &Self::Buffer,
        grad_y: &Self::Buffer,
        grad_x: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        l2_normalize_backward(y, norms, grad_y, grad_x, rows, cols)
    }

    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()> {
        row_softmax(desc, x, y, &self.faults)
    }

    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        row_logsumexp(desc, x, out, &self.faults)
    }

    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        contrastive_rows(desc, logits, labels, loss, &self.faults)
    }

    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        soft_cross_entropy(desc, grad_scale, logits, targets, loss, &self.faults)
    }

    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        softmax_cross_entropy(desc, grad_scale, logits, labels, loss, &self.faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FaultKind;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-14 * (1.0 + b.abs())
    }

    #[test]
    fn logsumexp_follows_torch_on_infinities() {
        assert!(close(
            logsumexp([0.0, 0.0].into_iter()),
            core::f64::consts::LN_2
        ));
        assert!(close(
            logsumexp([1000.0, 1000.0].into_iter()),
            1000.0 + core::f64::consts::LN_2
        ));
        assert_eq!(
            logsumexp([f64::NEG_INFINITY; 2].into_iter()),
            f64::NEG_INFINITY
        );
        assert_eq!(logsumexp([f64::INFINITY, 1.0].into_iter()), f64::INFINITY);
        assert!(logsumexp([1.0, f64::NAN].into_iter()).is_nan());
    }

    #[test]
    fn normalize_and_its_gradient() {
        let faults = FaultSlot::new();
        let x = [3.0f64, 4.0, 0.0, 0.0];
        let (mut y, mut norms) = ([9.0; 4], [0.0; 2]);
        l2_normalize_forward(&x, &mut y, &mut norms, 2, 2, &faults).unwrap();
        assert_eq!(y, [0.6, 0.8, 0.0, 0.0]);
        assert_eq!(norms, [5.0, 0.0]);
        let fault = faults.take().unwrap();
        assert_eq!((fault.kind, fault.index), (FaultKind::ZeroNormRow, 1));
        // Along y the gradient vanishes; across it, it is divided by the norm.
        let mut gx = [9.0; 4];
        l2_normalize_backward(&y, &norms, &[0.6, 0.8, 1.0, 1.0], &mut gx, 2, 2).unwrap();
        assert!(gx.iter().all(|g| g.abs() < 1e-16));
        l2_normalize_backward(&y, &norms, &[-0.8, 0.6, 1.0, 1.0], &mut gx, 2, 2).unwrap();
        assert!(close(gx[0], -0.16) && close(gx[1], 0.12));
    }

    #[test]
    fn softmax_masks_columns() {
        let faults = FaultSlot::new();
        let desc = RowsDesc {
            rows: 1,
            cols: 3,
            valid_cols: 2,
        };
        let mut y = [9.0f64; 3];
        row_softmax(&desc, &[0.0, 0.0, 100.0], &mut y, &faults).unwrap();
        assert_eq!(y, [0.5, 0.5, 0.0]);
        let mut out = [0.0f64];
        row_logsumexp(&desc, &[0.0, 0.0, 100.0], &mut out, &faults).unwrap();
        assert!(close(out[0], core::f64::consts::LN_2));
        row_logsumexp(&desc, &[f64::NAN, 0.0, 0.0], &mut out, &faults).unwrap();
        assert_eq!(faults.take().map(|f| f.kind), Some(FaultKind::NonFinite));
        // As torch.softmax: an infinity in the row, or a row of -inf, gives NaN.
        for row in [[f64::INFINITY, 1.0, 0.0], [f64::NEG_INFINITY; 3]] {
            row_softmax(&desc, &row, &mut y, &faults).unwrap();
            assert!(y[..2].iter().all(|v| v.is_nan()) && y[2] == 0.0);
            assert_eq!(faults.take().map(|f| f.kind), Some(FaultKind::NonFinite));
        }
    }

    #[test]
    fn contrastive_rows_on_equal_logits() {
        // B = 2 anchors with labels [0, 1], keys [0, 1], one queue entry of class 0 and one
        // masked column. All logits equal, so p = 1/4 over A(0) = {1, 2, 3, 4}.
        let labels = [0u32, 1, 0, 1, 0, 7];
        let mut desc = ContrastiveRowsDesc {
            rows: 1,
            row_offset: 0,
            batch: 2,
            cols: 6,
            valid_cols: 5,
            num_classes: 2,
            weighting: PositiveWeighting::SupCon,
            grad_scale: 0.5,
        };
        let faults = FaultSlot::new();
        let mut logits = [1.0f64; 6];
        let mut loss = [0.0f64; 1];
        contrastive_rows(&desc, &mut logits, &labels, &mut loss, &faults).unwrap();
        // SupCon: positives {2, 4}, each log p = -ln 4.
        assert!(close(loss[0], 4f64.ln()));
        let expected = [0.0, 0.125, 0.125 - 0.25, 0.125, 0.125 - 0.25, 0.0];
        assert!(logits.iter().zip(expected).all(|(g, e)| close(*g, e)));
        assert_eq!(faults.take(), None, "label 7 sits in a masked column");

        // DSCL with beta = 8: the view (column 2) gets 1, the queue positive 8: W = 9.
        desc.weighting = PositiveWeighting::Decoupled { beta: 8.0 };
        let mut logits = [1.0f64; 6];
        contrastive_rows(&desc, &mut logits, &labels, &mut loss, &faults).unwrap();
        assert!(close(loss[0], 4f64.ln()));
        assert!(close(logits[2], 0.5 * (0.25 - 1.0 / 9.0)));
        assert!(close(logits[4], 0.5 * (0.25 - 8.0 / 9.0)));
    }

    #[test]
    fn cross_entropies() {
        let faults = FaultSlot::new();
        let desc = RowsDesc {
            rows: 2,
            cols: 3,
            valid_cols: 2,
        };
        let mut logits = [0.0f64, 0.0, 5.0, 0.0, 0.0, 5.0];
        let mut loss = [0.0f64; 2];
        softmax_cross_entropy(&desc, 1.0, &mut logits, &[1, 2], &mut loss, &faults).unwrap();
        assert!(close(loss[0], core::f64::consts::LN_2));
        assert_eq!(logits, [0.5, -0.5, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(loss[1], 0.0);
        let fault = faults.take().unwrap();
        assert_eq!(
            (fault.kind, fault.index, fault.value),
            (FaultKind::LabelOutOfRange, 1, 2)
        );

        let mut logits = [0.0f64, 0.0, 5.0, 0.0, 0.0, 5.0];
        let targets = [0.25, 0.75, 9.0, 1.0, 0.0, 9.0];
        soft_cross_entropy(&desc, 2.0, &mut logits, &targets, &mut loss, &faults).unwrap();
        assert!(close(loss[0], core::f64::consts::LN_2));
        assert!(close(logits[0], 2.0 * (0.5 - 0.25)) && close(logits[1], 2.0 * (0.5 - 0.75)));
        assert_eq!(logits[2], 0.0);
        assert_eq!(faults.take(), None);
    }
}
