//! Row-wise kernels: L2 normalisation (forward and backward), softmax, log-sum-exp, and the
//! fused loss-plus-gradient reductions (supervised contrastive rows, soft-target and hard-label
//! cross-entropy).
//!
//! The loss rows are the hot path of a DSCL step (256 anchors x 66k contrast columns). Each row
//! is handled by one task in three sweeps that stay in the core's L2 cache: the maximum; then
//! `e = exp(s - max)` written in place while summing `e` and the positives (or targets); then
//! the gradient, written over `e`. Sums run in f32 lanes for blocks of `simd::BLOCK` elements
//! and in f64 across blocks, so a 66k-wide row matches an f64 oracle to about 1e-7 relative.
//! Rows are split across threads. The supervised contrastive rows, the largest of the three,
//! are in the child module `contrastive`.

use dscl_core::backend::RowOps;
use dscl_core::desc::{ContrastiveRowsDesc, RowsDesc};
use dscl_core::error::check_len;
use dscl_core::{Fault, FaultKind, Result};

use crate::parallel::{first_fault, unit, Par, Rows, ELEMENT_GRAIN};
use crate::simd::{self, BLOCK, LANES};
use crate::CpuBackend;

mod contrastive;
use contrastive::contrastive;

/// Rows per task so that a task covers at least `ELEMENT_GRAIN` elements.
fn row_grain(cols: usize) -> usize {
    (ELEMENT_GRAIN / cols.max(1)).max(1)
}

fn fault(kind: FaultKind, index: usize) -> Option<Fault> {
    Some(Fault {
        kind,
        index,
        value: 0,
    })
}

/// The shift of a log-sum-exp, as `torch.logsumexp` picks it: the maximum, or 0 when the maximum
/// is infinite (so a row of -inf gives -inf and a +inf entry gives +inf, rather than NaN).
#[inline(always)]
fn torch_shift(max: f32) -> f32 {
    if max.is_infinite() {
        0.0
    } else {
        max
    }
}

fn checked_len(rows: usize, cols: usize) -> usize {
    rows.saturating_mul(cols)
}

// ---- L2 normalisation ----------------------------------------------------------------------

/// Sum of squares with exact f64 products.
#[inline(always)]
fn sum_squares(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for ch in &mut chunks {
        for l in 0..8 {
            let v = ch[l] as f64;
            acc[l] += v * v;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &v in chunks.remainder() {
        s += v as f64 * v as f64;
    }
    s
}

/// `norms[r] = ||x_r||`, `y_r = x_r / norms[r]`; a zero-norm or non-finite row gives 0.
pub(crate) fn l2_normalize_forward(
    par: &Par,
    x: &[f32],
    y: &mut [f32],
    norms: &mut [f32],
    rows: usize,
    cols: usize,
) -> Result<Option<Fault>> {
    let len = checked_len(rows, cols);
    check_len("l2_normalize x", x.len(), len)?;
    check_len("l2_normalize y", y.len(), len)?;
    check_len("l2_normalize norms", norms.len(), rows)?;
    Ok(par.run(
        rows,
        row_grain(cols),
        (Rows(&mut y[..len], cols), Rows(&mut norms[..rows], 1)),
        |range, (Rows(y, _), Rows(nrm, _))| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let mut f = None;
                    for (k, i) in range.enumerate() {
                        let xr = &x[i * cols..(i + 1) * cols];
                        let yr = &mut y[k * cols..(k + 1) * cols];
                        let norm = libm::sqrt(sum_squares(xr));
                        let nf = norm as f32;
                        nrm[k] = nf;
                        if !nf.is_finite() {
                            f = f.or(fault(FaultKind::NonFinite, i));
                            yr.fill(0.0);
                        } else if nf < f32::MIN_POSITIVE {
                            f = f.or(fault(FaultKind::ZeroNormRow, i));
                            yr.fill(0.0);
                        } else {
                            let inv = (1.0 / norm) as f32;
                            for (yv, &xv) in yr.iter_mut().zip(xr) {
                                *yv = xv * inv;
                            }
                        }
                    }
                    f
                },
            )
        },
        first_fault,
    ))
}

/// `grad_x_r = (grad_y_r - y_r (y_r . grad_y_r)) / norms[r]`; 0 for a zero-norm row.
pub(crate) fn l2_normalize_backward(
    par: &Par,
    y: &[f32],
    norms: &[f32],
    grad_y: &[f32],
    grad_x: &mut [f32],
    rows: usize,
    cols: usize,
) -> Result<()> {
    let len = checked_len(rows, cols);
    check_len("l2_normalize_backward y", y.len(), len)?;
    check_len("l2_normalize_backward norms", norms.len(), rows)?;
    check_len("l2_normalize_backward grad_y", grad_y.len(), len)?;
    check_len("l2_normalize_backward grad_x", grad_x.len(), len)?;
    par.run(
        rows,
        row_grain(cols),
        Rows(&mut grad_x[..len], cols),
        |range, Rows(gx, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (k, i) in range.enumerate() {
                        let yr = &y[i * cols..(i + 1) * cols];
                        let gr = &grad_y[i * cols..(i + 1) * cols];
                        let out = &mut gx[k * cols..(k + 1) * cols];
                        let norm = norms[i];
                        if !(norm.is_finite() && norm >= f32::MIN_POSITIVE) {
                            out.fill(0.0);
                            continue;
                        }
                        let d = simd::dot(yr, gr) as f32;
                        let inv = (1.0 / norm as f64) as f32;
                        for ((o, &yv), &gv) in out.iter_mut().zip(yr).zip(gr) {
                            *o = (gv - yv * d) * inv;
                        }
                    }
                },
            )
        },
        unit,
    );
    Ok(())
}

// ---- softmax and log-sum-exp ---------------------------------------------------------------

pub(crate) fn softmax(
    par: &Par,
    desc: &RowsDesc,
    x: &[f32],
    y: &mut [f32],
) -> Result<Option<Fault>> {
    desc.check("row_softmax x", x.len())?;
    check_len("row_softmax y", y.len(), desc.len())?;
    let RowsDesc {
        rows,
        cols,
        valid_cols: valid,
    } = *desc;
    Ok(par.run(
        rows,
        row_grain(valid),
        Rows(&mut y[..rows * cols], cols),
        |range, Rows(y, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let mut f = None;
                    for (k, i) in range.enumerate() {
                        let xr = &x[i * cols..i * cols + valid];
                        let (yv, ym) = y[k * cols..(k + 1) * cols].split_at_mut(valid);
                        ym.fill(0.0);
                        let m = simd::max(xr);
                        let s = simd::exp_to(xr, yv, m);
                        if !(m as f64 + libm::log(s)).is_finite() {
                            f = f.or(fault(FaultKind::NonFinite, i));
                        }
                        simd::scale(yv, (1.0 / s) as f32);
                    }
                    f
                },
            )
        },
        first_fault,
    ))
}

pub(crate) fn logsumexp(
    par: &Par,
    desc: &RowsDesc,
    x: &[f32],
    out: &mut [f32],
) -> Result<Option<Fault>> {
    desc.check("row_logsumexp x", x.len())?;
    check_len("row_logsumexp out", out.len(), desc.rows)?;
    let RowsDesc {
        rows,
        cols,
        valid_cols: valid,
    } = *desc;
    Ok(par.run(
        rows,
        row_grain(valid),
        Rows(&mut out[..rows], 1),
        |range, Rows(out, _)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let mut f = None;
                    for (k, i) in range.enumerate() {
                        let xr = &x[i * cols..i * cols + valid];
                        let m = torch_shift(simd::max(xr));
                        let lse = m as f64 + libm::log(simd::sum_exp(xr, m));
                        if !lse.is_finite() {
                            f = f.or(fault(FaultKind::NonFinite, i));
                        }
                        out[k] = lse as f32;
                    }
                    f
                },
            )
        },
        first_fault,
    ))
}

// ---- cross-entropy -------------------------------------------------------------------------

/// Sums of the soft-target sweep.
#[derive(Clone, Copy, Default)]
struct TargetSweep {
    exp: f64,
    /// `sum t`.
    t: f64,
    /// `sum t * (x - max)`.
    td: f64,
}

/// `x[j] = exp(x[j] - m)` in place, summing it, the targets and `t * (x - m)`.
#[inline(always)]
fn exp_targets(x: &mut [f32], t: &[f32], m: f32) -> TargetSweep {
    let mut out = TargetSweep::default();
    for (xb, tb) in x.chunks_mut(BLOCK).zip(t.chunks(BLOCK)) {
        let mut acc_e = [0.0f32; LANES];
        let mut acc_t = [0.0f32; LANES];
        let mut acc_td = [0.0f32; LANES];
        let mut xc = xb.chunks_exact_mut(LANES);
        let mut tc = tb.chunks_exact(LANES);
        for (xs, ts) in (&mut xc).zip(&mut tc) {
            for l in 0..LANES {
                let d = xs[l] - m;
                let e = simd::exp(d);
                xs[l] = e;
                acc_e[l] += e;
                acc_t[l] += ts[l];
                acc_td[l] += ts[l] * d;
            }
        }
        for (l, (xv, &tv)) in xc
            .into_remainder()
            .iter_mut()
            .zip(tc.remainder())
            .enumerate()
        {
            let d = *xv - m;
            let e = simd::exp(d);
            *xv = e;
            acc_e[l] += e;
            acc_t[l] += tv;
            acc_td[l] += tv * d;
        }
        out.exp += simd::reduce(&acc_e);
        out.t += simd::reduce(&acc_t);
        out.td += simd::reduce(&acc_td);
    }
    out
}

/// `loss[r] = -sum_c t_rc log_softmax(x_r)_c`; gradient `scale * (q * sum t - t)` in place.
pub(crate) fn soft_cross_entropy(
    par: &Par,
    desc: &RowsDesc,
    grad_scale: f64,
    logits: &mut [f32],
    targets: &[f32],
    loss: &mut [f32],
) -> Result<Option<Fault>> {
    desc.check("soft_cross_entropy logits", logits.len())?;
    check_len("soft_cross_entropy targets", targets.len(), desc.len())?;
    check_len("soft_cross_entropy loss", loss.len(), desc.rows)?;
    let RowsDesc {
        rows,
        cols,
        valid_cols: valid,
    } = *desc;
    Ok(par.run(
        rows,
        row_grain(valid),
        (
            Rows(&mut logits[..rows * cols], cols),
            Rows(&mut loss[..rows], 1),
        ),
        |range, (Rows(lg, _), Rows(ls, _))| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let mut f = None;
                    for (k, i) in range.enumerate() {
                        let (x, masked) = lg[k * cols..(k + 1) * cols].split_at_mut(valid);
                        masked.fill(0.0);
                        let t = &targets[i * cols..i * cols + valid];
                        let m = torch_shift(simd::max(x));
                        let s = exp_targets(x, t, m);
                        let log_sum = libm::log(s.exp);
                        if !(m as f64 + log_sum).is_finite() {
                            f = f.or(fault(FaultKind::NonFinite, i));
                        }
                        ls[k] = (s.t * log_sum - s.td) as f32;
                        let a = (grad_scale * s.t / s.exp) as f32;
                        let b = grad_scale as f32;
                        for (xv, &tv) in x.iter_mut().zip(t) {
                            *xv = *xv * a - b * tv;
                        }
                    }
                    f
                },
            )
        },
        first_fault,
    ))
}

/// `loss[r] = logsumexp(x_r) - x_r[label_r]`; gradient `scale * (softmax - onehot)` in place.
pub(crate) fn softmax_cross_entropy(
    par: &Par,
    desc: &RowsDesc,
    grad_scale: f64,
    logits: &mut [f32],
    labels: &[u32],
    loss: &mut [f32],
) -> Result<Option<Fault>> {
    desc.check("softmax_cross_entropy logits", logits.len())?;
    check_len("softmax_cross_entropy labels", labels.len(), desc.rows)?;
    check_len("softmax_cross_entropy loss", loss.len(), desc.rows)?;
    let RowsDesc {
        rows,
        cols,
        valid_cols: valid,
    } = *desc;
    let scale = grad_scale as f32;
    Ok(par.run(
        rows,
        row_grain(valid),
        (
            Rows(&mut logits[..rows * cols], cols),
            Rows(&mut loss[..rows], 1),
        ),
        |range, (Rows(lg, _), Rows(ls, _))| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let mut f = None;
                    for (k, i) in range.enumerate() {
                        let row = &mut lg[k * cols..(k + 1) * cols];
                        let label = labels[i];
                        if label as usize >= valid {
                            f = f.or(Some(Fault {
                                kind: FaultKind::LabelOutOfRange,
                                index: i,
                                value: label,
                            }));
                            row.fill(0.0);
                            ls[k] = 0.0;
                            continue;
                        }
                        let label = label as usize;
                        let (x, masked) = row.split_at_mut(valid);
                        masked.fill(0.0);
                        let m = torch_shift(simd::max(x));
                        let d_label = (x[label] - m) as f64;
                        let sum = simd::exp_in_place(x, m);
                        let log_sum = libm::log(sum);
                        if !(m as f64 + log_sum).is_finite() {
                            f = f.or(fault(FaultKind::NonFinite, i));
                        }
                        ls[k] = (log_sum - d_label) as f32;
                        simd::scale(x, (grad_scale / sum) as f32);
                        x[label] -= scale;
                    }
                    f
                },
            )
        },
        first_fault,
    ))
}

impl<'a> RowOps for CpuBackend<'a> {
    fn l2_normalize_forward(
        &self,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        norms: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let fault = l2_normalize_forward(&self.par(), x, y, norms, rows, cols)?;
        self.record(fault);
        Ok(())
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
        l2_normalize_backward(&self.par(), y, norms, grad_y, grad_x, rows, cols)
    }

    fn row_softmax(&self, desc: &RowsDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()> {
        let fault = softmax(&self.par(), desc, x, y)?;
        self.record(fault);
        Ok(())
    }

    fn row_logsumexp(
        &self,
        desc: &RowsDesc,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = logsumexp(&self.par(), desc, x, out)?;
        self.record(fault);
        Ok(())
    }

    fn contrastive_rows(
        &self,
        desc: &ContrastiveRowsDesc,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = contrastive(&self.par(), desc, logits, labels, loss)?;
        self.record(fault);
        Ok(())
    }

    fn soft_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        targets: &Self::Buffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = soft_cross_entropy(&self.par(), desc, grad_scale, logits, targets, loss)?;
        self.record(fault);
        Ok(())
    }

    fn softmax_cross_entropy(
        &self,
        desc: &RowsDesc,
        grad_scale: f64,
        logits: &mut Self::Buffer,
        labels: &Self::IndexBuffer,
        loss: &mut Self::Buffer,
    ) -> Result<()> {
        let fault = softmax_cross_entropy(&self.par(), desc, grad_scale, logits, labels, loss)?;
        self.record(fault);
        Ok(())
    }
}
